"""orchestrator: run speech-to-text stacks that cannot share a Python env, each in its own venv.

The coordinator (embedded with :class:`Coordinator`, or standalone via ``python -m orchestrator
serve``) spawns model hosts inside their uv-managed envs and routes PCM audio to them over ZeroMQ;
:class:`AsyncClient` and :class:`Client` are what a server imports. Attributes load lazily, so
``python -m orchestrator.host`` inside a host env imports only what a host needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Coordinator": "orchestrator.coordinator",
    "AsyncClient": "orchestrator.client",
    "Client": "orchestrator.client",
    "TranscriptionResult": "orchestrator.client",
    "StreamEvent": "orchestrator.client",
    "load_config": "orchestrator.coordinator.config",
}

if TYPE_CHECKING:
    from orchestrator.client import AsyncClient, Client, StreamEvent, TranscriptionResult
    from orchestrator.coordinator import Coordinator
    from orchestrator.coordinator.config import load_config

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
