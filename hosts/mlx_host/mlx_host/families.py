"""What each mlx-audio speech-to-text model type takes and what it gives back.

mlx-audio 0.3.1 gives every model a ``generate(audio, ...)`` method, but their keywords and results
differ (read ``mlx_audio/stt/models/*/``): Qwen3-ASR forces a language and takes no context,
Whisper calls the context ``initial_prompt`` and the token cap ``sample_len`` (it silently drops
``max_tokens``), Parakeet takes no options and wants an ``mx.array``, VibeVoice wants 24 kHz audio,
the forced aligner aligns a given text instead of transcribing. This module turns the
orchestrator's request options into each type's keywords — refusing an option a type would ignore —
and turns each type's result into an :class:`~orchestrator.host.engine.EngineResult`.

Used by :mod:`mlx_host.engine`, on its MLX thread (this module itself imports no MLX at import time).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from orchestrator.errors import BadRequestError
from orchestrator.host.engine import (
    ENGINE_SAMPLE_RATE,
    KNOWN_OPTIONS,
    EngineResult,
    Segment,
    timed_words,
)
from orchestrator.wire.messages import check_bool_options

#: mlx-audio's Qwen3-ASR always forces a language into its prompt (``language=None`` crashes);
#: this is its own default, used when neither the request nor the model's options name one.
QWEN3_DEFAULT_LANGUAGE = "English"
FORCED_ALIGNER_TYPE = "qwen3_forced_aligner"


@dataclasses.dataclass(frozen=True)
class Family:
    """One mlx-audio model type: which request options it honours and how it is called."""

    name: str
    #: Request option -> ``generate()`` keyword. Options absent here are refused for this type.
    keywords: Mapping[str, str]
    #: Sample rate ``generate()`` expects for an in-memory waveform.
    sample_rate: int = ENGINE_SAMPLE_RATE
    #: Parakeet calls ``audio.astype`` and so needs an ``mx.array``, not numpy.
    wants_mx_array: bool = False
    #: Options the type cannot run without (the aligner needs the text to align).
    required: frozenset[str] = frozenset()
    #: Keywords always passed (fills a default the library lacks or crashes without).
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def options(self) -> frozenset[str]:
        return frozenset(self.keywords)


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            "qwen3_asr",
            {"language": "language", "max_tokens": "max_tokens", "temperature": "temperature"},
            fixed={"language": QWEN3_DEFAULT_LANGUAGE},
        ),
        Family(
            FORCED_ALIGNER_TYPE,
            {"context": "text", "language": "language"},
            required=frozenset({"context"}),
            fixed={"language": QWEN3_DEFAULT_LANGUAGE},
        ),
        Family(
            "whisper",
            {
                "language": "language",
                "context": "initial_prompt",
                "max_tokens": "sample_len",  # per 30 s window; generate() drops max_tokens
                "temperature": "temperature",  # one value: no temperature fallback ladder
                # Cross-attention DTW over the model's alignment heads (mlx-audio's default: the
                # last half of the decoder layers); each segment then carries its "words".
                "word_timestamps": "word_timestamps",
            },
        ),
        Family("parakeet", {}, wants_mx_array=True),
        Family(
            "voxtral",
            {"language": "language", "max_tokens": "max_tokens", "temperature": "temperature"},
        ),
        Family("glmasr", {"max_tokens": "max_tokens", "temperature": "temperature"}),
        Family(
            "vibevoice_asr",
            {"context": "context", "max_tokens": "max_tokens", "temperature": "temperature"},
            sample_rate=24_000,
        ),
    )
}


def family_of(model: Any) -> Family:
    """The family of a model returned by ``mlx_audio.stt.utils.load_model``.

    A type this module does not know (a newer mlx-audio) gets the options its ``generate()``
    names explicitly, so nothing is passed that it would swallow through ``**kwargs``.
    """
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) == FORCED_ALIGNER_TYPE:
        return FAMILIES[FORCED_ALIGNER_TYPE]
    # Classes live in mlx_audio.stt.models.<type>.<file>.
    parts = type(model).__module__.split(".")
    name = (
        parts[3]
        if len(parts) > 3 and parts[:3] == ["mlx_audio", "stt", "models"]
        else type(model).__name__
    )
    if name in FAMILIES:
        return FAMILIES[name]
    params = inspect.signature(model.generate).parameters
    return Family(name, {opt: opt for opt in sorted(KNOWN_OPTIONS) if opt in params})


def _positive_int(option: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequestError(
            f"option {option!r} must be a positive integer, got {value!r}", option=option
        )
    return value


def _non_negative_float(option: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0.0 <= value < float("inf")
    ):
        raise BadRequestError(
            f"option {option!r} must be a number >= 0, got {value!r}", option=option
        )
    return float(value)


def _text(option: str, value: Any) -> str:
    blank_allowed = option != "language"  # an empty context is no context; a language is a name
    if not isinstance(value, str) or not (blank_allowed or value.strip()):
        kind = "a string" if blank_allowed else "a non-empty string"
        raise BadRequestError(f"option {option!r} must be {kind}, got {value!r}", option=option)
    return value


_VALUE_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "language": _text,
    "context": _text,
    "max_tokens": _positive_int,
    "temperature": _non_negative_float,
}


def _qwen_language(model: Any, language: str) -> str:
    supported = list(getattr(model.config, "support_languages", None) or [])
    by_lower = {name.lower(): name for name in supported}
    if supported and language.strip().lower() not in by_lower:
        raise BadRequestError(
            f"language {language!r} is not supported by this model; supported: {supported}",
            option="language",
        )
    return by_lower.get(language.strip().lower(), language.strip())


def _whisper_language(model: Any, language: str) -> str:
    from mlx_audio.stt.models.whisper.tokenizer import LANGUAGES, TO_LANGUAGE_CODE

    key = language.strip().lower()
    code = key if key in LANGUAGES else TO_LANGUAGE_CODE.get(key)
    if code is None:
        raise BadRequestError(
            f"language {language!r} is not a Whisper language (use a code like 'en' or a name)",
            option="language",
        )
    return code


#: Language spellings each type accepts, checked before generate() can fail deep inside.
_LANGUAGE_NORMALIZERS: dict[str, Callable[[Any, str], str]] = {
    "qwen3_asr": _qwen_language,
    FORCED_ALIGNER_TYPE: _qwen_language,
    "whisper": _whisper_language,
}


def generate_kwargs(family: Family, model: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """``generate()`` keywords for merged request options, or BadRequestError naming the misfit."""
    unknown = set(options) - family.options
    if unknown:
        raise BadRequestError(
            f"mlx-audio model type {family.name!r} does not take option(s) {sorted(unknown)}; "
            f"it takes: {sorted(family.options)}",
            options=sorted(unknown),
        )
    missing = family.required - set(options)
    if missing:
        raise BadRequestError(
            f"mlx-audio model type {family.name!r} needs option(s) {sorted(missing)}"
            + (" (the text to align)" if family.name == FORCED_ALIGNER_TYPE else ""),
            options=sorted(missing),
        )
    check_bool_options(options)  # model defaults come here without the runtime's check
    kwargs = dict(family.fixed)
    for option, value in options.items():
        checked = _VALUE_CHECKS[option](option, value) if option in _VALUE_CHECKS else value
        if option == "language" and family.name in _LANGUAGE_NORMALIZERS:
            checked = _LANGUAGE_NORMALIZERS[family.name](model, checked)
        kwargs[family.keywords[option]] = checked
    return kwargs


def prepare_audio(family: Family, audio: np.ndarray) -> Any:
    """The waveform in the rate and array type this family's ``generate()`` expects."""
    if family.sample_rate != ENGINE_SAMPLE_RATE:
        from mlx_audio.stt.utils import resample_audio

        audio = resample_audio(audio, ENGINE_SAMPLE_RATE, family.sample_rate).astype(np.float32)
    if family.wants_mx_array:
        import mlx.core as mx

        return mx.array(audio)
    return audio


#: Result key -> STTOutput field, for the models that measure themselves.
_TIMINGS = {
    "prompt_tps": "prompt_tps",
    "generation_tps": "generation_tps",
    "total_time_s": "total_time",
}


def _segments(
    items: Any, start: str, end: str, duration_s: float, *, with_words: bool = False
) -> tuple[Segment, ...]:
    """Timed spans with text, inside the audio that was sent.

    Whisper clears the text of segments it judges empty and times them on its 30 s window, not
    on the audio: those are dropped, and times are clipped to the audio's duration. With
    ``with_words``, Whisper's segment dicts carry ``words`` (``word`` with its leading space,
    ``start``, ``end``, ``probability``), kept to the Word contract by ``timed_words``.
    """
    segments = []
    for item in items or ():
        text = str(_field(item, "text")).strip()
        if not text:
            continue
        begin = min(max(float(_field(item, start)), 0.0), duration_s)
        finish = min(max(float(_field(item, end)), begin), duration_s)
        raw = (
            (w["word"], w["start"], w["end"], w.get("probability"))
            for w in (_field(item, "words") if with_words else ())
        )
        segments.append(Segment(begin, finish, text, timed_words(raw, begin, finish)))
    return tuple(segments)


def _field(item: Any, name: str) -> Any:
    return item[name] if isinstance(item, Mapping) else getattr(item, name)


def to_engine_result(
    family: Family,
    output: Any,
    kwargs: Mapping[str, Any],
    duration_s: float,
    extra: Mapping[str, Any],
) -> EngineResult:
    """Map whatever this family's ``generate()`` returned onto the orchestrator's result type."""
    language = getattr(output, "language", None) or kwargs.get("language")
    if hasattr(output, "sentences"):  # Parakeet's AlignedResult: timed sentences of tokens
        segments = _segments(output.sentences, "start", "end", duration_s)
        generated: int | None = sum(len(s.tokens) for s in output.sentences)
        prompt: int | None = None
        timing: dict[str, Any] = {}
    elif hasattr(output, "items"):  # the forced aligner's ForcedAlignResult: timed words
        segments = _segments(output.items, "start_time", "end_time", duration_s)
        generated, prompt, timing = None, None, {}
    else:  # an STTOutput: mlx_audio.stt.models.base's, or Whisper's own (text, segments, language)
        with_words = bool(kwargs.get("word_timestamps"))
        segments = _segments(output.segments, "start", "end", duration_s, with_words=with_words)
        # The shared STTOutput counts tokens (0 is a real count); Whisper's own has no such fields
        # but keeps each segment's tokens (text and timestamps).
        prompt = int(output.prompt_tokens) if hasattr(output, "prompt_tokens") else None
        if hasattr(output, "generation_tokens"):
            generated = int(output.generation_tokens)
        elif isinstance(output.segments, list) and all("tokens" in s for s in output.segments):
            generated = sum(len(s["tokens"]) for s in output.segments)
        else:
            generated = None
        timing = {
            name: float(getattr(output, field))
            for name, field in _TIMINGS.items()
            if getattr(output, field, None)
        }
    cap = kwargs.get("max_tokens")  # Whisper's sample_len caps each window, not the total
    return EngineResult(
        text=str(output.text).strip(),
        segments=segments,
        language=language,
        prompt_tokens=prompt,
        generation_tokens=generated,
        extra={
            "model_type": family.name,
            **timing,
            **({"hit_max_tokens": generated is not None and generated >= cap} if cap else {}),
            **extra,
        },
    )
