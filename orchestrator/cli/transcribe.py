"""``python -m orchestrator transcribe FILE.wav``: the main job, from a terminal.

With ``--config`` it embeds a coordinator (starts the hosts, transcribes, stops them); otherwise
it connects to a running one through its connection file. The WAV (any rate, 8-32-bit PCM or
float) is sent as float32 at the file's own rate: the host resamples it to what its engine takes.
With ``--all-hosts`` the same audio goes to every host serving the model, pinned to each in turn,
so their transcripts and timings can be compared side by side. The health table follows.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.audio.wav import read_wav
from orchestrator.cli import arguments, logs
from orchestrator.cli import health as health_cli
from orchestrator.client import Client, TranscriptionResult
from orchestrator.wire.errors import OrchestratorError, UnknownModelError

log = logging.getLogger(logs.CLI_LOGGER)

EXIT_OK, EXIT_FAILED = 0, 1
DEFAULT_MODEL = "qwen3-asr"
#: Per request; real models on CPU with a cold cache need far more than the client's default.
DEFAULT_TRANSCRIBE_TIMEOUT_S = 120.0
#: Engine option name for each command-line flag (see orchestrator.wire.messages.KNOWN_OPTIONS).
OPTION_FLAGS = {"language": "language", "max_tokens": "max_tokens", "context": "context"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="a WAV file (any rate; PCM 8-32 bit or float)")
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"model or alias (default {DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--all-hosts", action="store_true", help="send the file to every host serving the model"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", help="start an embedded coordinator from this TOML config")
    source.add_argument(
        "--connection-file", help="connect to a running coordinator (default: yours)"
    )
    parser.add_argument("--language", help="language hint passed to the engine, e.g. English")
    parser.add_argument("--max-tokens", type=int, help="cap on generated tokens")
    parser.add_argument("--context", help="context / prompt text passed to the engine")
    parser.add_argument(
        "--timeout",
        type=arguments.seconds,
        default=DEFAULT_TRANSCRIBE_TIMEOUT_S,
        help=f"seconds per request (default {DEFAULT_TRANSCRIBE_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--json", action="store_true", help="print results and health as one JSON object"
    )


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine options the user gave, under the engines' names; absent flags are left out."""
    return {
        option: getattr(args, attr)
        for attr, option in OPTION_FLAGS.items()
        if getattr(args, attr) is not None
    }


def hosts_serving(health: Mapping[str, Any], model: str) -> list[str]:
    """The hosts configured for ``model`` (a name or alias) in fallback order, from a snapshot."""
    for name, info in health["models"].items():
        if model == name or model in (info.get("aliases") or ()):
            return list(info["hosts"])
    known = sorted(
        {n for name, info in health["models"].items() for n in (name, *info.get("aliases", ()))}
    )
    raise UnknownModelError(f"unknown model {model!r}; known: {known}", model=model)


def run(args: argparse.Namespace) -> int:
    logs.setup_logging(args.log_level or logs.DEFAULT_LIBRARY_LEVEL, args.log_format or "text")
    audio, rate = read_wav(args.file)
    log.info("%s: %.2fs at %d Hz", args.file, audio.size / rate, rate)
    coord = None
    if args.config:
        from orchestrator.cli.serve import start_and_settle
        from orchestrator.coordinator import Coordinator

        coord = Coordinator.from_config(args.config)
        started = time.monotonic()
        log.info("starting the hosts of %s", args.config)
        try:
            start_and_settle(coord)
        except BaseException:
            coord.close()
            raise
        log.info("hosts settled in %.1fs", time.monotonic() - started)
        client = coord.sync_client()
    else:
        client = Client.connect(args.connection_file)
    try:
        return _transcribe_and_report(client, audio, rate, args)
    finally:
        client.close()  # before the coordinator: its context waits for every socket to close
        if coord is not None:
            coord.close()


def _transcribe_and_report(
    client: Client, audio: np.ndarray, rate: int, args: argparse.Namespace
) -> int:
    health = client.health()
    targets: list[str | None] = (
        list(hosts_serving(health, args.model)) if args.all_hosts else [None]
    )
    options = engine_options(args)
    outcomes = [_transcribe(client, audio, rate, args, options, host) for host in targets]
    health = client.health()  # after the requests: served counts and the hosts' state now
    if args.json:
        report = {
            "file": str(args.file),
            "sample_rate": rate,
            "duration_s": round(audio.size / rate, 3),
            "results": outcomes,
            "health": {"status": health_cli.overall_status(health), **health},
        }
        print(json.dumps(report, default=str))
    else:
        for outcome in outcomes:
            print(format_outcome(outcome) + "\n")
        print(health_cli.render(health))
    return EXIT_OK if all("error" not in o for o in outcomes) else EXIT_FAILED


def _transcribe(
    client: Client,
    audio: np.ndarray,
    rate: int,
    args: argparse.Namespace,
    options: Mapping[str, Any],
    host: str | None,
) -> dict[str, Any]:
    """One request; an error is part of the report (the other hosts still get their turn)."""
    try:
        result = client.transcribe(
            audio, sample_rate=rate, model=args.model, timeout=args.timeout, host=host, **options
        )
    except OrchestratorError as exc:
        log.debug("request to %s failed", host or "any host", exc_info=True)
        return {"host": host, "model": args.model, "error": exc.to_wire()}
    return result_dict(result)


def result_dict(result: TranscriptionResult) -> dict[str, Any]:
    return {
        "host": result.host,
        "replica": result.replica,
        "model": result.model,
        "text": result.text,
        "language": result.language,
        "timings": asdict(result.timings),
        "attempts": result.attempts,
        "prompt_tokens": result.prompt_tokens,
        "generation_tokens": result.generation_tokens,
    }


def format_outcome(outcome: Mapping[str, Any]) -> str:
    """A host's transcript and timings, or its error, as a few readable lines."""
    if "error" in outcome:
        error = outcome["error"]
        return f"== {outcome['host'] or 'any host'}: {outcome['model']} ==\nerror [{error['code']}] {error['message']}"
    t = outcome["timings"]
    return "\n".join(
        [
            f"== {outcome['host']} (replica {outcome['replica']}): {outcome['model']} ==",
            outcome["text"],
            f"timings: queued {t['queued_s']:.3f}s, compute {t['compute_s']:.3f}s, total {t['total_s']:.3f}s"
            + (f"; language {outcome['language']}" if outcome.get("language") else ""),
        ]
    )
