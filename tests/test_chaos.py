"""Chaos suite: streams and requests keep their promises while hosts are killed, frozen and bloated.

For a bounded time a coordinator with five synthetic host processes (model ``m1`` on host ``a``,
two replicas, falling back to ``b``; model ``m2`` on host ``c``, two replicas; each with an alias)
serves many concurrent real-time streams (20 ms chunks of tone bursts and pauses) and one-shot
requests, while a driver sends SIGKILL, SIGSTOP/SIGCONT and memory blow-ups (a request that makes
its host allocate past ``memory_limit_mb``) to random host processes.

It passes when

- every one-shot request got its result (the fingerprint of its own audio) or a typed
  ``OrchestratorError`` by its deadline, plus a small grace;
- every stream's finals hold each burst exactly once, each final's text being the fingerprint of
  exactly the audio sent at its ``audio_offset``/``n_samples`` (tests/stream_support.py); the few
  streams that ended with an error got a typed one, and their finals so far hold the same promise;
- the coordinator never crashed nor logged an error, holds no leftover request or stream, and its
  open file descriptors, threads and RSS came back to their starting level;
- after shutdown no host process remains.

The figures (requests, outcomes by code, streams, faults by kind, restarts, max failover time) are
printed (``pytest -s``), logged, and recorded as the test's ``chaos_figures`` property.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import gc
import json
import logging
import os
import time
from typing import Any

import numpy as np
import psutil
import pytest
import zmq

from orchestrator.client import AsyncClient, AsyncStream, StreamEvent
from orchestrator.coordinator import Coordinator
from orchestrator.coordinator.config import Config
from orchestrator.errors import ErrorCode, OrchestratorError
from stream_support import (
    CHUNK_MS,
    SpeechLike,
    check_finals,
    check_partials,
    finals_of,
    speech_like,
)
from support import (
    FAST_RESTART,
    assert_fingerprint,
    assert_gone,
    make_config,
    running,
    synthetic_host,
    tone_pcm16,
    wait_for,
)

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

RATE = 16_000
CHAOS_S = 30.0
STREAM_WORKERS = 6
REQUEST_WORKERS = 4
#: A fault every this many seconds, of a random kind, to a random live host process.
FAULT_INTERVAL_S = (0.3, 1.0)
#: How long a SIGSTOPped host stays frozen: shorter or longer than heartbeat liveness (1 s).
FROZEN_S = (0.3, 1.8)
MEMORY_LIMIT_MB = 200
LEAK_MB = 300
REQUEST_TIMEOUT_S = 4.0
#: A typed answer may come this much after the deadline (the coordinator checks deadlines on
#: each 50 ms tick; the event loop here is busy with six real-time streams).
DEADLINE_GRACE_S = 1.0
STREAM_FAILOVER_TIMEOUT_S = 8.0
END_SILENCE_S = 0.4
#: At most this fraction of streams may end with a typed error (only when every host died).
MAX_FAILED_STREAM_FRACTION = 0.1
#: Back to the starting level, within: a few descriptors or threads in flux, allocator slack.
FD_TOLERANCE = 8
THREAD_TOLERANCE = 2
RSS_TOLERANCE_MB = 48.0
SETTLE_TIMEOUT_S = 30.0
#: Hosts here are killed on purpose far more often than any restart policy would allow.
CHAOS_RESTART = {**FAST_RESTART, "max_restarts": 1000}
MODELS = {"m1": ("m1", "speech"), "m2": ("m2", "other")}


def chaos_config() -> Config:
    def host(model: str, replicas: int) -> dict[str, Any]:
        return synthetic_host(
            {model: "synthetic"},
            replicas=replicas,
            max_inflight=4,
            memory_limit_mb=MEMORY_LIMIT_MB,
            restart=CHAOS_RESTART,
        )

    return make_config(
        {"a": host("m1", 2), "b": host("m1", 1), "c": host("m2", 2)},
        models={
            "m1": {"hosts": ["a", "b"], "aliases": ["speech"]},
            "m2": {"hosts": ["c"], "aliases": ["other"]},
        },
        stream_failover_timeout_s=STREAM_FAILOVER_TIMEOUT_S,
    )


# ---------------------------------------------------------------------------------- records
@dataclasses.dataclass
class RequestRecord:
    kind: str  # "request" or "leak"
    outcome: str  # "ok" or an error code
    elapsed_s: float
    timeout_s: float
    problem: str = ""


@dataclasses.dataclass
class StreamRecord:
    model: str
    sent: SpeechLike
    events: list[StreamEvent] = dataclasses.field(default_factory=list)
    #: The typed error that ended it, if one did.
    error: OrchestratorError | None = None
    problem: str = ""


@dataclasses.dataclass
class Resources:
    fds: int
    threads: int
    rss_mb: float

    @classmethod
    def now(cls) -> Resources:
        gc.collect()
        me = psutil.Process(os.getpid())
        return cls(me.num_fds(), me.num_threads(), me.memory_info().rss / 2**20)

    def back_to(self, start: Resources) -> bool:
        return (
            self.fds <= start.fds + FD_TOLERANCE
            and self.threads <= start.threads + THREAD_TOLERANCE
            and self.rss_mb <= start.rss_mb + RSS_TOLERANCE_MB
        )

    @classmethod
    def settled(cls, start: Resources) -> Resources:
        """Measure until back to ``start`` or out of patience (a dead host's pipes and threads
        take a moment to go)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while not (now := cls.now()).back_to(start) and time.monotonic() < deadline:
            time.sleep(0.2)
        return now


@dataclasses.dataclass
class Chaos:
    """Everything one run did and saw."""

    coord: Coordinator
    client: AsyncClient
    rng: np.random.Generator
    until: float
    #: One thread for blocking coordinator calls, so the default executor never grows mid-run.
    pool: concurrent.futures.ThreadPoolExecutor
    requests: list[RequestRecord] = dataclasses.field(default_factory=list)
    streams: list[StreamRecord] = dataclasses.field(default_factory=list)
    faults: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    pids: set[int] = dataclasses.field(default_factory=set)
    frozen: list[psutil.Process] = dataclasses.field(default_factory=list)

    def running(self) -> bool:
        return time.monotonic() < self.until

    async def health(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        health = await loop.run_in_executor(self.pool, self.coord.health)
        self.pids.update(r["pid"] for r in health["replicas"] if r["pid"])
        return health


# ---------------------------------------------------------------------------------- one-shots
async def timed_request(chaos: Chaos, kind: str, model: str, timeout_s: float, **kw: Any) -> None:
    clip = tone_pcm16(int(chaos.rng.integers(800, 16_000)), seed=int(chaos.rng.integers(1 << 30)))
    started = time.monotonic()
    problem = ""
    try:
        result = await chaos.client.transcribe(
            clip.tobytes(), sample_rate=RATE, model=model, timeout=timeout_s, **kw
        )
        outcome = "ok"
        try:
            assert_fingerprint(result.text, clip)
        except AssertionError as exc:
            problem = f"wrong text: {exc}"
    except OrchestratorError as exc:
        outcome = str(exc.code)
    elapsed = time.monotonic() - started
    if elapsed > timeout_s + DEADLINE_GRACE_S:
        problem = f"answered ({outcome}) after {elapsed:.2f}s, deadline {timeout_s}s"
    chaos.requests.append(RequestRecord(kind, outcome, elapsed, timeout_s, problem))


async def request_worker(chaos: Chaos) -> None:
    names = [name for aliases in MODELS.values() for name in aliases]
    while chaos.running():
        model = str(chaos.rng.choice(names))
        context = "delay=0.2" if chaos.rng.random() < 0.1 else ""
        await timed_request(chaos, "request", model, REQUEST_TIMEOUT_S, context=context)
        await asyncio.sleep(float(chaos.rng.uniform(0.02, 0.1)))


# ---------------------------------------------------------------------------------- streams
async def run_stream(chaos: Chaos, model: str, sent: SpeechLike) -> StreamRecord:
    record = StreamRecord(model, sent)
    stream: AsyncStream = await chaos.client.stream(model=model, sample_rate=RATE).open()
    ended = asyncio.Event()

    async def send() -> None:
        start = time.monotonic()
        for i, chunk in enumerate(sent.chunks()):
            if ended.is_set():
                return
            await asyncio.sleep(max(0.0, start + i * CHUNK_MS / 1000 - time.monotonic()))
            await stream.send(chunk)
        await stream.close()

    sender = asyncio.ensure_future(send())
    try:
        async with asyncio.timeout(sent.duration_s + STREAM_FAILOVER_TIMEOUT_S + 20.0):
            while not stream.closed:
                event = await stream.next_event()
                record.events.append(event)
                if event.type != "error":
                    continue
                code = (event.raw.get("error") or {}).get("code")
                if code not in set(ErrorCode) or code == ErrorCode.INTERNAL:
                    record.problem = f"untyped error event {dict(event.raw)}"
                if event.raw.get("final") or len(record.events) == 1:  # the stream ended
                    record.error = event.error
                    ended.set()
                    if len(record.events) == 1:  # refused at open: no "closed" follows
                        break
                elif not record.problem:
                    record.problem = f"error mid-stream {dict(event.raw)}"
    except TimeoutError:
        record.problem = f"no end after {len(record.events)} events"
    ended.set()
    await sender
    return record


async def stream_worker(chaos: Chaos, index: int) -> None:
    names = MODELS["m1"] if index % 3 else MODELS["m2"]
    while chaos.running():
        sent = speech_like(
            bursts=int(chaos.rng.integers(2, 6)),
            burst_s=float(chaos.rng.uniform(0.3, 0.9)),
            silence_s=float(chaos.rng.uniform(0.5, 0.8)),
            seed=int(chaos.rng.integers(1 << 30)),
        )
        chaos.streams.append(await run_stream(chaos, names[len(chaos.streams) % 2], sent))


def check_stream(record: StreamRecord) -> str:
    """What broke the stream's promise, or "" (its finals are checked against what was sent)."""
    if record.problem:
        return record.problem
    finals = finals_of(record.events)
    sent, events = record.sent, record.events
    if record.error is not None:  # ended early: only the bursts its finals reached are owed
        sent = dataclasses.replace(sent, bursts=sent.bursts[: len(finals)])
        done = {f["utterance"] for f in finals}
        events = [e for e in events if e.type != "partial" or e.utterance in done]
    try:
        check_finals(finals, sent, end_silence_s=END_SILENCE_S)
        check_partials(events, sent)
    except (AssertionError, KeyError) as exc:
        story = [
            (e.type, e.raw.get("utterance"), e.raw.get("audio_offset"), e.raw.get("n_samples"),
             e.raw.get("replica") or e.host)
            for e in record.events if e.type != "partial" or e is record.events[-1]
        ]  # fmt: skip
        return (
            f"{type(exc).__name__}: {exc}; ended by {record.error!r}; bursts {sent.bursts}; {story}"
        )
    return ""


# ---------------------------------------------------------------------------------- faults
async def fault_driver(chaos: Chaos) -> None:
    thaws: list[asyncio.Future[None]] = []
    leaks: list[asyncio.Future[None]] = []
    while chaos.running():
        await asyncio.sleep(float(chaos.rng.uniform(*FAULT_INTERVAL_S)))
        live = [r for r in (await chaos.health())["replicas"] if r["pid"]]
        if not live:
            continue
        victim = live[int(chaos.rng.integers(len(live)))]
        kind = str(chaos.rng.choice(["sigkill", "sigstop", "memory"], p=[0.4, 0.35, 0.25]))
        try:
            proc = psutil.Process(victim["pid"])
            if kind == "sigkill":
                proc.kill()
            elif kind == "sigstop":
                proc.suspend()
                chaos.frozen.append(proc)
                thaws.append(asyncio.ensure_future(thaw(proc, chaos.rng.uniform(*FROZEN_S))))
            else:
                model = next(iter(victim["models"]))  # StopIteration: not loaded yet
                leaks.append(
                    asyncio.ensure_future(
                        timed_request(
                            chaos, "leak", model, REQUEST_TIMEOUT_S,
                            host=victim["host"], context=f"leak={LEAK_MB}",
                        )
                    )
                )  # fmt: skip
        except (psutil.Error, StopIteration):
            continue  # it died (or is not ready) before we got to it
        chaos.faults[kind] += 1
    await asyncio.gather(*thaws, *leaks)


async def thaw(proc: psutil.Process, after_s: float) -> None:
    await asyncio.sleep(after_s)
    with contextlib.suppress(psutil.Error):  # the supervisor may have recycled it meanwhile
        proc.resume()


# ---------------------------------------------------------------------------------- the run
async def warm_up(client: AsyncClient) -> None:
    """One request and one stream per model, so lazily made things exist before the baseline."""
    for model in MODELS:
        pcm = tone_pcm16(1600, seed=1)
        assert_fingerprint(
            (await client.transcribe(pcm.tobytes(), sample_rate=RATE, model=model)).text, pcm
        )
        sent = speech_like(bursts=1, seed=2)
        async with client.stream(model=model, sample_rate=RATE) as stream:
            for chunk in sent.chunks():
                await stream.send(chunk)
            await stream.close()
            events = [event async for event in stream]
        check_finals(finals_of(events), sent, end_silence_s=END_SILENCE_S)


async def run_chaos(coord: Coordinator, steady: list[Resources]) -> Chaos:
    client = coord.client()
    await warm_up(client)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="chaos-health") as pool:
        await asyncio.get_running_loop().run_in_executor(pool, coord.health)
        steady.append(Resources.now())
        chaos = Chaos(
            coord, client, np.random.default_rng(20_240_601), time.monotonic() + CHAOS_S, pool
        )
        await asyncio.gather(
            fault_driver(chaos),
            *(stream_worker(chaos, i) for i in range(STREAM_WORKERS)),
            *(request_worker(chaos) for _ in range(REQUEST_WORKERS)),
        )
        for proc in chaos.frozen:
            with contextlib.suppress(psutil.Error):
                proc.resume()
        await chaos.health()
        await asyncio.get_running_loop().run_in_executor(
            pool,
            lambda: wait_for(lambda: all_ready(coord), SETTLE_TIMEOUT_S, "every replica ready"),
        )
        await warm_up(client)  # and it still serves both models, streams included
        await chaos.health()
        steady.append(Resources.settled(steady[0]))
    await client.aclose()
    return chaos


def all_ready(coord: Coordinator) -> bool:
    return all(r["state"] == "ready" for r in coord.health()["replicas"])


def hosts_of(endpoint: str) -> list[int]:
    """Live child processes connected to ``endpoint``: any host we never saw in a snapshot too."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if endpoint in proc.cmdline() and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
    return found


def leftovers(broker: Any) -> dict[str, int]:
    return {
        "requests": len(broker.requests.inflight),
        "queued": len(broker.requests.pending),
        "streams": len(broker.streams.streams),
        "stream_clients": len(broker.streams.by_client),
    }


def figures(chaos: Chaos, health: dict[str, Any], resources: list[Resources]) -> dict[str, Any]:
    by_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for r in chaos.requests:
        by_kind[r.kind][r.outcome] += 1
    ended = collections.Counter(str(s.error.code) for s in chaos.streams if s.error is not None)
    return {
        "requests": sum(by_kind["request"].values()),
        "requests_ok": by_kind["request"]["ok"],
        "request_errors_by_code": {k: v for k, v in by_kind["request"].items() if k != "ok"},
        "memory_blowup_requests": dict(by_kind["leak"]),
        "max_request_latency_s": round(max((r.elapsed_s for r in chaos.requests), default=0.0), 3),
        "streams": len(chaos.streams),
        "streams_ended_by_error": dict(ended),
        "stream_audio_s": round(sum(s.sent.duration_s for s in chaos.streams), 1),
        "finals_checked": sum(len(finals_of(s.events)) for s in chaos.streams),
        "host_changes": sum(e.type == "host_changed" for s in chaos.streams for e in s.events),
        "faults": dict(chaos.faults),
        "restarts": sum(r["restarts"] for r in health["replicas"]),
        "restarts_by_replica": {r["name"]: r["restarts"] for r in health["replicas"]},
        "host_processes": len(chaos.pids),
        "max_failover_s": health["coordinator"]["streams"]["max_failover_s"],
        "stream_failovers": health["coordinator"]["streams"]["failovers"],
        "coordinator_errors_by_code": health["coordinator"]["errors_by_code"],
        "coordinator_before_during_after": [dataclasses.asdict(r) for r in resources],
    }


def start_pyzmq_garbage_collector() -> None:
    """Send one large zero-copy frame, as the broker does with any frame over 64 KiB.

    pyzmq then starts, once per process, a thread with a context of its own to track such frames
    (zmq.utils.garbage). Started before the first measurement, it is part of the baseline.
    """
    ctx = zmq.Context()
    sender, receiver = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    sender.bind("inproc://prime-zero-copy")
    receiver.connect("inproc://prime-zero-copy")
    sender.send(bytes(2 * zmq.COPY_THRESHOLD), copy=False)
    receiver.recv()
    sender.close(linger=0)
    receiver.close(linger=0)
    ctx.term()


def test_streams_and_requests_survive_kills_freezes_and_memory_blowups(
    caplog: pytest.LogCaptureFixture, record_property: Any
) -> None:
    caplog.set_level(logging.INFO, logger=__name__)
    start_pyzmq_garbage_collector()
    resources = [Resources.now()]
    steady: list[Resources] = []
    with running(chaos_config()) as coord:
        assert coord.run_dir is not None
        endpoint = f"ipc://{coord.run_dir}/hosts.sock"
        chaos = asyncio.run(run_chaos(coord, steady))
        health = coord.health()
        left = coord.call(leftovers)
        assert coord._thread is not None and coord._thread.is_alive(), "the coordinator crashed"
    resources += [*steady, Resources.settled(resources[0])]
    assert_gone(chaos.pids)
    assert not hosts_of(endpoint), "host processes left after shutdown"

    report = figures(chaos, health, resources)
    text = json.dumps(report, indent=1, sort_keys=True)
    print(f"\nchaos figures:\n{text}")
    log.info("chaos figures: %s", text)
    record_property("chaos_figures", json.dumps(report, sort_keys=True))

    late = [r for r in chaos.requests if r.problem]
    assert not late, late[:5]
    assert report["requests"] >= 200 and report["streams"] >= 20, "the load never happened"
    assert sum(chaos.faults.values()) >= 15 and set(chaos.faults) == {
        "sigkill",
        "sigstop",
        "memory",
    }
    assert report["restarts"] >= 10, "faults that restart nothing were not faults"
    # Most requests are served: failures are the requests caught on a dying host, not the rule.
    assert report["requests_ok"] >= 0.7 * report["requests"], report["request_errors_by_code"]
    broken = [(i, problem) for i, s in enumerate(chaos.streams) if (problem := check_stream(s))]
    assert not broken, broken[:3]
    failed = sum(s.error is not None for s in chaos.streams)
    assert failed <= MAX_FAILED_STREAM_FRACTION * len(chaos.streams), report[
        "streams_ended_by_error"
    ]
    assert report["host_changes"] >= 5, "no stream ever failed over: the faults missed them"

    assert left == {"requests": 0, "queued": 0, "streams": 0, "stream_clients": 0}, left
    broken_logs = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith("orchestrator")
    ]
    assert not broken_logs, broken_logs[:5]
    before, running_before, running_after, after = resources
    assert running_after.back_to(running_before), "fds, threads or RSS grew while serving"
    assert after.back_to(before), "fds, threads or RSS left behind after shutdown"
