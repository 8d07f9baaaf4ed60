"""One legacy host for Qwen3-ASR and Whisper: an engine that hands each model to its family's engine.

The host runtime runs one engine class per host (``engine = ...`` in the config). Rather than a
second host process with a second copy of torch and transformers in memory, or an engine option
every model must repeat, this engine reads the checkpoint's own ``config.json`` (``model_type``)
after resolving the ref to a local folder, and loads the model with
:class:`~legacy_host.engine.QwenAsrEngine` (``qwen3_asr``) or
:class:`~legacy_host.whisper_engine.TransformersWhisperEngine` (``whisper``). Requests then go to
the engine that loaded their model, which checks their options itself: ``temperature`` is
refused for Qwen3-ASR and ``context`` for Whisper, as each engine alone would.

Configured as ``engine = "legacy_host.family_engine:LegacyFamilyEngine"``; ``engine_options`` are
shared by both (``device``, ``dtype`` and request defaults).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from legacy_host.engine import QwenAsrEngine, resolve_ref
from legacy_host.whisper_engine import TransformersWhisperEngine
from orchestrator.errors import ModelUnavailableError
from orchestrator.host.engine import Engine, EngineResult, ModelSpec, require_model
from orchestrator.host.load_errors import load_failure

#: config.json ``model_type`` -> the engine class serving that family.
FAMILIES: dict[str, type[Engine]] = {
    "qwen3_asr": QwenAsrEngine,
    "whisper": TransformersWhisperEngine,
}


class LegacyFamilyEngine(Engine):
    """Dispatches each model to its family's engine; see the module docstring."""

    name = "legacy-families"
    supported_options = frozenset().union(*(cls.supported_options for cls in FAMILIES.values()))
    reported_packages = tuple(
        dict.fromkeys(p for cls in FAMILIES.values() for p in cls.reported_packages)
    )

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self._engines: dict[str, Engine] = {}  # model_type -> engine, made at first use
        self._by_model: dict[str, Engine] = {}

    def load(self, spec: ModelSpec) -> None:
        try:
            local_dir = resolve_ref(spec.ref)
            model_type = json.loads((local_dir / "config.json").read_text()).get("model_type")
        except Exception as exc:
            raise load_failure(spec, exc) from None
        engine_class = FAMILIES.get(model_type)
        if engine_class is None:
            raise ModelUnavailableError(
                f"model {spec.name!r} ({spec.ref}): model_type {model_type!r} is served by no "
                f"engine of this host (fix: use one of {sorted(FAMILIES)} or another host)",
                model=spec.name,
            )
        engine = self._engines.get(model_type)
        if engine is None:
            engine = self._engines[model_type] = engine_class(self.options)
        engine.load(dataclasses.replace(spec, ref=str(local_dir)))
        self._by_model[spec.name] = engine

    def transcribe(self, model: str, audio: np.ndarray, options: Mapping[str, Any]) -> EngineResult:
        engine: Engine = require_model(self._by_model, model)
        return engine.transcribe(model, audio, options)

    def warmup(self, model: str) -> None:
        engine: Engine = require_model(self._by_model, model)
        engine.warmup(model)

    def unload(self, model: str) -> None:
        engine: Engine = require_model(self._by_model, model)
        engine.unload(model)
        del self._by_model[model]

    def capabilities(self) -> dict[str, Any]:
        caps = super().capabilities()
        caps["devices"] = {}
        for engine in self._engines.values():
            caps["devices"].update(engine.capabilities().get("devices", {}))
        caps["model_options"] = {
            name: sorted(engine.supported_options)
            for name, engine in sorted(self._by_model.items())
        }
        return caps

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
