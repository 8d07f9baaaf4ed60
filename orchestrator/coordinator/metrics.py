"""Prometheus exposition of the coordinator: host states, load, memory, requests, drops.

``python -m orchestrator serve --metrics-port N`` (or ``[coordinator] metrics_port``) calls
:func:`start_metrics`; nothing listens unless a port is asked for, and then only on loopback.
A server embedding the coordinator can call :func:`build_registry` and expose the registry its own
way. Requires the ``metrics`` extra (``prometheus-client``); the CLI imports this module only
when metrics are enabled, so a coordinator without it runs fine.

Every scrape takes one health snapshot on the broker thread (``Coordinator.health``) and builds
the metric families from it (a custom collector, as in prometheus-client's "custom collectors"):
race-free, no counters kept twice, and nothing runs between scrapes. Counters such as
``orchestrator_requests_total`` are the coordinator's own counts, so they start at zero with the
coordinator, as Prometheus expects of a restarted process.
"""

from __future__ import annotations

import logging
import socket as sockets
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from orchestrator.coordinator.health import overall_status
from orchestrator.coordinator.supervisor import HostState
from orchestrator.wire.errors import ConfigError

log = logging.getLogger(__name__)

PREFIX = "orchestrator"
#: A scrape waits this long for the broker thread's snapshot before reporting orchestrator_up 0.
SCRAPE_TIMEOUT_S = 5.0
#: Loopback only: metrics name hosts, models and load, which is nobody else's business.
DEFAULT_METRICS_ADDR = "127.0.0.1"
STATUSES = ("ready", "degraded", "down")
_MB = 2**20
_REPLICA_LABELS = ("replica", "host")

Snapshot = Callable[[], Mapping[str, Any]]


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=list(labels))


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=list(labels))


class SnapshotCollector(Collector):
    """Builds every metric family from one health snapshot per scrape."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []  # names are dynamic; registering must not take a snapshot

    def collect(self) -> Iterator[Metric]:
        up = _gauge("up", "1 when the coordinator answered this scrape's health snapshot")
        try:
            health = self._snapshot()
        except Exception as exc:  # a scrape must answer even when the coordinator does not
            log.warning("metrics scrape got no health snapshot: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from coordinator_metrics(health)
        yield from replica_metrics(health.get("replicas") or [])


def coordinator_metrics(health: Mapping[str, Any]) -> Iterator[Metric]:
    """Whole-coordinator families: status, queue, requests, errors, drops, streams, models."""
    coord = health["coordinator"]
    status = _gauge(
        "status", "1 for the current overall status (ready, degraded, down)", ["status"]
    )
    current = overall_status(dict(health))
    for name in STATUSES:
        status.add_metric([name], 1 if name == current else 0)
    yield status

    simple_gauges = (
        (
            "coordinator_uptime_seconds",
            "Seconds since the coordinator started",
            coord.get("uptime_s"),
        ),
        (
            "coordinator_rss_bytes",
            "Resident memory of the coordinator process",
            _bytes(coord.get("rss_mb")),
        ),
        (
            "queue_depth",
            "Requests waiting in the coordinator for a free replica",
            coord.get("queued"),
        ),
        (
            "inflight_requests",
            "One-shot requests dispatched and not yet answered",
            coord.get("inflight"),
        ),
    )
    for name, doc, value in simple_gauges:
        if value is not None:
            family = _gauge(name, doc)
            family.add_metric([], value)
            yield family

    simple_counters = (
        ("requests", "One-shot transcribe requests received", coord.get("requests", 0)),
        ("results", "One-shot results returned by hosts", coord.get("results", 0)),
        ("retries", "Requests retried on another replica after theirs died", coord.get("retries", 0)),
        ("recycled_stuck", "Replicas recycled for a request stuck past its deadline", coord.get("recycled_stuck", 0)),
    )  # fmt: skip
    for name, doc, value in simple_counters:
        family = _counter(name, doc)
        family.add_metric([], value)
        yield family

    errors = _counter(
        "request_errors",
        "Requests answered with an error, by error code (rejections included)",
        ["code"],
    )
    for code, count in sorted((coord.get("errors_by_code") or {}).items()):
        errors.add_metric([code], count)
    yield errors

    dropped = _counter(
        "dropped_messages",
        "Frames dropped by the coordinator, by socket and reason",
        ["socket", "reason"],
    )
    for socket, by_reason in sorted((coord.get("dropped") or {}).items()):
        for reason, count in sorted(by_reason.items()):
            dropped.add_metric([socket, reason], count)
    yield dropped

    yield from _stream_metrics(coord.get("streams") or {})

    ready = _gauge("model_ready_replicas", "Replicas ready to serve each model", ["model"])
    for model, info in sorted((health.get("models") or {}).items()):
        ready.add_metric([model], len(info.get("ready") or ()))
    yield ready


def _stream_metrics(streams: Mapping[str, Any]) -> Iterator[Metric]:
    for name, key, doc in (
        ("streams_open", "open", "Live streams"),
        ("streams_parked", "parked", "Streams waiting for a replica after theirs died"),
        ("stream_max_failover_seconds", "max_failover_s", "Longest stream failover so far"),
    ):
        family = _gauge(name, doc)
        family.add_metric([], streams.get(key, 0))
        yield family
    for name, key, doc in (
        ("streams_opened", "opened_total", "Streams opened"),
        ("stream_failovers", "failovers", "Streams moved to another replica"),
    ):
        family = _counter(name, doc)
        family.add_metric([], streams.get(key, 0))
        yield family


@dataclass(frozen=True)
class _ReplicaField:
    """One per-replica number of the snapshot and the family it becomes."""

    name: str
    key: str
    doc: str
    counter: bool = False
    scale: float = 1.0


REPLICA_FIELDS = (
    _ReplicaField("replica_restarts", "restarts", "Restarts of the replica by the supervisor", counter=True),
    _ReplicaField("replica_served", "served", "Requests the replica answered with a result", counter=True),
    _ReplicaField("replica_errors", "errors", "Requests the replica answered with an error", counter=True),
    _ReplicaField("replica_dropped_messages", "host_dropped", "Frames the host process dropped (since its last start)", counter=True),
    _ReplicaField("replica_inflight_requests", "inflight", "Requests dispatched to the replica and not answered"),
    _ReplicaField("replica_oldest_inflight_seconds", "oldest_inflight_s", "Age of the replica's oldest running request"),
    _ReplicaField("replica_active_streams", "streams", "Streams attached to the replica"),
    _ReplicaField("replica_rss_bytes", "rss_mb", "Resident memory of the host process", scale=_MB),
    _ReplicaField("replica_memory_limit_bytes", "memory_limit_mb", "Configured RSS ceiling (0: none)", scale=_MB),
    _ReplicaField("replica_cpu_percent", "cpu_percent", "CPU use of the host process since the previous snapshot"),
    _ReplicaField("replica_uptime_seconds", "uptime_s", "Seconds since the host process started"),
    _ReplicaField("replica_heartbeat_age_seconds", "heartbeat_age_s", "Seconds since the host's last heartbeat"),
)  # fmt: skip


def replica_metrics(replicas: Iterable[Mapping[str, Any]]) -> Iterator[Metric]:
    """Per-replica families labelled by replica and host; a missing reading is left out."""
    replicas = list(replicas)
    state = _gauge(
        "replica_state",
        "1 for the replica's current state, 0 for the others",
        [*_REPLICA_LABELS, "state"],
    )
    packages = _gauge("replica_package_info", "Package versions reported by the host from inside its env", [*_REPLICA_LABELS, "package", "version"])  # fmt: skip
    for rep in replicas:
        labels = [str(rep["name"]), str(rep["host"])]
        for name in HostState:
            state.add_metric([*labels, name.value], 1 if rep["state"] == name.value else 0)
        for package, version in sorted((rep.get("versions") or {}).items()):
            packages.add_metric([*labels, package, str(version)], 1)
    yield state
    yield packages
    for spec in REPLICA_FIELDS:
        maker = _counter if spec.counter else _gauge
        family = maker(spec.name, spec.doc, _REPLICA_LABELS)
        for rep in replicas:
            value = rep.get(spec.key)
            if value is not None:
                family.add_metric([str(rep["name"]), str(rep["host"])], value * spec.scale)
        yield family


def _bytes(mb: float | None) -> float | None:
    return None if mb is None else mb * _MB


def build_registry(snapshot: Snapshot) -> CollectorRegistry:
    """A registry with the snapshot collector and the coordinator's own process metrics."""
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(snapshot))
    ProcessCollector(registry=registry)  # process_open_fds, process_resident_memory_bytes, ...
    return registry


class MetricsServer:
    """The HTTP endpoint serving one registry; ``close`` stops it and frees the port."""

    def __init__(
        self, registry: CollectorRegistry, port: int, addr: str = DEFAULT_METRICS_ADDR
    ) -> None:
        self.registry = registry
        try:
            self._httpd, self._thread = start_http_server(port, addr=addr, registry=registry)
        except OSError as exc:
            raise ConfigError(port_refusal(addr, port, exc)) from None
        self.addr = addr
        self.port = int(self._httpd.server_port)  # the real one when 0 asked for any free port

    @property
    def url(self) -> str:
        return f"http://{self.addr}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def port_refusal(addr: str, port: int, exc: OSError) -> str:
    """The one line for a metrics port we cannot bind, naming the port and the fix."""
    return (
        f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc} "
        "(fix: pick another --metrics-port / metrics_port, or 0 for any free port)"
    )


def check_port_free(port: int, addr: str = DEFAULT_METRICS_ADDR) -> None:
    """Refuse a busy metrics port before any host starts, not after they all loaded."""
    if port == 0:
        return
    with sockets.socket(sockets.AF_INET, sockets.SOCK_STREAM) as probe:
        probe.setsockopt(sockets.SOL_SOCKET, sockets.SO_REUSEADDR, 1)  # as the HTTP server binds
        try:
            probe.bind((addr, port))
        except OSError as exc:
            raise ConfigError(port_refusal(addr, port, exc)) from None


def start_metrics(coordinator: Any, port: int, addr: str = DEFAULT_METRICS_ADDR) -> MetricsServer:
    """Serve a started coordinator's metrics on ``addr:port`` (port 0: any free port)."""
    return MetricsServer(build_registry(lambda: coordinator.health(SCRAPE_TIMEOUT_S)), port, addr)
