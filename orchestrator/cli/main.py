"""The command line: ``python -m orchestrator serve | health | transcribe | host | fetch | keys``.

This module only builds the parser and dispatches; each command lives in its own module
(``serve``, ``health``, ``transcribe``, ``fetch``) with ``add_arguments`` and ``run``. Results go
to stdout; logs go to stderr, so ``--json`` output pipes as is. Expected failures (a bad config,
a missing env, an unreadable file, no answer) end with one line on stderr and a non-zero exit
code, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from orchestrator.cli import fetch, health, host, keys, logs, serve, transcribe
from orchestrator.wire.errors import (
    ConfigError,
    ConnectionFileError,
    CoordinatorRunningError,
    EnvError,
    OrchestratorError,
)

EXIT_FAILED = 1
#: The shell's convention for "stopped by Ctrl-C" (128 + SIGINT).
EXIT_INTERRUPTED = 130
#: Expected failures, reported in one line; anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (
    ConfigError,
    ConnectionFileError,
    CoordinatorRunningError,
    EnvError,
    OrchestratorError,
    OSError,
    ValueError,
)

COMMANDS = {
    "serve": (serve, "run a standalone coordinator until SIGINT/SIGTERM"),
    "health": (health, "show every host replica; exit 0 ready, 1 degraded, 2 down"),
    "transcribe": (transcribe, "transcribe a WAV file and print each host's text and timings"),
    "host": (host, "restart, stop or start one host's replicas on a running coordinator"),
    "fetch": (fetch, "pre-fetch a config's models into the Hugging Face cache, with progress"),
    "keys": (keys, "CurveZMQ key files for hosts and clients on other machines"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator",
        description="Run speech-to-text model hosts in their own envs behind one coordinator.",
    )
    _add_logging_arguments(parser, default=None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        # Also after the command, where people tend to type them; SUPPRESS keeps the global value.
        _add_logging_arguments(command, default=argparse.SUPPRESS)
    return parser


def _add_logging_arguments(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("--log-level", default=default, help="library log level (default WARNING)")
    parser.add_argument(
        "--log-format",
        choices=logs.LOG_FORMATS,
        default=default,
        help="text (default) or json lines",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module, _ = COMMANDS[args.command]
    try:
        return int(module.run(args))
    except EXPECTED_ERRORS as exc:
        print(f"orchestrator {args.command}: {exc}", file=sys.stderr)
        return health.EXIT_DOWN if args.command == "health" else EXIT_FAILED
    except KeyboardInterrupt:  # hosts were already stopped by the command's own cleanup
        return EXIT_INTERRUPTED
