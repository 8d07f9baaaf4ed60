"""The legacy host's Whisper engine: any Whisper-family checkpoint in Hugging Face's layout.

Runs inside ``envs/legacy_host`` (transformers 4.57, torch) with transformers' own
``WhisperForConditionalGeneration`` + ``WhisperProcessor``: OpenAI's checkpoints, distil-whisper,
fine-tunes, and the bundled tiny.en converted by :mod:`orchestrator.models`. Served on its own as
``legacy_host.whisper_engine:TransformersWhisperEngine``, or next to Qwen3-ASR through
:mod:`legacy_host.family_engine`.

Options, from the host's ``engine_options`` / ``model_options`` (load) or a request:

* ``device``, ``dtype`` (load only): as for Qwen3-ASR (:mod:`legacy_host.device`); float32 on CPU.
* ``language``: a Whisper code or name (``en``, ``English``). English-only models (``*.en``)
  accept only English; multilingual ones detect the language when none is given.
* ``max_tokens``: cap on generated tokens per 30 s window (Whisper has 448 positions).
* ``temperature``: 0 (default) decodes greedily; above 0 samples at that temperature.
* ``word_timestamps``: fill ``Segment.words`` (contract: ``orchestrator.wire.messages.Word``) from
  transformers' token timestamps, which need ``alignment_heads`` in the model's generation config
  (the converter in :mod:`orchestrator.models` writes them; OpenAI's hub checkpoints carry them).

Each transcript comes with timestamped segments: Whisper predicts them as tokens, so they cost
nothing extra. Audio longer than 30 s is transcribed window by window by transformers' own
long-form loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from legacy_host.device import pick_device, pick_dtype
from legacy_host.torch_engine import TorchEngine
from legacy_host.whisper_words import RawWord, segment_words
from orchestrator.errors import BadAudioError, BadRequestError, InternalError
from orchestrator.host.engine import (
    ENGINE_SAMPLE_RATE,
    EngineResult,
    ModelSpec,
    Segment,
    require_model,
    timed_words,
)
from orchestrator.host.load_errors import bad_model_options, load_failure, one_line

logger = logging.getLogger(__name__)

REQUEST_OPTIONS = frozenset({"language", "max_tokens", "temperature", "word_timestamps"})
LOAD_OPTIONS = frozenset({"device", "dtype"})
#: Whisper's decoder has 448 positions; the prompt takes up to 4 of them.
MAX_TOKENS_LIMIT = 444
WARMUP_MAX_TOKENS = 8
#: One Whisper window: longer audio goes through transformers' long-form loop.
WINDOW_S = 30.0


class _LoadedWhisper:
    """A loaded model with its processor, request defaults and the lock serialising its calls."""

    def __init__(self, model: Any, processor: Any, defaults: dict[str, Any], device: str) -> None:
        self.model = model
        self.processor = processor
        self.defaults = defaults
        self.device = device
        self.dtype = str(model.dtype).removeprefix("torch.")
        self.multilingual = bool(getattr(model.generation_config, "is_multilingual", False))
        self.special_ids = frozenset(processor.tokenizer.all_special_ids)
        # End of text comes first among Whisper's special ids; timestamps follow them all.
        self.first_special_id = int(processor.tokenizer.eos_token_id)
        self.has_alignment_heads = bool(getattr(model.generation_config, "alignment_heads", None))
        self.lock = threading.Lock()


class TransformersWhisperEngine(TorchEngine):
    """Serves Whisper checkpoints through transformers; see the module docstring for options."""

    name = "transformers-whisper"
    supported_options = REQUEST_OPTIONS
    reported_packages = ("transformers", "torch", "huggingface-hub", "numpy", "pyzmq")

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self._models: dict[str, _LoadedWhisper] = {}

    def load(self, spec: ModelSpec) -> None:
        options = self.load_options(spec, LOAD_OPTIONS)
        defaults = {k: v for k, v in options.items() if k in REQUEST_OPTIONS}
        started = time.perf_counter()
        try:
            loaded = _load(spec.ref, options.get("device"), options.get("dtype"), defaults)
        except Exception as exc:
            raise load_failure(spec, exc) from None
        try:
            _generate_kwargs(loaded, defaults)
        except BadRequestError as exc:
            raise bad_model_options(spec, exc) from None
        self._models[spec.name] = loaded
        logger.info(
            "loaded %s (%s) on %s/%s in %.2f s",
            spec.name,
            spec.ref,
            loaded.device,
            loaded.dtype,
            time.perf_counter() - started,
        )

    def transcribe(self, model: str, audio: np.ndarray, options: Mapping[str, Any]) -> EngineResult:
        loaded: _LoadedWhisper = require_model(self._models, model)
        self.check_options(options)
        if audio.size == 0:
            raise BadAudioError("empty audio", model=model)
        merged = {**loaded.defaults, **options}
        kwargs = _generate_kwargs(loaded, merged)
        with_words = bool(merged.get("word_timestamps", False))
        if with_words and not loaded.has_alignment_heads:
            raise BadRequestError(
                f"model {model!r} cannot time words: its generation_config.json has no "
                "alignment_heads (fix: add them, or drop word_timestamps)",
                option="word_timestamps",
            )
        with loaded.lock:
            try:
                audio32 = np.ascontiguousarray(audio, dtype=np.float32)
                ids, segments = (_run_with_words if with_words else _run)(loaded, audio32, kwargs)
            except Exception as exc:
                logger.exception("whisper generate failed for %s", model)
                raise InternalError(
                    f"transformers whisper generate failed: {type(exc).__name__}: {one_line(exc)}",
                    model=model,
                ) from None
        duration_s = audio.size / ENGINE_SAMPLE_RATE
        text = loaded.processor.tokenizer.decode(ids, skip_special_tokens=True).strip()
        generated = sum(1 for i in ids if i not in loaded.special_ids)
        cap = kwargs.get("max_new_tokens")
        return EngineResult(
            text=text,
            segments=tuple(
                _segment(start, end, seg_text, raw_words, duration_s, with_words=with_words)
                for start, end, seg_text, raw_words in segments
                if seg_text
            ),
            language=kwargs.get("language") or ("en" if not loaded.multilingual else None),
            generation_tokens=generated,
            extra={
                "device": loaded.device,
                "dtype": loaded.dtype,
                **({"hit_max_tokens": generated >= cap} if cap else {}),
            },
        )

    def warmup(self, model: str) -> None:
        self.transcribe(
            model,
            np.zeros(ENGINE_SAMPLE_RATE // 2, dtype=np.float32),
            {"max_tokens": WARMUP_MAX_TOKENS},
        )


def _load(
    ref: str, device: str | None, dtype: str | None, defaults: dict[str, Any]
) -> _LoadedWhisper:
    from legacy_host.engine import resolve_ref

    local_dir = resolve_ref(ref)
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    # Whisper's generate() hands transformers its suppress-token processors, and transformers 4.57
    # then warns on every request that it built the same ones: noise, not news, in a host's log.
    logging.getLogger("transformers.generation.utils").setLevel(logging.ERROR)
    chosen_device = pick_device(torch, device)
    chosen_dtype = pick_dtype(torch, chosen_device, dtype)
    processor = WhisperProcessor.from_pretrained(str(local_dir))
    model = WhisperForConditionalGeneration.from_pretrained(str(local_dir), dtype=chosen_dtype)
    return _LoadedWhisper(model.to(chosen_device).eval(), processor, defaults, chosen_device)


def _language(loaded: _LoadedWhisper, language: Any) -> str | None:
    """A language code generate() takes; None lets a multilingual model detect it."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    if not isinstance(language, str) or not language.strip():
        raise BadRequestError(
            f"option 'language' must be a non-empty string, got {language!r}", option="language"
        )
    key = language.strip().lower()
    code = key if key in LANGUAGES else TO_LANGUAGE_CODE.get(key)
    if code is None:
        raise BadRequestError(
            f"language {language!r} is not a Whisper language (use a code like 'en' or a name)",
            option="language",
        )
    if not loaded.multilingual and code != "en":
        raise BadRequestError(
            f"language {language!r}: this Whisper model is English-only", option="language"
        )
    # English-only models take no language token: transformers refuses one for them.
    return code if loaded.multilingual else None


def _generate_kwargs(loaded: _LoadedWhisper, options: Mapping[str, Any]) -> dict[str, Any]:
    """``generate()`` keywords for merged options, or BadRequestError naming the misfit."""
    kwargs: dict[str, Any] = {"return_timestamps": True}
    if "language" in options:
        code = _language(loaded, options["language"])
        if code is not None:
            kwargs["language"] = code
    if "max_tokens" in options:
        tokens = options["max_tokens"]
        if (
            isinstance(tokens, bool)
            or not isinstance(tokens, int)
            or not 1 <= tokens <= MAX_TOKENS_LIMIT
        ):
            raise BadRequestError(
                f"option 'max_tokens' must be an integer from 1 to {MAX_TOKENS_LIMIT}, got {tokens!r}",
                option="max_tokens",
            )
        kwargs["max_new_tokens"] = tokens
    temperature = options.get("temperature", 0.0)
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature < float("inf")
    ):
        raise BadRequestError(
            f"option 'temperature' must be a number >= 0, got {temperature!r}", option="temperature"
        )
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=float(temperature))
    else:
        kwargs.update(do_sample=False, num_beams=1)
    return kwargs


#: (start s, end s, text, words as the stack timed them) of one segment.
RawSegment = tuple[float, float, str, list[RawWord]]


def _segment(
    start: float,
    end: float,
    text: str,
    raw_words: list[RawWord],
    duration_s: float,
    *,
    with_words: bool,
) -> Segment:
    """A segment clipped to the audio; its words kept inside it by ``timed_words``."""
    begin = min(start, duration_s)
    finish = min(max(end, start), duration_s)
    words = timed_words(raw_words, begin, finish) if with_words else ()
    return Segment(begin, finish, text, words)


def _inputs(loaded: _LoadedWhisper, audio: np.ndarray) -> dict[str, Any]:
    """Log-mel features and their mask; audio over one window keeps its length (long form)."""
    long_form = audio.size > WINDOW_S * ENGINE_SAMPLE_RATE
    features = loaded.processor(
        audio,
        sampling_rate=ENGINE_SAMPLE_RATE,
        return_tensors="pt",
        return_attention_mask=True,
        **({"truncation": False, "padding": "longest"} if long_form else {}),
    )
    return {
        "input_features": features.input_features.to(loaded.device, loaded.model.dtype),
        "attention_mask": features.attention_mask.to(loaded.device),
    }


def _run_with_words(
    loaded: _LoadedWhisper, audio: np.ndarray, kwargs: dict[str, Any]
) -> tuple[list[int], list[RawSegment]]:
    """Generated ids and segments with their words, short or long form alike.

    Asking for segments with scores gives, per segment, its tokens, their token timestamps (in
    seconds of the whole audio, window offsets added) and the window's generate() result, whose
    ``scores`` give each token's probability: one code path for one window or many.
    """
    import torch

    tokenizer = loaded.processor.tokenizer
    with torch.inference_mode():
        out = loaded.model.generate(
            **_inputs(loaded, audio),
            **kwargs,
            return_token_timestamps=True,
            return_segments=True,
            return_dict_in_generate=True,
            output_scores=True,
        )
    segments: list[RawSegment] = []
    for seg in out["segments"][0]:
        ids = seg["tokens"].tolist()
        text = tokenizer.decode(ids, skip_special_tokens=True).strip()
        words = segment_words(
            ids,
            seg["token_timestamps"].tolist(),
            _token_probabilities(seg["result"], seg["idxs"][0], ids),
            first_special_id=loaded.first_special_id,
            decode=tokenizer.decode,
        )
        segments.append((float(seg["start"]), float(seg["end"]), text, words))
    return out["sequences"][0].tolist(), segments


def _token_probabilities(result: Mapping[str, Any], first: int, ids: list[int]) -> list[float]:
    """The probability the decoder gave each of a segment's tokens when it chose it.

    ``result`` is the window's generate() output: ``sequences`` start with the decoder prompt,
    and ``scores`` hold one step's logits per generated token, so the token at sequence index
    ``j`` was scored at step ``j - len(prompt)``.
    """
    import torch

    prompt = len(result["sequences"]) - len(result["scores"])
    steps = torch.stack([result["scores"][first + k - prompt] for k in range(len(ids))])
    probs = torch.softmax(steps.float(), dim=-1)
    chosen = probs[torch.arange(len(ids)), torch.tensor(ids)]
    return [float(p) for p in chosen]


def _run(
    loaded: _LoadedWhisper, audio: np.ndarray, kwargs: dict[str, Any]
) -> tuple[list[int], list[RawSegment]]:
    """Generated ids and (start, end, text, no words) segments for one piece of audio."""
    import torch

    long_form = audio.size > WINDOW_S * ENGINE_SAMPLE_RATE
    inputs = _inputs(loaded, audio)
    tokenizer = loaded.processor.tokenizer
    with torch.inference_mode():
        if long_form:
            out = loaded.model.generate(**inputs, **kwargs, return_segments=True)
            segments = [
                (
                    float(s["start"]),
                    float(s["end"]),
                    tokenizer.decode(s["tokens"], skip_special_tokens=True).strip(),
                    [],
                )
                for s in out["segments"][0]
            ]
            return out["sequences"][0].tolist(), segments
        ids = loaded.model.generate(**inputs, **kwargs)[0].tolist()
    decoded = tokenizer.decode(ids, skip_special_tokens=True, output_offsets=True)
    segments = [
        (float(o["timestamp"][0]), float(o["timestamp"][1]), o["text"].strip(), [])
        for o in decoded.get("offsets", [])
        if o["timestamp"][0] is not None and o["timestamp"][1] is not None
    ]
    return ids, segments
