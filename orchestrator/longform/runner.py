"""Keep every serving replica of a model busy with the pieces of one recording.

The coordinator's router already load-balances; what it needs from a long file is enough work
in flight. So the runner sums the capacity (``max_inflight``) of every ready replica of the
model's hosts from one health snapshot and keeps that many pieces in flight: each replica works
on its own pieces while the next ones are read, converted and cut. Memory stays bounded: at most
that many pieces (under 1 MB each) are held, and results are text.

A piece that fails for a reason that says something about a host or the moment (a deadline
passed, a host crashed, no replica serving just then) is tried again on another
host of the model, up to ``piece_attempts`` times (:mod:`.retry` says which failures, where, and
why); each retry is a warning line in the transcript and counted in its ``retries``.

The client is whatever has ``transcribe`` and ``health`` coroutines (``AsyncClient``): this module
does not import it, so the client can import this one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from orchestrator.longform.merge import PieceOutcome, PieceResult, Transcript, merge
from orchestrator.longform.pauses import PauseFinder
from orchestrator.longform.planner import Piece, PiecePlan, plan_pieces
from orchestrator.longform.retry import (
    DEFAULT_PIECE_ATTEMPTS,
    DEFAULT_RETRY_BACKOFF_S,
    Retry,
    RetryPolicy,
    exhausted,
    failed_host,
    is_transient,
    retry_host,
)
from orchestrator.longform.source import (
    DEFAULT_MAX_DURATION_S,
    AudioSource,
    check_limits,
    open_audio,
    pcm16_blocks,
)
from orchestrator.wire.errors import NoHostAvailableError, OrchestratorError, UnknownModelError

log = logging.getLogger("orchestrator.longform")

#: Replica states that take new requests (orchestrator.coordinator.supervisor.SERVING).
SERVING_STATES = frozenset({"ready", "busy"})


class Transcriber(Protocol):
    """The two calls the runner makes (``AsyncClient`` has both)."""

    async def transcribe(self, audio: Any, **kwargs: Any) -> Any: ...

    async def health(self, timeout: float = ...) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Progress:
    """Where a long transcription is: audio done of the total, pieces done, time spent, and
    how many piece attempts were retried so far."""

    done_s: float
    total_s: float | None
    pieces_done: int
    wall_s: float
    retries: int = 0


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
    piece_attempts: int = DEFAULT_PIECE_ATTEMPTS,
    retry_backoff_s: float = DEFAULT_RETRY_BACKOFF_S,
    **options: Any,
) -> Transcript:
    """Transcribe a recording of any length; see the module docstring.

    ``source`` is a path or a seekable binary file object, in any format
    ``orchestrator.audio.decode`` reads. Its rate and length are checked from its header before
    any request; what the decoder found wrong with the file is in the transcript's ``warnings``.
    ``parallel`` overrides the in-flight count taken from health; ``host`` pins every piece, and
    its retries, to one host; ``options`` go to the engine with every piece; ``timeout`` is per
    attempt of a piece. A piece failing transiently is tried up to ``piece_attempts`` times in
    all, ``retry_backoff_s`` apart (:mod:`orchestrator.longform.retry`); when its last attempt
    fails, or at once when the failure is the caller's mistake (bad audio, a bad option, an
    unknown model), its typed error is raised and the rest are cancelled.
    """
    policy = RetryPolicy(piece_attempts, retry_backoff_s)
    audio = open_audio(source)
    try:
        check_limits(audio.info, audio.name, max_duration_s)
        health = await client.health()
        hosts = hosts_of(health, model)
        if host is not None and host not in hosts:
            raise NoHostAvailableError(
                f"host {host!r} does not serve {model!r} (fix: pin one of {hosts}, or none)",
                model=model,
            )
        if parallel is None:
            parallel = capacity(health, model, host)
        started = time.monotonic()
        run = _Run(_reporter(on_progress, audio.info.duration_s, started))
        await _run_pieces(
            client,
            plan_pieces(pcm16_blocks(audio), plan, pause_finder),
            run,
            parallel=max(1, parallel),
            request={"model": model, "host": host, "timeout": timeout, **options},
            skip_silence=skip_silence,
            retrying=_Retrying(policy, hosts, host, run.retried),
        )
        return merge(
            run.outcomes,
            name=audio.name,
            info=audio.info,
            model=model,
            wall_s=time.monotonic() - started,
            timings=run.timings,
            warnings=(*audio.warnings, *(r.line() for r in run.retries)),
            decoded_s=audio.decoded_s,
            retries=len(run.retries),
        )
    finally:
        audio.close()


def _reporter(
    on_progress: ProgressCallback | None, total_s: float | None, started: float
) -> Callable[[float, int, int], None]:
    def report(done_s: float, pieces_done: int, retries: int) -> None:
        if on_progress is not None:
            on_progress(Progress(done_s, total_s, pieces_done, time.monotonic() - started, retries))

    return report


@dataclasses.dataclass
class _Run:
    """What a run has gathered so far: outcomes, summed timings, audio done, retries."""

    report: Callable[[float, int, int], None]
    outcomes: list[PieceOutcome] = dataclasses.field(default_factory=list)
    timings: dict[str, float] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(("queued_s", "load_s", "compute_s", "total_s"), 0.0)
    )
    done_s: float = 0.0
    retries: list[Retry] = dataclasses.field(default_factory=list)

    def finished(self, piece: Piece, result: PieceResult | None) -> None:
        self.outcomes.append(PieceOutcome.of(piece, result))
        for key in self.timings:
            self.timings[key] += float(getattr(getattr(result, "timings", None), key, 0.0))
        self.done_s += piece.duration_s
        self.report(self.done_s, len(self.outcomes), len(self.retries))

    def retried(self, retry: Retry) -> None:
        self.retries.append(retry)
        log.warning("%s", retry.line())
        self.report(self.done_s, len(self.outcomes), len(self.retries))


@dataclasses.dataclass(frozen=True)
class _Retrying:
    """What a piece's attempts need: the policy, the model's hosts, the caller's pin, and where
    to say that a piece is being retried."""

    policy: RetryPolicy
    hosts: Sequence[str]
    pinned: str | None
    on_retry: Callable[[Retry], None]


async def _transcribe_piece(
    client: Transcriber, piece: Piece, request: Mapping[str, Any], retrying: _Retrying
) -> PieceResult:
    """One piece, tried until it succeeds, fails for good, or runs out of attempts."""
    policy, pinned = retrying.policy, retrying.pinned
    host = pinned
    failed: list[str] = []  # hosts that failed this piece, in order: avoided by its retries
    attempt = 1
    while True:
        try:
            return await client.transcribe(
                piece.samples, sample_rate=piece.sample_rate, **{**request, "host": host}
            )
        except OrchestratorError as err:
            chosen_here = host is not None and pinned is None
            if not is_transient(err, host_chosen_here=chosen_here):
                raise  # the caller's mistake (or a bug): the same on any host, at once
            culprit = host or failed_host(err, retrying.hosts)
            if culprit is not None and culprit not in failed:
                failed.append(culprit)
            if attempt >= policy.attempts:
                raise exhausted(err, piece.start_s, piece.end_s, attempt, failed) from err
            host = retry_host(retrying.hosts, failed, pinned)
            attempt += 1
            retry = Retry(
                piece.start_s, piece.end_s, attempt, policy.attempts, str(err.code), culprit, host
            )
            retrying.on_retry(retry)
        await asyncio.sleep(policy.backoff_s)


async def _run_pieces(
    client: Transcriber,
    pieces: Any,
    run: _Run,
    *,
    parallel: int,
    request: Mapping[str, Any],
    skip_silence: bool,
    retrying: _Retrying,
) -> None:
    in_flight: dict[asyncio.Task[Any], Piece] = {}

    def collect(task: asyncio.Task[Any]) -> None:
        piece = in_flight.pop(task)
        run.finished(piece, task.result())  # task.result() raises the piece's typed error

    try:
        for piece in pieces:
            if skip_silence and piece.is_silent():
                run.finished(piece, None)
                continue
            while len(in_flight) >= parallel:
                finished, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    collect(task)
            task = asyncio.ensure_future(_transcribe_piece(client, piece, request, retrying))
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
