"""The legacy host's engine: Qwen3-ASR through qwen-asr 0.0.6 (transformers 4.57, torch, hub 0.x).

The host runtime (``orchestrator.host``) loads it inside ``envs/legacy_host`` as
``legacy_host.engine:QwenAsrEngine``. Models are loaded with qwen-asr's public
``Qwen3ASRModel.from_pretrained(dir, max_new_tokens=..., dtype=..., device_map=...)`` and run with
``.transcribe((audio, 16000), context=..., language=...)``.

Options, from the host's ``engine_options`` (all models) and ``model_options`` (one model; it wins):

* ``device`` (``cuda``, ``cuda:1``, ``mps``, ``cpu``) and ``dtype`` (``float32``, ``float16``,
  ``bfloat16``): default is the best device here and its natural dtype (:mod:`legacy_host.device`).
* ``language``, ``context``, ``max_tokens``: defaults for requests to that model.

Request options: ``language`` (a name such as ``English``, any case; without it the model detects
the language), ``context`` (free text the model is prompted with, e.g. names and terms) and
``max_tokens`` (per request: qwen-asr reads its ``max_new_tokens`` attribute on every call).
``temperature`` is refused: qwen-asr's transformers backend always decodes greedily and passes
no sampling settings to ``generate``.

Hub ids are resolved to a local snapshot with huggingface-hub's ``snapshot_download`` before
transformers sees them: given a hub id, transformers 4.57 retries an unreachable hub five times
with backoff (about 25 s measured), ``snapshot_download`` fails at once.
"""

from __future__ import annotations

import logging
import resource
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from legacy_host.device import pick_device, pick_dtype
from legacy_host.torch_engine import TorchEngine
from orchestrator.errors import BadAudioError, BadRequestError, InternalError
from orchestrator.host.engine import (
    ENGINE_SAMPLE_RATE,
    EngineResult,
    ModelSpec,
    require_model,
)
from orchestrator.host.load_errors import bad_model_options, load_failure, one_line

logger = logging.getLogger(__name__)

REQUEST_OPTIONS = frozenset({"language", "context", "max_tokens"})
LOAD_OPTIONS = frozenset({"device", "dtype"})
#: qwen-asr's own default for ``max_new_tokens``.
DEFAULT_MAX_TOKENS = 512
#: Token cap of the warm-up transcript: 'ready' needs one served request, not a long one (and a
#: tiny test model never emits an end-of-sequence token).
WARMUP_MAX_TOKENS = 8
#: What Qwen3ASRForConditionalGeneration.generate stops on (<|im_end|>, <|endoftext|>). Finished
#: rows are padded with the first, so a row's length is its tokens before the first of these.
QWEN_STOP_TOKEN_IDS = (151645, 151643)
QWEN_PAD_TOKEN_ID = QWEN_STOP_TOKEN_IDS[0]
#: Files a Qwen3-ASR snapshot needs (skips READMEs, images and duplicate weight formats).
SNAPSHOT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model", "*.tiktoken"]
#: ru_maxrss is in KiB on Linux and in bytes on macOS.
RU_MAXRSS_PER_MB = 1024 * 1024 if sys.platform == "darwin" else 1024


class _TokenCounter:
    """Stands in front of the loaded model's ``generate`` to count prompt and generated tokens.

    qwen-asr's ``transcribe`` returns only text; the counts are in the ``generate`` output it
    consumes. The real ``generate`` runs unchanged: this only reads its inputs and output.
    """

    def __init__(self, hf_model: Any) -> None:
        self._generate = hf_model.generate
        self.prompt_tokens = 0
        self.generation_tokens = 0
        hf_model.generate = self  # an instance attribute shadows the method for this model only

    def reset(self) -> None:
        self.prompt_tokens = 0
        self.generation_tokens = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        output = self._generate(*args, **kwargs)
        prompt_length = kwargs["input_ids"].shape[1]
        self.prompt_tokens += int(kwargs["attention_mask"].sum())
        for row in output.sequences[:, prompt_length:].tolist():
            stops = [i for i, token in enumerate(row) if token in QWEN_STOP_TOKEN_IDS]
            self.generation_tokens += stops[0] if stops else len(row)
        return output


class _LoadedModel:
    """One loaded model, its request defaults and the lock that serialises its calls.

    The lock exists because ``max_new_tokens`` is an attribute of the shared qwen-asr object and
    the token counter is per model: two requests at once would see each other's values.
    """

    def __init__(self, asr: Any, defaults: dict[str, Any], device: str, dtype: str) -> None:
        self.asr = asr
        self.defaults = defaults
        self.device = device
        self.dtype = dtype
        self.counter = _TokenCounter(asr.model)
        self.lock = threading.Lock()
        self.languages = {name.lower(): name for name in asr.get_supported_languages()}


class QwenAsrEngine(TorchEngine):
    """Serves Qwen3-ASR through qwen-asr; see the module docstring for options."""

    name = "qwen-asr"
    supported_options = REQUEST_OPTIONS
    reported_packages = (
        "qwen-asr",
        "torch",
        "accelerate",
        "transformers",
        "huggingface-hub",
        "numpy",
        "pyzmq",
    )

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self._models: dict[str, _LoadedModel] = {}

    def load(self, spec: ModelSpec) -> None:
        options = self.load_options(spec, LOAD_OPTIONS)
        defaults = {k: v for k, v in options.items() if k in REQUEST_OPTIONS}
        try:
            _check_values(defaults)
        except BadRequestError as exc:
            raise bad_model_options(spec, exc) from None
        started = time.perf_counter()
        try:
            loaded = _load(spec.ref, options.get("device"), options.get("dtype"), defaults)
        except Exception as exc:
            raise load_failure(spec, exc) from None
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
        loaded: _LoadedModel = require_model(self._models, model)
        self.check_options(options)
        if audio.size == 0:
            raise BadAudioError("empty audio", model=model)
        merged = {**loaded.defaults, **options}
        _check_values(merged)
        language = _canonical_language(loaded, merged.get("language"))
        max_tokens = int(merged.get("max_tokens", DEFAULT_MAX_TOKENS))
        with loaded.lock:
            loaded.asr.max_new_tokens = max_tokens
            loaded.counter.reset()
            try:
                (result,) = loaded.asr.transcribe(
                    (np.ascontiguousarray(audio, dtype=np.float32), ENGINE_SAMPLE_RATE),
                    context=merged.get("context", ""),
                    language=language,
                )
            except Exception as exc:
                logger.exception("qwen-asr transcribe failed for %s", model)
                raise InternalError(
                    f"qwen-asr transcribe failed: {type(exc).__name__}: {one_line(exc)}",
                    model=model,
                ) from None
            prompt_tokens, generated = (
                loaded.counter.prompt_tokens,
                loaded.counter.generation_tokens,
            )
        return EngineResult(
            text=result.text,
            language=result.language or None,
            prompt_tokens=prompt_tokens,
            generation_tokens=generated,
            extra={
                "device": loaded.device,
                "dtype": loaded.dtype,
                "hit_max_tokens": generated >= max_tokens,
                "peak_rss_mb": round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / RU_MAXRSS_PER_MB, 1
                ),
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
) -> _LoadedModel:
    """Resolve ``ref`` to a local directory and load it (the slow imports happen here, once)."""
    local_dir = resolve_ref(ref)
    import torch
    from qwen_asr import Qwen3ASRModel

    chosen_device = pick_device(torch, device)
    chosen_dtype = pick_dtype(torch, chosen_device, dtype)
    asr = Qwen3ASRModel.from_pretrained(
        str(local_dir),
        max_new_tokens=DEFAULT_MAX_TOKENS,
        dtype=chosen_dtype,
        device_map=chosen_device,
    )
    # transformers pads with <|im_end|> anyway, but logs a warning on every request saying so;
    # qwen-asr generates through the thinker, which has a generation config of its own.
    thinker = getattr(asr.model, "thinker", None)
    for generation_config in (
        asr.model.generation_config,
        getattr(thinker, "generation_config", None),
    ):
        if generation_config is not None and generation_config.pad_token_id is None:
            generation_config.pad_token_id = QWEN_PAD_TOKEN_ID
    return _LoadedModel(asr, defaults, chosen_device, str(chosen_dtype).removeprefix("torch."))


def resolve_ref(ref: str) -> Path:
    """A local directory for ``ref``: the path itself, or the hub snapshot (cached or fetched)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    if ref.startswith(("/", ".", "~")) or path.exists():
        raise FileNotFoundError(
            f"local path {ref!r} is not a directory"
            if path.exists()
            else "local path does not exist"
        )
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(ref, allow_patterns=SNAPSHOT_PATTERNS))


def _check_values(options: Mapping[str, Any]) -> None:
    """Refuse option values of the wrong type or range before they reach qwen-asr."""
    for key in ("language", "context"):
        if key in options and not isinstance(options[key], str):
            raise BadRequestError(
                f"option {key!r} must be a string, got {options[key]!r}", option=key
            )
    tokens = options.get("max_tokens", DEFAULT_MAX_TOKENS)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise BadRequestError(
            f"option 'max_tokens' must be a positive integer, got {tokens!r}", option="max_tokens"
        )


def _canonical_language(loaded: _LoadedModel, language: str | None) -> str | None:
    """qwen-asr's spelling of ``language`` (None or blank: let the model detect it)."""
    if language is None or not language.strip():
        return None
    try:
        return loaded.languages[language.strip().lower()]
    except KeyError:
        raise BadRequestError(
            f"language {language!r} is not supported by qwen-asr; supported: {sorted(loaded.languages.values())}",
            option="language",
        ) from None
