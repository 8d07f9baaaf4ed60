"""The MLX host's engine: any mlx-audio 0.3.1 speech-to-text model, by hub id or local path.

The host runtime (``orchestrator.host``) loads it inside ``envs/mlx_host`` (huggingface-hub 1.x,
transformers 5) as ``mlx_host.engine:MlxAudioEngine``. Models are loaded with mlx-audio's public
``mlx_audio.stt.utils.load_model(ref)`` and run with ``model.generate(audio, ...)``; Qwen3-ASR,
Whisper, Parakeet, Voxtral, GLM-ASR, VibeVoice-ASR and the Qwen3 forced aligner are served the
same way, their differences kept in :mod:`mlx_host.families`.

Options, from the host's ``engine_options`` (all models) and ``model_options`` (one model; it wins):

* ``language``, ``context``, ``max_tokens``, ``temperature``: defaults for requests to that model,
  refused at load if the model's type does not take them.
* ``strict_weights`` (bool, default true): every parameter of the model must come from the
  checkpoint with its shape. mlx-audio's own default loads missing or misshaped weights silently
  (the model then runs on random values); extra tensors in the checkpoint are still tolerated.

Request options are the ones the model's type takes (see ``capabilities()["model_options"]``).
Every MLX call runs on one dedicated thread (:mod:`mlx_host.mlx_thread` says why).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from mlx_host.families import Family, family_of, generate_kwargs, prepare_audio, to_engine_result
from mlx_host.mlx_thread import MlxThread
from orchestrator.errors import (
    BadAudioError,
    InternalError,
    ModelUnavailableError,
    OrchestratorError,
)
from orchestrator.host.engine import (
    ENGINE_SAMPLE_RATE,
    KNOWN_OPTIONS,
    Engine,
    EngineResult,
    ModelSpec,
    require_model,
)
from orchestrator.host.load_errors import load_failure, one_line
from orchestrator.host.memory import release_freed_memory

logger = logging.getLogger(__name__)

#: Options a model may set beyond the request defaults.
LOAD_OPTIONS = frozenset({"strict_weights"})
#: Token cap of the warm-up transcript: 'ready' needs one served request, not a long one (and a
#: tiny test model never emits an end-of-sequence token).
WARMUP_MAX_TOKENS = 8
BYTES_PER_MB = 1024 * 1024


class _LoadedModel:
    """A loaded mlx-audio model with what the engine learned about it at load time."""

    def __init__(
        self, spec: ModelSpec, model: Any, family: Family, defaults: dict[str, Any]
    ) -> None:
        self.spec = spec
        self.model = model
        self.family = family
        self.defaults = defaults


class MlxAudioEngine(Engine):
    """Serves mlx-audio STT models; see the module docstring for options."""

    name = "mlx-audio"
    supported_options = KNOWN_OPTIONS  # the union; each model type takes a subset
    reported_packages = (
        "mlx-audio",
        "mlx",
        "mlx-lm",
        "huggingface-hub",
        "transformers",
        "numpy",
        "pyzmq",
    )

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self._mlx = MlxThread(name="mlx")
        self._models: dict[str, _LoadedModel] = {}
        self._models_lock = threading.Lock()
        #: Read once at the first load: capabilities() runs on the host's event loop, which must
        #: never wait for the MLX thread (it may be busy with a long transcript).
        self._device: str | None = None

    # -- loading -------------------------------------------------------------------------------

    def load(self, spec: ModelSpec) -> None:
        options = self.load_options(spec, LOAD_OPTIONS)
        strict = options.pop("strict_weights", True)
        if not isinstance(strict, bool):
            raise ModelUnavailableError(
                f"model {spec.name!r}: option 'strict_weights' must be true or false, got {strict!r}",
                model=spec.name,
            )
        started = time.perf_counter()
        try:
            model = self._mlx.call(_load_model, spec.ref, strict=strict)
        except Exception as exc:
            raise load_failure(spec, exc) from None
        family = family_of(model)
        if self._device is None:
            self._device = self._mlx.call(_default_device)
        try:
            generate_kwargs(family, model, options)  # refuse defaults the model type cannot take
        except OrchestratorError as exc:
            raise ModelUnavailableError(
                f"model {spec.name!r}: {exc.message}", model=spec.name
            ) from None
        with self._models_lock:
            self._models[spec.name] = _LoadedModel(spec, model, family, options)
        logger.info(
            "loaded %s (%s, type %s) in %.2f s",
            spec.name,
            spec.ref,
            family.name,
            time.perf_counter() - started,
        )

    # -- serving -------------------------------------------------------------------------------

    def transcribe(self, model: str, audio: np.ndarray, options: Mapping[str, Any]) -> EngineResult:
        loaded: _LoadedModel = require_model(self._models, model)
        if audio.size == 0:
            raise BadAudioError("empty audio", model=model)
        merged = {**loaded.defaults, **options}
        kwargs = generate_kwargs(loaded.family, loaded.model, merged)
        try:
            return self._mlx.call(_generate, loaded, audio, kwargs)
        except OrchestratorError:
            raise
        except Exception as exc:
            logger.exception("generate failed for %s", model)
            raise InternalError(
                f"mlx-audio {loaded.family.name} generate failed: {type(exc).__name__}: {one_line(exc)}",
                model=model,
            ) from None

    def warmup(self, model: str) -> None:
        loaded: _LoadedModel = require_model(self._models, model)
        options = {"max_tokens": WARMUP_MAX_TOKENS} if "max_tokens" in loaded.family.options else {}
        if loaded.family.required:  # the aligner: a word to align against half a second of silence
            options.update({opt: "warmup" for opt in loaded.family.required})
        self.transcribe(model, np.zeros(ENGINE_SAMPLE_RATE // 2, dtype=np.float32), options)

    def capabilities(self) -> dict[str, Any]:
        caps = super().capabilities()
        with self._models_lock:
            caps["model_options"] = {
                name: sorted(m.family.options) for name, m in sorted(self._models.items())
            }
            caps["model_types"] = {name: m.family.name for name, m in sorted(self._models.items())}
        if self._device is not None:
            caps["device"] = self._device
        return caps

    def unload(self, model: str) -> None:
        with self._models_lock:
            require_model(self._models, model)
            del self._models[model]
        # MLX keeps freed buffers in its own cache: clear it on the MLX thread, then let malloc
        # return what the arrays' CPU memory held.
        self._mlx.call(_clear_cache)
        release_freed_memory()

    def close(self) -> None:
        with self._models_lock:
            self._models.clear()
        self._mlx.call(_clear_cache)


# -- run on the MLX thread -----------------------------------------------------------------------


def _load_model(ref: str, *, strict: bool) -> Any:
    from mlx_audio.stt.utils import load_model

    ref = os.path.expanduser(ref)
    if not strict:
        return _with_alignment_heads(load_model(ref, strict=False))
    try:
        return _with_alignment_heads(load_model(ref, strict=True))
    except ValueError as exc:
        # mlx's strict check reports extra tensors first; they are harmless (unused), whereas
        # missing or misshaped ones leave random weights. Reload leniently only for extras.
        if "parameters not in model" not in str(exc):
            raise
        logger.warning("%s: checkpoint has tensors the model does not use; ignoring them", ref)
        return _with_alignment_heads(load_model(ref, strict=False))


def _with_alignment_heads(model: Any) -> Any:
    """Give a Whisper model the ``alignment_heads`` its word timing reads.

    mlx-audio 0.3.1's Whisper keeps its heads as ``_alignment_heads`` (the last half of the decoder
    layers unless ``set_alignment_heads`` ran) while ``whisper/timing.py`` reads
    ``model.alignment_heads``: without this, ``word_timestamps=True`` fails with AttributeError.
    """
    heads = getattr(model, "_alignment_heads", None)
    if heads is not None and not hasattr(model, "alignment_heads"):
        model.alignment_heads = heads
    return model


def _generate(loaded: _LoadedModel, audio: np.ndarray, kwargs: dict[str, Any]) -> EngineResult:
    import mlx.core as mx

    waveform = prepare_audio(loaded.family, audio)
    mx.reset_peak_memory()
    output = loaded.model.generate(waveform, **kwargs)
    extra = {"peak_memory_mb": round(mx.get_peak_memory() / BYTES_PER_MB, 3)}
    return to_engine_result(loaded.family, output, kwargs, audio.size / ENGINE_SAMPLE_RATE, extra)


def _default_device() -> str:
    import mlx.core as mx

    return mx.default_device().type.name  # "cpu" or "gpu" (Metal)


def _clear_cache() -> None:
    import mlx.core as mx

    mx.clear_cache()


# -- errors --------------------------------------------------------------------------------------
