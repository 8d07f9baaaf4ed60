"""The health snapshot: what ops see of every host replica and of the coordinator itself.

Built on the broker's thread from the supervisor's replicas (state, pid, restarts, heartbeats),
the host's own heartbeat (in flight, oldest in-flight age: progress, not just liveness) and
psutil readings of the host process (RSS, CPU%). Plain JSON-safe dicts: the same snapshot goes
to the client API, the health CLI and the metrics exporter. Never contains secrets.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import psutil

from orchestrator.coordinator.config import Config
from orchestrator.coordinator.supervisor import SERVING, Replica


def replica_health(rep: Replica, now: float) -> dict[str, Any]:
    hb = rep.heartbeat
    versions = rep.ready_info.get("versions", {})
    return {
        "name": rep.name,
        "host": rep.host.name,
        "state": str(rep.state),
        "reason": rep.last_reason,
        "last_restart_reason": rep.last_restart_reason,
        "pid": rep.pid,
        "external": rep.host.external,
        "peer": f"{rep.key_name} {rep.peer}".strip() if rep.host.external else None,
        "uptime_s": round(now - rep.started_at, 2) if rep.linked else 0.0,
        "state_age_s": round(now - rep.state_since, 2),
        "restarts": rep.restarts,
        "last_exit": rep.last_exit,
        "heartbeat_age_s": round(now - rep.last_heartbeat, 3) if rep.linked else None,
        "inflight": rep.inflight,
        "oldest_inflight_s": hb.get("oldest_inflight_s"),
        "streams": rep.streams,
        "served": rep.served,
        "errors": rep.errors,
        "host_dropped": hb.get("dropped", 0),
        "rss_mb": rep.rss_mb,
        "cpu_percent": rep.cpu_percent,
        "engine": rep.ready_info.get("engine"),
        # The streaming segmenter's voice-activity detector, and why not the configured one.
        "vad": rep.ready_info.get("vad"),
        "vad_fallback": rep.ready_info.get("vad_fallback"),
        "models": dict(rep.models),
        "on_demand": dict(rep.ready_info.get("on_demand", {})),
        "idle_unload_s": rep.host.idle_unload_s,
        "unavailable": dict(rep.ready_info.get("unavailable", {})),
        "versions": versions,
        "timings": rep.ready_info.get("timings", {}),
        "memory_limit_mb": rep.host.memory_limit_mb,
        # Requests it takes at once: clients size their parallelism by it (long-form files).
        "max_inflight": rep.host.max_inflight,
    }


def snapshot(
    *,
    config: Config,
    replicas: Sequence[Replica],
    started: float,
    requests: Mapping[str, Any],
    streams: Mapping[str, Any],
    errors_by_code: Mapping[str, int],
    dropped: Mapping[str, Any],
    remote: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything ops want in one JSON object; each table hands in its own ``stats()``."""
    now = time.monotonic()
    replica_rows = [replica_health(r, now) for r in replicas]
    models: dict[str, Any] = {}
    for route in config.models.values():
        serving = [r for r in replica_rows if r["host"] in route.hosts and r["state"] in SERVING]
        models[route.name] = {
            "hosts": list(route.hosts),
            "aliases": list(route.aliases),
            # Ready: can serve it now, loaded or loadable at its next request (on demand, or
            # unloaded when idle); loaded: in memory now.
            "ready": [
                r["name"]
                for r in serving
                if route.name in r["models"] or route.name in r["on_demand"]
            ],
            "loaded": [r["name"] for r in serving if route.name in r["models"]],
        }
    me = psutil.Process(os.getpid())
    return {
        "coordinator": {
            "pid": os.getpid(),
            "uptime_s": round(now - started, 2),
            "rss_mb": round(me.memory_info().rss / 2**20, 1),
            **requests,
            "errors_by_code": dict(errors_by_code),
            "dropped": dict(dropped),
            "streams": dict(streams),
            "config": config.source,
            # Dial-ins and TCP handshakes (accepted, refused by reason); None without TCP.
            "remote": dict(remote) if remote is not None else None,
        },
        "replicas": replica_rows,
        "models": models,
    }


def overall_status(health: dict[str, Any]) -> str:
    """'ready' when every replica serves, 'degraded' when some is down but every model still has
    a ready replica, 'down' when some model has none."""
    if any(not m["ready"] for m in health["models"].values()):
        return "down"
    if any(r["state"] not in SERVING for r in health["replicas"]):
        return "degraded"
    return "ready"
