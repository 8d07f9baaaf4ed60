"""Coordinator pieces built without processes or sockets: a config, a supervisor whose replicas are
fake processes, a recording outbox. The unit tests of the router, the request and stream tables and
the supervisor's state machine use these; every decision they test is the real code's."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from typing import Any

from orchestrator.coordinator.config import Config, config_from_dict
from orchestrator.coordinator.router import Router
from orchestrator.coordinator.supervisor import HostState, Replica, Supervisor
from orchestrator.wire.protocol import Kind, Message


def unit_config(
    hosts: dict[str, dict[str, Any]] | None = None,
    models: dict[str, Any] | None = None,
    restart: dict[str, Any] | None = None,
    **coordinator: Any,
) -> Config:
    """Two hosts serving model ``m`` (a first, b as fallback) unless told otherwise."""
    default_host = {"python": "current", "engine": "x.y:Engine", "models": {"m": "ref"}}
    raw: dict[str, Any] = {
        "coordinator": coordinator,
        "hosts": hosts or {"a": {**default_host, "replicas": 2}, "b": dict(default_host)},
        "restart": restart or {"backoff_initial_s": 0.0, "max_restarts": 3},
    }
    if models is not None:
        raw["models"] = models
    return config_from_dict(raw, root="/nonexistent")


class FakeProcess:
    """What the supervisor reads of a Popen: poll, wait, pid, stdin."""

    _pids = iter(range(10_000_000, 20_000_000))

    def __init__(self) -> None:
        self.pid = next(self._pids)
        self.returncode: int | None = None
        self.stdin = None

    def poll(self) -> int | None:
        return self.returncode

    def wait(self) -> int | None:
        return self.returncode

    def exit(self, code: int) -> None:
        self.returncode = code


class ProcesslessSupervisor(Supervisor):
    """The real state machine; spawning and signalling act on fake processes."""

    def __init__(self, config: Config) -> None:
        self.shutdowns: list[str] = []
        self.signals: list[tuple[str, int]] = []
        super().__init__(
            config,
            endpoint="inproc://unit",
            key=b"k" * 32,
            send_shutdown=lambda rep: self.shutdowns.append(rep.name),
        )

    def spawn(self, rep: Replica) -> None:
        rep.generation += 1
        rep.heartbeat, rep.ready_info = {}, {}
        rep.inflight = rep.streams = 0
        rep.proc = FakeProcess()  # type: ignore[assignment]
        self._by_identity[rep.identity] = rep
        rep.started_at = rep.last_heartbeat = time.monotonic()
        rep.stop_target = None
        rep.kill_reason = ""
        self._transition(rep, HostState.STARTING, "fake spawn")

    def _kill(self, rep: Replica, sig: signal.Signals) -> None:
        self.signals.append((rep.name, int(sig)))
        if rep.proc is not None and rep.proc.returncode is None:
            rep.proc.exit(-int(sig))  # type: ignore[union-attr]


def make_ready(
    sup: Supervisor, rep: Replica, models: dict[str, str] | None = None, **info: Any
) -> None:
    """Spawn (fake) and report READY serving ``models`` (default: what its host config lists)."""
    if rep.proc is None:
        sup.spawn(rep)
    sup.on_ready(rep, {"models": dict(models if models is not None else rep.host.models), **info})


@dataclass
class RecordingOutbox:
    """An outbox that keeps what the tables send."""

    to_clients: list[tuple[bytes, Message]] = field(default_factory=list)
    to_hosts: list[tuple[str, Message]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def to_client(self, client: bytes, msg: Message) -> None:
        self.to_clients.append((client, msg))

    def to_host(self, rep: Replica, msg: Message) -> None:
        self.to_hosts.append((rep.name, msg))

    def count_error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def client_kinds(self) -> list[Kind]:
        return [m.kind for _, m in self.to_clients]

    def host_messages(self, kind: Kind) -> list[tuple[str, Message]]:
        return [(name, m) for name, m in self.to_hosts if m.kind is kind]

    def events(self) -> list[dict[str, Any]]:
        return [m.header for _, m in self.to_clients if m.kind is Kind.STREAM_EVENT]


@dataclass
class Parts:
    config: Config
    supervisor: ProcesslessSupervisor
    router: Router
    outbox: RecordingOutbox

    def replica(self, name: str) -> Replica:
        return next(r for r in self.supervisor.replicas if r.name == name)


def build_parts(config: Config | None = None, ready: tuple[str, ...] | None = None) -> Parts:
    """Config, supervisor, router and outbox; the named replicas (default: all) made READY."""
    config = config or unit_config()
    sup = ProcesslessSupervisor(config)
    parts = Parts(config, sup, Router(config, sup.replicas), RecordingOutbox())
    for rep in sup.replicas:
        if ready is None or rep.name in ready:
            make_ready(sup, rep)
    return parts
