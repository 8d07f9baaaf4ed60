"""``python -m orchestrator transcribe FILE``: the main job, from a terminal, for any length.

The file (WAV, FLAC, OGG/Opus, MP3, M4A/AAC, WebM: ``orchestrator.audio.decode``) is checked
from its header first (rate, length): a file no host can take is refused before any host starts.
With ``--config`` it embeds a coordinator (starts the hosts, transcribes, stops them); otherwise
it connects to a running one through its connection file. Every file, short or long, takes the
long-form path (``orchestrator.longform``): decoded block by block, converted once to 16 kHz
PCM16, cut at pauses, spread over every serving replica and merged with file timestamps. What is
wrong with the file (cut short, a lying header) is warned about, and listed under ``warnings`` in
``--json``. A piece a host fails transiently (timed out, crashed, not serving) is retried on another
host, ``--piece-attempts`` times in all; each retry is a warning on stderr and counted under
``retries``.

Output: by default a report (the file's facts, each host's transcript and timings, the health
table); ``--format txt|json|srt|vtt`` prints just the transcript in that format, and ``-o FILE``
writes it there (format from the suffix unless given). ``--all-hosts`` sends the whole file to
every host serving the model in turn, for side-by-side comparison. ``--json`` is the report as
one JSON object (the file's facts under ``audio``, its ``warnings``, each result's language and
segments, with their words under ``--word-timestamps``). A progress bar shows on a terminal's
stderr, never when piped.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orchestrator.audio.decode import AudioInfo, open_audio
from orchestrator.cli import arguments, logs
from orchestrator.cli import health as health_cli
from orchestrator.cli.progress import ProgressBar
from orchestrator.client import Client
from orchestrator.longform import formats
from orchestrator.longform.merge import Transcript
from orchestrator.longform.planner import DEFAULT_MAX_PIECE_S, PiecePlan
from orchestrator.longform.retry import DEFAULT_PIECE_ATTEMPTS
from orchestrator.longform.runner import hosts_of
from orchestrator.longform.source import DEFAULT_MAX_DURATION_S, check_limits
from orchestrator.wire.errors import OrchestratorError

log = logging.getLogger(logs.CLI_LOGGER)

EXIT_OK, EXIT_FAILED = 0, 1
DEFAULT_MODEL = "qwen3-asr"
#: Per piece; real models on CPU with a cold cache need far more than the client's default.
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
        "file",
        type=Path,
        help="a recording of any length: WAV, FLAC, OGG/Opus, MP3, M4A/AAC or WebM",
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
    arguments.add_remote_arguments(parser)
    parser.add_argument("--language", help="language hint passed to the engine, e.g. English")
    parser.add_argument("--max-tokens", type=int, help="cap on generated tokens per piece")
    parser.add_argument("--context", help="context / prompt text passed to the engine")
    parser.add_argument(
        "--word-timestamps",
        action="store_true",
        default=None,
        help="ask the engine for each word's start and end (json: segments[].words; "
        "vtt: inline word times; srt: cues timed by their words)",
    )
    parser.add_argument(
        "--timeout",
        type=arguments.seconds,
        default=DEFAULT_TRANSCRIBE_TIMEOUT_S,
        help=f"seconds per piece (default {DEFAULT_TRANSCRIBE_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--piece-attempts",
        type=arguments.attempts,
        default=DEFAULT_PIECE_ATTEMPTS,
        metavar="N",
        help="tries per piece when a host times out, crashes or is not serving; each retry goes to "
        f"another host of the model unless --all-hosts pins one (default {DEFAULT_PIECE_ATTEMPTS}; "
        "1: no retry)",
    )
    parser.add_argument(
        "--max-piece",
        type=arguments.seconds,
        default=DEFAULT_MAX_PIECE_S,
        metavar="SECONDS",
        help=f"longest piece sent at once: the engine's window (default {DEFAULT_MAX_PIECE_S:g})",
    )
    parser.add_argument(
        "--format", choices=formats.FORMATS, help="print only the transcript, in this format"
    )
    parser.add_argument(
        "-o", "--output", type=Path, help="write the transcript here (format from its suffix)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the whole report as one JSON object"
    )


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine options the user gave, under the engines' names; absent flags are left out."""
    return {
        option: getattr(args, attr)
        for attr, option in OPTION_FLAGS.items()
        if getattr(args, attr) is not None
    }


def run(args: argparse.Namespace) -> int:
    logs.setup_logging(args.log_level or logs.DEFAULT_LIBRARY_LEVEL, args.log_format or "text")
    if (args.format or args.output) and (args.all_hosts or args.json):
        raise ValueError("--format/-o write one transcript (fix: drop --all-hosts / --json)")
    if args.config and (args.endpoint or args.curve_keys):
        raise ValueError(
            "--endpoint/--curve-keys reach a running coordinator, --config starts one here "
            "(fix: drop one of them)"
        )
    plan = _plan(args.max_piece)
    # The header only: refuse now, before any host starts. Its warnings are logged by the read
    # that follows, once.
    with open_audio(args.file, log_warnings=False) as audio:
        info = audio.info
    check_limits(info, str(args.file), DEFAULT_MAX_DURATION_S)
    log.info("%s: %s", args.file, info.describe())
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
        client = Client(**arguments.client_arguments(args))
    try:
        if args.format or args.output:
            return _write_transcript(client, plan, args)
        return _report(client, plan, info, args)
    finally:
        client.close()  # before the coordinator: its context waits for every socket to close
        if coord is not None:
            coord.close()


def _plan(max_piece_s: float) -> PiecePlan:
    plan = PiecePlan()
    if max_piece_s != plan.max_piece_s:
        plan = PiecePlan(max_piece_s, search_s=min(plan.search_s, max_piece_s / 3))
    return plan


def _transcribe(
    client: Client, plan: PiecePlan, args: argparse.Namespace, host: str | None
) -> Transcript:
    bar = ProgressBar.for_terminal()
    try:
        return client.transcribe_file(
            args.file,
            model=args.model,
            host=host,
            timeout=args.timeout,
            plan=plan,
            on_progress=bar,
            piece_attempts=args.piece_attempts,
            **engine_options(args),
        )
    finally:
        if bar is not None:
            bar.close()


def _write_transcript(client: Client, plan: PiecePlan, args: argparse.Namespace) -> int:
    transcript = _transcribe(client, plan, args, None)
    fmt = args.format or formats.format_for_path(args.output)
    text = formats.render(transcript, fmt)
    if args.output:
        args.output.write_text(text)
        log.info("wrote %s (%s, %d segments)", args.output, fmt, len(transcript.segments))
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _report(client: Client, plan: PiecePlan, info: AudioInfo, args: argparse.Namespace) -> int:
    targets: list[str | None] = (
        list(hosts_of(client.health(), args.model)) if args.all_hosts else [None]
    )
    outcomes = []
    warnings: dict[str, None] = {}  # each run decodes the file again: each warning once
    for host in targets:  # an error is part of the report: the other hosts still get their turn
        try:
            transcript = _transcribe(client, plan, args, host)
            outcomes.append(outcome_dict(transcript))
            warnings.update(dict.fromkeys(transcript.warnings))
        except OrchestratorError as exc:
            log.debug("transcription on %s failed", host or "any host", exc_info=True)
            outcomes.append({"host": host, "model": args.model, "error": exc.to_wire()})
    health = client.health()  # after the requests: served counts and the hosts' state now
    if args.json:
        report = {
            "file": str(args.file),
            "sample_rate": info.sample_rate,
            "channels": info.channels,
            "duration_s": round(_decoded_s(outcomes, info), 3),
            "audio": asdict(info),
            "warnings": list(warnings),
            "results": outcomes,
            "health": {"status": health_cli.overall_status(health), **health},
        }
        print(json.dumps(report, default=str))
    else:
        print(f"file: {args.file} ({info.describe()})\n")
        for outcome in outcomes:
            print(format_outcome(outcome) + "\n")
        print(health_cli.render(health))
    return EXIT_OK if all("error" not in o for o in outcomes) else EXIT_FAILED


def _decoded_s(outcomes: list[dict[str, Any]], info: AudioInfo) -> float:
    """The audio really transcribed (less than the header says when the file was cut)."""
    return next((o["duration_s"] for o in outcomes if "duration_s" in o), info.duration_s)


def outcome_dict(transcript: Transcript) -> dict[str, Any]:
    """One host's (or the pool's) transcript and figures, JSON-safe."""
    return {
        "host": ",".join(sorted(transcript.hosts)),
        "replicas": dict(transcript.replicas),
        "model": transcript.model,
        "text": transcript.text,
        "language": transcript.language,
        "segments": transcript.to_dict()["segments"],
        "duration_s": round(transcript.duration_s, 3),
        "pieces": transcript.pieces,
        "retries": transcript.retries,
        "wall_s": round(transcript.wall_s, 3),
        "real_time_factor": round(transcript.real_time_factor, 4),
        "timings": {k: round(v, 4) for k, v in transcript.timings.items()},
    }


def format_outcome(outcome: Mapping[str, Any]) -> str:
    """A host's transcript and figures, or its error, as a few readable lines."""
    if "error" in outcome:
        error = outcome["error"]
        return f"== {outcome['host'] or 'any host'}: {outcome['model']} ==\nerror [{error['code']}] {error['message']}"
    t = outcome["timings"]
    replicas = ", ".join(f"{name} {n}" for name, n in sorted(outcome["replicas"].items()))
    return "\n".join(
        [
            f"== {outcome['host']} (pieces per replica: {replicas}): {outcome['model']} ==",
            outcome["text"],
            f"{outcome['pieces']} piece(s) in {outcome['wall_s']:.2f}s "
            f"(real-time factor {outcome['real_time_factor']:.3f}); per piece summed: "
            f"queued {t['queued_s']:.3f}s, compute {t['compute_s']:.3f}s, total {t['total_s']:.3f}s"
            + (f"; language {outcome['language']}" if outcome.get("language") else "")
            + (f"; {outcome['retries']} piece retries" if outcome.get("retries") else ""),
        ]
    )
