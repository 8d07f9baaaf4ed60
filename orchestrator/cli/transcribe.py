"""``python -m orchestrator transcribe FILE``: the main job, from a terminal.

With ``--config`` it embeds a coordinator (starts the hosts, transcribes, stops them); otherwise
it connects to a running one through its connection file. The file (WAV, FLAC, OGG/Opus, MP3,
M4A/AAC, WebM: ``orchestrator.audio.decode``) is decoded block by block and converted here to
16 kHz PCM16, what every engine takes, so a long file never sits in memory as float and the
request is as small as it can be. What is wrong with the file (cut short, a lying header) is
warned about, and listed under ``warnings`` in ``--json``.
With ``--all-hosts`` the same audio goes to every host serving the model, pinned to each in turn,
so their transcripts and timings can be compared side by side. The health table follows.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.audio.decode import AudioInfo, read_pcm16
from orchestrator.cli import health as health_cli
from orchestrator.cli import logs
from orchestrator.client import Client, TranscriptionResult
from orchestrator.wire.contract import ENGINE_SAMPLE_RATE
from orchestrator.wire.errors import OrchestratorError, UnknownModelError

log = logging.getLogger(logs.CLI_LOGGER)

EXIT_OK, EXIT_FAILED = 0, 1
DEFAULT_MODEL = "qwen3-asr"
#: Per request; real models on CPU with a cold cache need far more than the client's default.
DEFAULT_TRANSCRIBE_TIMEOUT_S = 120.0
#: Engine option name for each command-line flag (see orchestrator.wire.messages.KNOWN_OPTIONS).
OPTION_FLAGS = {
    "language": "language",
    "max_tokens": "max_tokens",
    "context": "context",
    "word_timestamps": "word_timestamps",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", type=Path, help="an audio file: WAV, FLAC, OGG/Opus, MP3, M4A/AAC or WebM"
    )
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
        "--word-timestamps",
        action="store_true",
        default=None,
        help="ask the engine for each word's start and end (in --json: segments[].words)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
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


@dataclass(frozen=True)
class LoadedFile:
    """A file decoded to what the request carries, and what was found wrong with it."""

    pcm16: bytes  # mono, ENGINE_SAMPLE_RATE
    info: AudioInfo
    warnings: tuple[str, ...]

    @property
    def duration_s(self) -> float:
        return len(self.pcm16) / 2 / ENGINE_SAMPLE_RATE


def load_file(path: Path) -> LoadedFile:
    """Decode block by block into 16 kHz PCM16 (a fifth of the float32 at 44.1 kHz)."""
    decoded = read_pcm16(path, ENGINE_SAMPLE_RATE)
    info = decoded.info
    log.info(
        "%s: %s/%s, %.2f s, %d Hz, %d channel(s)",
        path,
        info.container,
        info.codec,
        info.duration_s,
        info.sample_rate,
        info.channels,
    )
    return LoadedFile(decoded.pcm16, info, decoded.warnings)


def run(args: argparse.Namespace) -> int:
    logs.setup_logging(args.log_level or logs.DEFAULT_LIBRARY_LEVEL, args.log_format or "text")
    loaded = load_file(args.file)
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
        return _transcribe_and_report(client, loaded, args)
    finally:
        client.close()  # before the coordinator: its context waits for every socket to close
        if coord is not None:
            coord.close()


def _transcribe_and_report(client: Client, loaded: LoadedFile, args: argparse.Namespace) -> int:
    health = client.health()
    targets: list[str | None] = (
        list(hosts_serving(health, args.model)) if args.all_hosts else [None]
    )
    options = engine_options(args)
    outcomes = [_transcribe(client, loaded.pcm16, args, options, host) for host in targets]
    health = client.health()  # after the requests: served counts and the hosts' state now
    if args.json:
        report = {
            "file": str(args.file),
            "sample_rate": loaded.info.sample_rate,
            "duration_s": round(loaded.duration_s, 3),
            "audio": asdict(loaded.info),
            "warnings": list(loaded.warnings),
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
    pcm16: bytes,
    args: argparse.Namespace,
    options: Mapping[str, Any],
    host: str | None,
) -> dict[str, Any]:
    """One request; an error is part of the report (the other hosts still get their turn)."""
    try:
        result = client.transcribe(
            pcm16,
            sample_rate=ENGINE_SAMPLE_RATE,
            model=args.model,
            timeout=args.timeout,
            host=host,
            **options,
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
        "segments": [s.to_wire() for s in result.segments],
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
