"""``python -m orchestrator host restart|stop|start NAME``: one host's replicas, by an operator.

It goes through the same client -> coordinator control path as every request, so it works on a
``serve`` (or a server that wrote a connection file) without restarting anything else. ``restart``
also brings back a host left ``failed`` by too many crashes, with a fresh restart window.
"""

from __future__ import annotations

import argparse
from typing import Any

from orchestrator.cli import arguments, logs
from orchestrator.client import Client
from orchestrator.coordinator.broker import CONTROL_ACTIONS

EXIT_OK = 0
DEFAULT_TIMEOUT_S = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=CONTROL_ACTIONS, help="what to do with the host")
    parser.add_argument("name", help="the host's name in the config ([hosts.NAME])")
    parser.add_argument("--connection-file", default=None, help="a coordinator's connection file")
    arguments.add_remote_arguments(parser)
    parser.add_argument(
        "--timeout",
        type=arguments.seconds,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds to wait for the coordinator (default {DEFAULT_TIMEOUT_S:g})",
    )


def run(args: argparse.Namespace) -> int:
    logs.setup_logging(args.log_level or logs.DEFAULT_LIBRARY_LEVEL, args.log_format or "text")
    with Client(**arguments.client_arguments(args)) as client:
        client.control(args.action, args.name, timeout=args.timeout)
        # The action is under way, not done: show where each replica is as it goes.
        replicas = _replicas_of(client.health(timeout=args.timeout), args.name)
    states = ", ".join(f"{r['name']} {r['state']}" for r in replicas)
    print(f"{args.action} {args.name}: asked; now {states}")
    return EXIT_OK


def _replicas_of(health: dict[str, Any], host: str) -> list[dict[str, Any]]:
    return [r for r in health["replicas"] if r.get("host") == host]
