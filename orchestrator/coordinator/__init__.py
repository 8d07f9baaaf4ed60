"""The coordinator: runs in the server's process (or ``serve``), never inside a host env.

Its loop (:mod:`.broker`), the one-shot and stream tables, the router, the supervisor that spawns
hosts, health, metrics and the configuration. :class:`Coordinator` loads lazily, so reading a
config or the runtime dir does not import ZeroMQ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.coordinator.coordinator import Coordinator

__all__ = ["Coordinator"]


def __getattr__(name: str) -> Any:
    if name != "Coordinator":
        raise AttributeError(f"module 'orchestrator.coordinator' has no attribute {name!r}")
    from orchestrator.coordinator.coordinator import Coordinator

    return Coordinator
