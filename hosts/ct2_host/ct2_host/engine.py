"""The CTranslate2 host's engine: Whisper models through faster-whisper 1.2.1 + ctranslate2 4.8.

The host runtime (``orchestrator.host``) loads it inside ``envs/ct2_host`` as
``ct2_host.engine:FasterWhisperEngine``. A model ref is a CTranslate2 Whisper folder
(``model.bin``, ``config.json``, ``tokenizer.json``, ``vocabulary.txt``) or, when the hub is
reachable, a hub id faster-whisper knows (``Systran/faster-whisper-tiny.en``, ``tiny.en``).

Options, from the host's ``engine_options`` (all models) and ``model_options`` (one model; it wins):

* ``device`` (``auto``, ``cpu``, ``cuda``) and ``compute_type`` (``int8``, ``float16``,
  ``int8_float16``, ``float32``, ...): default ``float16`` where CTranslate2 sees a CUDA device,
  else ``int8`` on the CPU (the bundled float16 weights are quantised at load).
* ``cpu_threads`` (0: CTranslate2's default) and ``num_workers`` (parallel transcripts).
* ``beam_size`` (default 1: greedy, what a live transcript wants; faster-whisper's own default
  is 5), ``vad_filter`` (default false: the host runtime already segments streams, and a second VAD
  would cut the audio it chose to send), ``condition_on_previous_text`` (default false, so one
  mis-heard window cannot steer the next).
* ``language``, ``context``, ``max_tokens``, ``temperature``: defaults for requests.

Request options: ``language`` (a code such as ``en``, or ``English``; an English-only model
refuses any other), ``context`` (faster-whisper's ``initial_prompt``), ``max_tokens``
(``max_new_tokens``), ``temperature`` (one value; without it faster-whisper's fallback
ladder 0.0 ... 1.0 applies) and ``word_timestamps`` (fills ``Segment.words`` from Whisper's
cross-attention alignment; see ``orchestrator.wire.messages.Word`` for the contract).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import BadAudioError, BadRequestError, InternalError
from orchestrator.host.engine import (
    ENGINE_SAMPLE_RATE,
    KNOWN_OPTIONS,
    Engine,
    EngineResult,
    ModelSpec,
    Segment,
    require_model,
    timed_words,
)
from orchestrator.host.load_errors import bad_model_options, load_failure, one_line
from orchestrator.host.memory import release_freed_memory

logger = logging.getLogger(__name__)

REQUEST_OPTIONS = KNOWN_OPTIONS
#: Load-time settings: (type, default). A default of None means "decided at load".
LOAD_DEFAULTS: dict[str, tuple[type, Any]] = {
    "device": (str, "auto"),
    "compute_type": (str, None),
    "cpu_threads": (int, 0),
    "num_workers": (int, 1),
    "beam_size": (int, 1),
    "vad_filter": (bool, False),
    "condition_on_previous_text": (bool, False),
}
LOAD_OPTIONS = frozenset(LOAD_DEFAULTS)
#: What CTranslate2 runs where no compute_type is set: its fastest exact-enough type per device.
DEFAULT_COMPUTE_TYPE = {"cpu": "int8", "cuda": "float16"}
#: Files a CTranslate2 Whisper folder must hold; checked first so a missing one is named.
CT2_MODEL_FILES = ("model.bin", "config.json")
#: Names of English a request may use besides the code.
ENGLISH_NAMES = frozenset({"en", "english"})
#: Token cap of the warm-up transcript: 'ready' needs one served request, not a long one.
WARMUP_MAX_TOKENS = 8


class _LoadedModel:
    """A loaded WhisperModel with its load-time settings and request defaults."""

    def __init__(self, model: Any, settings: dict[str, Any], defaults: dict[str, Any]) -> None:
        self.model = model
        self.settings = settings
        self.defaults = defaults
        self.languages = frozenset(model.supported_languages)


class FasterWhisperEngine(Engine):
    """Serves CTranslate2 Whisper models through faster-whisper; see the module docstring."""

    name = "faster-whisper"
    supported_options = REQUEST_OPTIONS
    reported_packages = (
        "faster-whisper",
        "ctranslate2",
        "tokenizers",
        "huggingface-hub",
        "transformers",
        "numpy",
        "pyzmq",
    )

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self._models: dict[str, _LoadedModel] = {}

    def load(self, spec: ModelSpec) -> None:
        options = self.load_options(spec, LOAD_OPTIONS)
        try:
            settings = _load_settings(options)
            defaults = {k: v for k, v in options.items() if k in REQUEST_OPTIONS}
            _check_values(defaults)
        except BadRequestError as exc:
            raise bad_model_options(spec, exc) from None
        started = time.perf_counter()
        try:
            model = _load(spec.ref, settings)
        except Exception as exc:
            raise load_failure(spec, exc) from None
        loaded = _LoadedModel(model, settings, defaults)
        if "language" in defaults:
            try:
                _language_code(loaded, defaults["language"])
            except BadRequestError as exc:
                raise bad_model_options(spec, exc) from None
        self._models[spec.name] = loaded
        logger.info(
            "loaded %s (%s) on %s/%s in %.2f s",
            spec.name,
            spec.ref,
            settings["device"],
            settings["compute_type"],
            time.perf_counter() - started,
        )

    def transcribe(self, model: str, audio: np.ndarray, options: Mapping[str, Any]) -> EngineResult:
        loaded: _LoadedModel = require_model(self._models, model)
        self.check_options(options)
        if audio.size == 0:
            raise BadAudioError("empty audio", model=model)
        merged = {**loaded.defaults, **options}
        _check_values(merged)
        kwargs = _transcribe_kwargs(loaded, merged)
        try:
            segments_iter, info = loaded.model.transcribe(
                np.ascontiguousarray(audio, dtype=np.float32), **kwargs
            )
            segments = list(segments_iter)  # the generator decodes as it is consumed
        except Exception as exc:
            logger.exception("faster-whisper transcribe failed for %s", model)
            raise InternalError(
                f"faster-whisper transcribe failed: {type(exc).__name__}: {one_line(exc)}",
                model=model,
            ) from None
        return _to_result(loaded, segments, info, kwargs)

    def warmup(self, model: str) -> None:
        self.transcribe(
            model,
            np.zeros(ENGINE_SAMPLE_RATE // 2, dtype=np.float32),
            {"max_tokens": WARMUP_MAX_TOKENS},
        )

    def capabilities(self) -> dict[str, Any]:
        caps = super().capabilities()
        caps["devices"] = {
            name: f"{m.settings['device']}/{m.settings['compute_type']}"
            for name, m in sorted(self._models.items())
        }
        return caps

    def unload(self, model: str) -> None:
        # ctranslate2 frees a model's buffers when its last reference goes; malloc_trim then
        # hands the freed heap back to the system so the host's RSS falls.
        require_model(self._models, model)
        del self._models[model]
        release_freed_memory()

    def close(self) -> None:
        self._models.clear()


def _load_settings(options: Mapping[str, Any]) -> dict[str, Any]:
    """The load-time settings with their defaults, type-checked; device and compute type decided."""
    settings: dict[str, Any] = {}
    for key, (kind, default) in LOAD_DEFAULTS.items():
        value = options.get(key, default)
        # bool is an int subclass: `cpu_threads = true` must not pass as 1.
        if value is not None and (type(value) is not kind):
            raise BadRequestError(
                f"option {key!r} must be {kind.__name__}, got {value!r}", option=key
            )
        settings[key] = value
    for key in ("cpu_threads", "num_workers", "beam_size"):
        floor = 0 if key == "cpu_threads" else 1
        if settings[key] < floor:
            raise BadRequestError(
                f"option {key!r} must be >= {floor}, got {settings[key]!r}", option=key
            )
    return settings


def _pick_device(requested: str) -> str:
    """``auto`` means CUDA when CTranslate2 sees a device, else the CPU."""
    if requested != "auto":
        return requested
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def _load(ref: str, settings: dict[str, Any]) -> Any:
    """Load ``ref`` (a local CTranslate2 folder or a hub id); fills in device and compute type."""
    from faster_whisper import WhisperModel

    source = _model_source(ref)
    settings["device"] = _pick_device(settings["device"])
    if settings["compute_type"] is None:
        settings["compute_type"] = DEFAULT_COMPUTE_TYPE.get(settings["device"], "default")
    try:
        return WhisperModel(
            source,
            device=settings["device"],
            compute_type=settings["compute_type"],
            cpu_threads=settings["cpu_threads"],
            num_workers=settings["num_workers"],
        )
    except RuntimeError as exc:
        if not Path(source).is_dir():
            raise
        # CTranslate2's own words for a damaged model.bin name a symptom ("cannot load the
        # target vocabulary", "invalid payload size"), not the file.
        raise RuntimeError(
            f"CTranslate2 cannot read {Path(source) / 'model.bin'} ({one_line(exc)}); it is "
            "damaged, truncated or not a Whisper model (fix: fetch or convert the model again)"
        ) from exc


def _model_source(ref: str) -> str:
    """A local folder (checked to hold a CTranslate2 model) or a hub id for faster-whisper.

    Anything that looks like a path must exist: faster-whisper would otherwise take it for a hub
    id and fail with a hub validation error that hides the real cause.
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        missing = [name for name in CT2_MODEL_FILES if not (path / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"local path {ref!r} is not a CTranslate2 model folder: it has no "
                f"{', '.join(missing)} (fix: point the ref at the folder holding model.bin)"
            )
        return str(path)
    scheme, colon, _ = ref.partition(":")
    if colon and "/" not in scheme:
        # Hub ids have no colon; `bundled:...` and the like are resolved to a folder by the
        # coordinator before a host starts. faster-whisper would send this to the hub as a
        # repo id and report only that the id is malformed.
        raise FileNotFoundError(
            f"local path expected, got the model source {ref!r}: the coordinator resolves "
            f"{scheme}: refs to a folder before it starts a host (fix: start the host through "
            "the coordinator, or give the folder's path)"
        )
    if ref.startswith(("/", ".", "~")) or path.exists():
        raise FileNotFoundError(
            f"local path {ref!r} is not a directory"
            if path.exists()
            else "local path does not exist"
        )
    return ref


def _check_values(options: Mapping[str, Any]) -> None:
    """Refuse option values of the wrong type or range before they reach faster-whisper."""
    for key in ("language", "context"):
        if key in options and not isinstance(options[key], str):
            raise BadRequestError(
                f"option {key!r} must be a string, got {options[key]!r}", option=key
            )
    if "max_tokens" in options:
        tokens = options["max_tokens"]
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
            raise BadRequestError(
                f"option 'max_tokens' must be a positive integer, got {tokens!r}",
                option="max_tokens",
            )
    if "temperature" in options:
        value = options["temperature"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise BadRequestError(
                f"option 'temperature' must be a number from 0 to 1, got {value!r}",
                option="temperature",
            )


def _language_code(loaded: _LoadedModel, language: str | None) -> str | None:
    """The code faster-whisper wants (None or blank: English-only models say en, others detect)."""
    if language is None or not language.strip():
        return None
    code = language.strip().lower()
    if code in ENGLISH_NAMES:
        code = "en"
    if code not in loaded.languages:
        raise BadRequestError(
            f"language {language!r} is not served by this Whisper model; it takes "
            f"{', '.join(sorted(loaded.languages))} (fix: send one of those codes, or none)",
            option="language",
        )
    return code


def _transcribe_kwargs(loaded: _LoadedModel, options: Mapping[str, Any]) -> dict[str, Any]:
    settings = loaded.settings
    kwargs: dict[str, Any] = {
        "language": _language_code(loaded, options.get("language")),
        "beam_size": settings["beam_size"],
        "word_timestamps": bool(options.get("word_timestamps", False)),
        "vad_filter": settings["vad_filter"],
        "condition_on_previous_text": settings["condition_on_previous_text"],
    }
    if options.get("context"):
        kwargs["initial_prompt"] = options["context"]
    if "max_tokens" in options:
        kwargs["max_new_tokens"] = options["max_tokens"]
    if "temperature" in options:
        kwargs["temperature"] = float(options["temperature"])
    return kwargs


def _to_result(
    loaded: _LoadedModel, segments: list[Any], info: Any, kwargs: Mapping[str, Any]
) -> EngineResult:
    extra: dict[str, Any] = {
        "device": loaded.settings["device"],
        "compute_type": loaded.settings["compute_type"],
        "beam_size": kwargs["beam_size"],
    }
    return EngineResult(
        # faster-whisper's segment texts carry their own leading space.
        text="".join(s.text for s in segments).strip(),
        segments=tuple(_segment(s, with_words=kwargs["word_timestamps"]) for s in segments),
        language=info.language,
        generation_tokens=sum(len(s.tokens) for s in segments),
        extra=extra,
    )


def _segment(segment: Any, *, with_words: bool) -> Segment:
    """One faster-whisper segment, with its words when the request asked for them."""
    start, end = round(float(segment.start), 3), round(float(segment.end), 3)
    raw = ((w.word, w.start, w.end, w.probability) for w in segment.words or ())
    words = timed_words(raw, start, end) if with_words else ()
    return Segment(start, end, segment.text.strip(), words)
