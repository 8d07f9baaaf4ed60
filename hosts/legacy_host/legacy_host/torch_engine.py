"""What every torch engine of the legacy host does alike with its loaded models.

Both engines (Qwen3-ASR through qwen-asr, Whisper through transformers) keep ``self._models``:
name -> a loaded model with its torch ``device`` and ``dtype``. Reporting those devices, unloading
one model and closing all of them is the same for both, so it lives here once.
"""

from __future__ import annotations

from typing import Any

from legacy_host.device import free_device_memory
from orchestrator.host.engine import Engine, require_model


class TorchEngine(Engine):
    """An engine whose loaded models are torch modules on a device (see the module docstring)."""

    _models: dict[str, Any]

    def capabilities(self) -> dict[str, Any]:
        caps = super().capabilities()
        caps["devices"] = {
            name: f"{m.device}/{m.dtype}" for name, m in sorted(self._models.items())
        }
        return caps

    def unload(self, model: str) -> None:
        loaded = require_model(self._models, model)
        del self._models[model]
        free_device_memory({loaded.device})

    def close(self) -> None:
        devices = {m.device for m in self._models.values()}
        self._models.clear()
        free_device_memory(devices)
