"""Argument types shared by the commands: one place refuses a bad number, in one line."""

from __future__ import annotations

import argparse
from typing import Any

from orchestrator.longform.retry import MAX_PIECE_ATTEMPTS

#: Longer than any honest wait, short enough to catch a unit mistake (ms typed for s).
MAX_SECONDS = 86_400.0


def seconds(text: str) -> float:
    """A positive, finite number of seconds (``inf``, ``nan``, 0 and negatives are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (0 < value <= MAX_SECONDS):  # NaN fails this too
        raise argparse.ArgumentTypeError(
            f"{text} is not a duration in (0, {MAX_SECONDS:g}] seconds (fix: e.g. 30)"
        )
    return value


def attempts(text: str) -> int:
    """A whole number of attempts per piece, from 1 (never retried) to ``MAX_PIECE_ATTEMPTS``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of attempts") from None
    if not 1 <= value <= MAX_PIECE_ATTEMPTS:
        raise argparse.ArgumentTypeError(
            f"{text} is not a number of attempts in [1, {MAX_PIECE_ATTEMPTS}] (fix: e.g. 3)"
        )
    return value


def add_remote_arguments(parser: argparse.ArgumentParser) -> None:
    """How a command reaches a coordinator on another machine (CurveZMQ over TCP), beside its
    ``--connection-file`` (a copy of the coordinator's, for its client key)."""
    parser.add_argument(
        "--curve-keys",
        metavar="DIR",
        help="reach a coordinator on another machine: DIR holds this client's NAME.key_secret "
        "and the coordinator's coordinator.key (with --connection-file: a copy of its file)",
    )
    parser.add_argument(
        "--curve-key-name",
        default="client",
        metavar="NAME",
        help="the name of this client's key pair in --curve-keys (default: client)",
    )
    parser.add_argument(
        "--endpoint",
        metavar="URL",
        help="the coordinator's address, e.g. tcp://COORDINATOR:5555 (default: the connection "
        "file's; with --curve-keys its curve_endpoint)",
    )


def client_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The client keywords of :func:`add_remote_arguments` and ``--connection-file``."""
    return {
        "endpoint": args.endpoint,
        "connection_file": args.connection_file,
        "curve_keys": args.curve_keys,
        "curve_key_name": args.curve_key_name,
    }
