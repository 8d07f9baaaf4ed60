"""Keep every serving replica of a model busy with the pieces of one recording.

The coordinator's router already load-balances; what it needs from a long file is enough work
in flight. So the runner sums the capacity (``max_inflight``) of every ready replica of the
model's hosts from one health snapshot and keeps that many pieces in flight: each replica works
on its own pieces while the next ones are read, converted and cut. Memory stays bounded: at most
that many pieces (under 1 MB each) are held, and results are text.

The client is whatever has ``transcribe`` and ``health`` coroutines (``AsyncClient``): this module
does not import it, so the client can import this one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from orchestrator.longform.merge import PieceOutcome, PieceResult, Transcript, merge
from orchestrator.longform.pauses import PauseFinder
from orchestrator.longform.planner import Piece, PiecePlan, plan_pieces
from orchestrator.longform.source import (
    DEFAULT_MAX_DURATION_S,
    AudioSource,
    check_limits,
    open_audio,
    pcm16_blocks,
)
from orchestrator.wire.errors import UnknownModelError

#: Replica states that take new requests (orchestrator.coordinator.supervisor.SERVING).
SERVING_STATES = frozenset({"ready", "busy"})


class Transcriber(Protocol):
    """The two calls the runner makes (``AsyncClient`` has both)."""

    async def transcribe(self, audio: Any, **kwargs: Any) -> Any: ...

    async def health(self, timeout: float = ...) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Progress:
    """Where a long transcription is: audio done of the total, pieces done, time spent."""

    done_s: float
    total_s: float | None
    pieces_done: int
    wall_s: float


ProgressCallback = Callable[[Progress], None]


def capacity(health: Mapping[str, Any], model: str, host: str | None = None) -> int:
    """Requests the model's serving replicas take at once (at least 1: the queue holds the rest)."""
    hosts = set(hosts_of(health, model)) if host is None else {host}
    return max(
        1,
        sum(
            int(r.get("max_inflight") or 1)
            for r in health["replicas"]
            if r["host"] in hosts and r["state"] in SERVING_STATES
        ),
    )


def hosts_of(health: Mapping[str, Any], model: str) -> list[str]:
    """The hosts configured for ``model`` (a name or alias) in fallback order."""
    for name, info in health["models"].items():
        if model == name or model in (info.get("aliases") or ()):
            return list(info["hosts"])
    known = sorted(
        {n for name, info in health["models"].items() for n in (name, *info.get("aliases", ()))}
    )
    raise UnknownModelError(f"unknown model {model!r}; known: {known}", model=model)


async def transcribe_file(
    client: Transcriber,
    source: AudioSource,
    *,
    model: str,
    host: str | None = None,
    timeout: float | None = None,
    plan: PiecePlan | None = None,
    pause_finder: PauseFinder | None = None,
    parallel: int | None = None,
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
    skip_silence: bool = True,
    on_progress: ProgressCallback | None = None,
    **options: Any,
) -> Transcript:
    """Transcribe a recording of any length; see the module docstring.

    ``source`` is a path or a seekable binary file object, in any format
    ``orchestrator.audio.decode`` reads. Its rate and length are checked from its header before
    any request; what the decoder found wrong with the file is in the transcript's ``warnings``. ``parallel`` overrides the in-flight count taken from health; ``host``
    pins every piece to one host; ``options`` go to the engine with every piece. The first piece
    that fails raises its typed error and cancels the rest.
    """
    audio = open_audio(source)
    try:
        check_limits(audio.info, audio.name, max_duration_s)
        if parallel is None:
            parallel = capacity(await client.health(), model, host)
        started = time.monotonic()
        outcomes, timings = await _run_pieces(
            client,
            plan_pieces(pcm16_blocks(audio), plan, pause_finder),
            parallel=max(1, parallel),
            request={"model": model, "host": host, "timeout": timeout, **options},
            skip_silence=skip_silence,
            report=_reporter(on_progress, audio.info.duration_s, started),
        )
        return merge(
            outcomes,
            name=audio.name,
            info=audio.info,
            model=model,
            wall_s=time.monotonic() - started,
            timings=timings,
            warnings=audio.warnings,
            decoded_s=audio.decoded_s,
        )
    finally:
        audio.close()


def _reporter(
    on_progress: ProgressCallback | None, total_s: float | None, started: float
) -> Callable[[float, int], None]:
    def report(done_s: float, pieces_done: int) -> None:
        if on_progress is not None:
            on_progress(Progress(done_s, total_s, pieces_done, time.monotonic() - started))

    return report


async def _run_pieces(
    client: Transcriber,
    pieces: Any,
    *,
    parallel: int,
    request: Mapping[str, Any],
    skip_silence: bool,
    report: Callable[[float, int], None],
) -> tuple[list[PieceOutcome], dict[str, float]]:
    outcomes: list[PieceOutcome] = []
    timings = {"queued_s": 0.0, "load_s": 0.0, "compute_s": 0.0, "total_s": 0.0}
    done_s = 0.0
    in_flight: dict[asyncio.Task[Any], Piece] = {}

    def collect(task: asyncio.Task[Any]) -> None:
        nonlocal done_s
        piece = in_flight.pop(task)
        result: PieceResult = task.result()  # raises the piece's typed error
        outcomes.append(PieceOutcome.of(piece, result))
        for key in timings:
            timings[key] += float(getattr(getattr(result, "timings", None), key, 0.0))
        done_s += piece.duration_s
        report(done_s, len(outcomes))

    try:
        for piece in pieces:
            if skip_silence and piece.is_silent():
                outcomes.append(PieceOutcome.of(piece, None))
                done_s += piece.duration_s
                report(done_s, len(outcomes))
                continue
            while len(in_flight) >= parallel:
                finished, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    collect(task)
            task = asyncio.ensure_future(
                client.transcribe(piece.samples, sample_rate=piece.sample_rate, **request)
            )
            in_flight[task] = piece
        while in_flight:
            finished, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                collect(task)
    finally:
        for task in in_flight:
            task.cancel()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
    return outcomes, timings
