"""Routing: what a 20 ms PCM16 chunk (640 bytes) costs on the full path, beside bare pyzmq.

Full path: client -> coordinator -> synthetic host (fingerprints the audio: no model) -> back,
as a one-shot ``transcribe``. Measured embedded (client on inproc, coordinator on a thread of
this process, host in a child) and standalone (this process is the client; ``python -m
orchestrator serve`` in a child, its host in a grandchild; ipc both hops).

Baselines, in the same process tree and with the same client style (sync against sync, asyncio
against asyncio, identical measuring loops from ``bench.loops``):

* bare broker, thread: a ROUTER/ROUTER forwarder on a thread of this process, inproc client,
  echo worker in a child -- the shape of the embedded coordinator;
* bare broker, process: the same forwarder in a child, its worker in another -- three processes
  like the standalone coordinator;
* bare echo: a DEALER straight to a ROUTER echo in a child -- the floor of any ipc round trip;
* signed floor, thread and 3 processes: the two bare broker shapes doing exactly the work the
  protocol obliges every hop to do (``bench.signed``: sign and verify every message with the
  real codec, refuse replays, JSON headers, a fresh request number and key on the host side) and
  nothing else, with our processes' cheap socket calls and clients built like ours. Its rows
  split each gap in two: signed floor vs bare broker is the best any implementation of the
  protocol can score against the targets' baseline (the protocol's cost, less what the cheaper
  calls save against plain pyzmq), ours vs signed floor what our code adds above it, like with
  like (routing tables, deadlines, typed bodies, audio decoding, the engine).

The baselines' workers answer without reading the audio; our synthetic host fingerprints it (its
model's work). A second standalone coordinator measures ours like for like: its synthetic engine
runs with ``answer_once`` (each request gets the first request's answer, no work per request),
so its rows are the routing alone: our client, coordinator and host runtime (decoding the audio
included) against the baselines.

CPU per request is read for pipelined requests and for lone round trips (sync, one in flight):
a lone request finds every process asleep and pays its wake-ups and cold caches, which is what
its latency is made of.

Like with like: the bare broker forwards every request at once, so our synthetic host runs with
``max_inflight`` equal to the pipeline window and the coordinator forwards the whole window too.
With the default ``max_inflight`` (4, right for real engines: work a host cannot start stays in
the coordinator, where failover can still move it) the coordinator queues the rest and each
reply dispatches the next; a fourth standalone coordinator with that default measures what the
queue costs (its pipelined throughput and CPU per request, asyncio only).

Every target is measured ``rounds`` times in alternation and the samples pooled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from bench import harness, host_alone, loops
from bench.bare import ThreadBroker, wire_calls
from bench.bare_clients import BareAsyncClient, BareSyncClient
from bench.procstat import CpuMeter
from bench.profiles import Profile
from bench.report import Figure, Target
from bench.signed import Keys, SignedRelay
from bench.signed_clients import SignedAsyncClient, SignedExchange, SignedSyncClient
from bench.stats import percentile, summary
from orchestrator.client import DEFAULT_TIMEOUT_S, AsyncClient, Client
from orchestrator.coordinator import Coordinator

GROUP = "routing"
MODEL = "echo"
P50_TARGET = Target("ratio", "<=", 1.3)
THROUGHPUT_TARGET = Target("ratio", ">=", 0.7)
#: The seven ends a round trip is measured against (ours twice, the baselines five times).
EMBEDDED, STANDALONE = "ours embedded", "ours standalone"
BARE_THREAD, BARE_PROCESS, BARE_ECHO = (
    "bare broker (thread)",
    "bare broker (3 processes)",
    "bare echo",
)
SIGNED_THREAD, SIGNED_PROCESS = "signed floor (thread)", "signed floor (3 processes)"
#: Ours standalone with the host's default max_inflight: the coordinator queues what is over it.
QUEUED = "ours standalone, default max_inflight"
#: Ours standalone whose model does no work per request (the engine's ``answer_once``).
NO_MODEL_WORK = "ours standalone, no model work"
#: The order ends are measured in, each round: each of ours beside its two baselines.
MEASURE_ORDER = (
    EMBEDDED, BARE_THREAD, SIGNED_THREAD,
    STANDALONE, NO_MODEL_WORK, BARE_PROCESS, SIGNED_PROCESS, BARE_ECHO,
)  # fmt: skip
#: The asyncio rounds measure the queued coordinator too (pipelined is where it queues).
ASYNC_ORDER = (*MEASURE_ORDER, QUEUED)
#: Ours, the bare broker and the signed floor of one shape: embedded, then standalone.
SHAPES = (
    ("embedded", EMBEDDED, BARE_THREAD, SIGNED_THREAD),
    ("standalone", STANDALONE, BARE_PROCESS, SIGNED_PROCESS),
)
CLIENT, MIDDLE, FAR = "client", "coordinator", "host"


def chunk_payload() -> bytes:
    """20 ms of 16 kHz PCM16 noise: 320 samples, 640 bytes."""
    rng = np.random.default_rng(20)
    return rng.integers(-8000, 8000, harness.CHUNK_SAMPLES, dtype=np.int16).astype("<i2").tobytes()


def _transcribe(client: Client | AsyncClient, payload: bytes) -> Callable[[], Any]:
    """One request through our client, as every measuring loop sends it."""
    return lambda: client.transcribe(payload, sample_rate=harness.SAMPLE_RATE, model=MODEL)


class _Ends:
    """Every server end of the comparison, measured in rounds.

    The baselines are started once. Ours are started for each measurement and stopped after
    it: idle, a coordinator and its host still wake to heartbeat, and two idle pairs beside the
    one measured weighed about 10-20% on its CPU per request (against 0-5% on the bare
    broker's, whose idle processes wake twice a second).
    """

    def __init__(self, stack: contextlib.ExitStack, window: int) -> None:
        folder = stack.enter_context(harness.socket_folder())
        forwards_all = harness.synthetic_host(max_inflight=window)
        #: The host table each of ours runs (the embedded coordinator's is the standalone one's).
        self._hosts = {
            EMBEDDED: forwards_all,
            STANDALONE: forwards_all,
            NO_MODEL_WORK: {**forwards_all, "engine_options": {"answer_once": True}},
            QUEUED: harness.synthetic_host(),
        }
        #: The queued end's host's default max_inflight (read when that end first runs).
        self.default_max_inflight = 0
        self.ctx: zmq.Context[Any] = zmq.Context()
        stack.callback(self.ctx.destroy, linger=0)
        thread_back = harness.ipc_endpoint(folder, "thread-back")
        self.thread_front = "inproc://bare-broker"
        broker = ThreadBroker(self.ctx, self.thread_front, thread_back)
        stack.callback(broker.close)
        stack.enter_context(harness.bare_child("worker", thread_back))
        self.process_front = harness.ipc_endpoint(folder, "front")
        back = harness.ipc_endpoint(folder, "back")
        broker_child = stack.enter_context(harness.bare_child("broker", self.process_front, back))
        worker_child = stack.enter_context(harness.bare_child("worker", back))
        self.keys = Keys.new()
        signed_back = harness.ipc_endpoint(folder, "signed-back")
        self.signed_thread_front = "inproc://signed-broker"
        signed = ThreadBroker(
            self.ctx, self.signed_thread_front, signed_back, SignedRelay(self.keys), wire_calls()
        )
        stack.callback(signed.close)
        stack.enter_context(harness.signed_child(self.keys.worker_env(), "worker", signed_back))
        self.signed_process_front = harness.ipc_endpoint(folder, "signed-front")
        signed_process_back = harness.ipc_endpoint(folder, "signed-process-back")
        signed_broker = stack.enter_context(
            harness.signed_child(
                self.keys.broker_env(), "broker", self.signed_process_front, signed_process_back
            )
        )
        signed_worker = stack.enter_context(
            harness.signed_child(self.keys.worker_env(), "worker", signed_process_back)
        )
        bare_pids = {CLIENT: os.getpid(), MIDDLE: broker_child.pid, FAR: worker_child.pid}
        signed_pids = {CLIENT: os.getpid(), MIDDLE: signed_broker.pid, FAR: signed_worker.pid}

        def meters() -> dict[str, CpuMeter]:
            """A meter per metered end: client, middle and far process (ours watch each run's
            processes: see ``running``)."""
            return {
                STANDALONE: CpuMeter(),
                NO_MODEL_WORK: CpuMeter(),
                BARE_PROCESS: CpuMeter(bare_pids),
                SIGNED_PROCESS: CpuMeter(signed_pids),
            }

        #: What the pipelined runs cost (the queued coordinator's too), and the lone round trips.
        self.cpu = {**meters(), QUEUED: CpuMeter()}
        self.sync_cpu = meters()
        self.echo = harness.ipc_endpoint(folder, "echo")
        stack.enter_context(harness.bare_child("echo", self.echo))

    @contextlib.contextmanager
    def running(self, name: str) -> Iterator[Coordinator | Path]:
        """One of ours started for its measurement (the embedded coordinator, or a standalone
        one's connection file), stopped after it."""
        raw = harness.raw_config({"syn": self._hosts[name]})
        if name == EMBEDDED:
            with harness.embedded(harness.config(raw)) as coord:
                yield coord
            return
        with harness.standalone(raw) as (child, connection_file):
            replica = _only_replica(connection_file)
            if name == QUEUED:
                self.default_max_inflight = int(replica["max_inflight"])
            pids = {CLIENT: os.getpid(), MIDDLE: child.pid, FAR: int(replica["pid"])}
            for meters in (self.cpu, self.sync_cpu):
                if name in meters:
                    meters[name].watch(pids)
            yield connection_file

    def metered(
        self, end: str, requests: int, *, lone: bool = False
    ) -> contextlib.AbstractContextManager[None] | None:
        """The meter of ``end``'s pipelined runs (``lone``: its sync round trips) over a block
        serving ``requests`` requests; None for an end not metered."""
        meter = (self.sync_cpu if lone else self.cpu).get(end)
        return None if meter is None else meter.serving(requests)

    def cpu_per_request(self, end: str, role: str | None = None, *, lone: bool = False) -> float:
        """CPU seconds per pipelined request (``lone``: per sync round trip) of one process of
        ``end`` (None: all three)."""
        return (self.sync_cpu if lone else self.cpu)[end].per_request(role)

    def signed_exchange(self) -> SignedExchange:
        """A signed-floor client's protocol side: the request our client sends, signed."""
        return SignedExchange(
            self.keys.client,
            model=MODEL,
            sample_rate=harness.SAMPLE_RATE,
            timeout_s=DEFAULT_TIMEOUT_S,
        )

    def baseline_clients(self, sync: bool) -> dict[str, Any]:
        """A client of each baseline, of one style: the bare ones or, on the signed floor's
        ends, the signed ones."""
        bare, signed = (
            (BareSyncClient, SignedSyncClient) if sync else (BareAsyncClient, SignedAsyncClient)
        )
        return {
            BARE_THREAD: bare(self.ctx, self.thread_front),
            SIGNED_THREAD: signed(self.ctx, self.signed_thread_front, self.signed_exchange()),
            BARE_PROCESS: bare(self.ctx, self.process_front),
            SIGNED_PROCESS: signed(self.ctx, self.signed_process_front, self.signed_exchange()),
            BARE_ECHO: bare(self.ctx, self.echo),
        }

    def sync_round_trips(
        self, stack: contextlib.ExitStack, payload: bytes
    ) -> Iterator[tuple[str, Callable[[], Any]]]:
        """Every end's one-request callable in measuring order; each of ours runs (started,
        then stopped) only until the next end is asked for."""
        baselines = {}
        for name, client in self.baseline_clients(sync=True).items():
            stack.callback(client.close)
            baselines[name] = lambda c=client: c.round_trip(payload)
        for name in MEASURE_ORDER:
            if name in baselines:
                yield name, baselines[name]
                continue
            with self.running(name) as end, contextlib.ExitStack() as clients:
                if isinstance(end, Coordinator):
                    client = end.sync_client()
                else:
                    client = clients.enter_context(Client(connection_file=end))
                yield name, _transcribe(client, payload)

    async def async_requests(
        self, stack: contextlib.AsyncExitStack, payload: bytes
    ) -> AsyncIterator[tuple[str, Callable[[], Awaitable[Any]]]]:
        """The asyncio twin of :meth:`sync_round_trips`."""
        baselines = {}
        for name, client in self.baseline_clients(sync=False).items():
            stack.push_async_callback(client.aclose)
            baselines[name] = lambda c=client: c.request(payload)
        for name in ASYNC_ORDER:
            if name in baselines:
                yield name, baselines[name]
                continue
            with self.running(name) as end:
                if isinstance(end, Coordinator):
                    yield name, _transcribe(end.client(), payload)
                    continue
                async with AsyncClient(connection_file=end) as client:
                    yield name, _transcribe(client, payload)


def run(profile: Profile) -> list[Figure]:
    payload = chunk_payload()
    sync_lat: dict[str, list[float]] = defaultdict(list)
    async_lat: dict[str, list[float]] = defaultdict(list)
    rates: dict[str, list[float]] = defaultdict(list)
    pipelined_lat: dict[str, list[float]] = defaultdict(list)
    with contextlib.ExitStack() as stack:
        ends = _Ends(stack, profile.pipeline_window)
        for _ in range(profile.rounds):
            with contextlib.ExitStack() as round_stack:
                for name, fn in ends.sync_round_trips(round_stack, payload):
                    sync_lat[name] += loops.sync_round_trips(
                        fn,
                        profile.round_trips,
                        profile.warmup_round_trips,
                        measured=ends.metered(name, profile.round_trips, lone=True),
                    )
            asyncio.run(_async_round(ends, payload, profile, async_lat, rates, pipelined_lat))
        figures = (
            _figures(sync_lat, async_lat, rates, pipelined_lat, profile)
            + _cpu_figures(ends)
            + _queue_figures(rates, ends, profile)
            + _floor_figures(sync_lat, async_lat, rates, ends, profile)
        )
    # With every process above gone: the host alone, in this process.
    return figures + host_alone.figures(payload, 4 * profile.pipelined_requests, profile.rounds + 1)


async def _async_round(
    ends: _Ends,
    payload: bytes,
    profile: Profile,
    latencies: dict[str, list[float]],
    rates: dict[str, list[float]],
    pipelined_latencies: dict[str, list[float]],
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        async for name, request in ends.async_requests(stack, payload):
            latencies[name] += await loops.async_round_trips(
                request, profile.round_trips, profile.warmup_round_trips
            )
            result = await loops.pipelined(
                request,
                profile.pipelined_requests,
                profile.pipeline_window,
                profile.warmup_round_trips,
                measured=ends.metered(name, profile.pipelined_requests),
            )
            rates[name].append(result.rate_per_s)
            pipelined_latencies[name] += result.latencies_s


def _figures(
    sync_lat: dict[str, list[float]],
    async_lat: dict[str, list[float]],
    rates: dict[str, list[float]],
    pipelined_lat: dict[str, list[float]],
    profile: Profile,
) -> list[Figure]:
    figures: list[Figure] = []
    pairs = ((EMBEDDED, BARE_THREAD), (STANDALONE, BARE_PROCESS))
    for style, lat in (("sync", sync_lat), ("async", async_lat)):
        for ours, bare in pairs:
            where = ours.split()[-1]
            for q in (50, 99):
                figures.append(
                    Figure(
                        GROUP,
                        f"{style} round trip p{q}, {where}",
                        "s",
                        value=percentile(lat[ours], q),
                        baseline=percentile(lat[bare], q),
                        baseline_label=bare,
                        target=P50_TARGET if q == 50 else None,
                        details={"ours": summary(lat[ours]), "baseline": summary(lat[bare])},
                    )
                )
        figures.append(
            Figure(
                GROUP,
                f"{style} round trip p50, standalone vs bare echo",
                "s",
                value=percentile(lat[STANDALONE], 50),
                baseline=percentile(lat[BARE_ECHO], 50),
                baseline_label=BARE_ECHO,
                details={"baseline": summary(lat[BARE_ECHO])},
            )
        )
    for ours, bare in pairs:
        where = ours.split()[-1]
        figures.append(
            Figure(
                GROUP,
                f"pipelined throughput ({profile.pipeline_window} in flight, asyncio), {where}",
                "req/s",
                value=float(np.median(rates[ours])),
                baseline=float(np.median(rates[bare])),
                baseline_label=bare,
                target=THROUGHPUT_TARGET,
                details={"ours_rounds": rates[ours], "baseline_rounds": rates[bare]},
            )
        )
        figures.append(
            Figure(
                GROUP,
                f"pipelined latency p99 ({profile.pipeline_window} in flight), {where}",
                "s",
                value=percentile(pipelined_lat[ours], 99),
                baseline=percentile(pipelined_lat[bare], 99),
                baseline_label=bare,
                details={
                    "ours": summary(pipelined_lat[ours]),
                    "baseline": summary(pipelined_lat[bare]),
                },
            )
        )
    figures.append(
        Figure(
            GROUP,
            "pipelined throughput, bare echo (floor)",
            "req/s",
            value=float(np.median(rates[BARE_ECHO])),
            baseline=float(np.median(rates[BARE_PROCESS])),
            baseline_label=BARE_PROCESS,
            details={"rounds": rates[BARE_ECHO]},
        )
    )
    return figures


def _cpu_figures(ends: _Ends) -> list[Figure]:
    """CPU per request of each process on the standalone path against its bare counterpart."""
    rows = (
        (CLIENT, "client (AsyncClient)", "bare asyncio DEALER client"),
        (MIDDLE, "coordinator process", "bare broker process"),
        (FAR, "host process (synthetic engine)", "bare echo worker"),
    )
    figures = [
        Figure(
            GROUP,
            f"CPU per request, pipelined standalone: {what}",
            "s",
            value=ends.cpu_per_request(STANDALONE, role),
            baseline=ends.cpu_per_request(BARE_PROCESS, role),
            baseline_label=against,
        )
        for role, what, against in rows
    ]
    figures.append(
        Figure(
            GROUP,
            "CPU per request, pipelined standalone: all three processes",
            "s",
            value=ends.cpu_per_request(STANDALONE),
            baseline=ends.cpu_per_request(BARE_PROCESS),
            baseline_label="bare client + broker + worker",
            note="psutil user+system time over the pipelined runs, divided by their requests; "
            "the client process also holds the idle bare and signed thread brokers",
        )
    )
    return figures


def _queue_figures(rates: dict[str, list[float]], ends: _Ends, profile: Profile) -> list[Figure]:
    """The default max_inflight against the window: what holding work in the coordinator costs."""
    limit = ends.default_max_inflight
    return [
        Figure(
            GROUP,
            f"pipelined throughput, standalone, max_inflight {limit} (the coordinator queues "
            f"{profile.pipeline_window - limit} of {profile.pipeline_window})",
            "req/s",
            value=float(np.median(rates[QUEUED])),
            baseline=float(np.median(rates[STANDALONE])),
            baseline_label=f"ours, max_inflight {profile.pipeline_window}",
            details={"rounds": rates[QUEUED]},
        ),
        Figure(
            GROUP,
            f"CPU per request, standalone, max_inflight {limit}: all three processes",
            "s",
            value=ends.cpu_per_request(QUEUED),
            baseline=ends.cpu_per_request(STANDALONE),
            baseline_label=f"ours, max_inflight {profile.pipeline_window}",
        ),
    ]


def _only_replica(connection_file: Any) -> dict[str, Any]:
    """The health of the one host replica behind a standalone coordinator."""
    with Client(connection_file=connection_file) as client:
        [replica] = client.health()["replicas"]
    return dict(replica)


def _comparisons(ours: str, bare: str, floor: str) -> tuple[tuple[str, str, str], ...]:
    """The rows one measure of one shape gives, as (title, end, against): the signed floor
    against the bare broker (what the protocol alone costs), ours against the signed floor (what
    our code adds above it); standalone, ours like for like as well (no model work), against
    the signed floor and against the bare broker (the routing alone against the targets' own
    baseline)."""
    rows = (("signed floor vs bare", floor, bare), ("ours vs signed floor", ours, floor))
    if ours == STANDALONE:
        rows += (
            ("ours, no model work vs signed floor", NO_MODEL_WORK, floor),
            ("ours, no model work vs bare", NO_MODEL_WORK, bare),
        )
    return rows


def _split(
    name: str,
    unit: str,
    measure: Callable[[str], float],
    shape: tuple[str, str, str],
    details: Callable[[str], Any] | None = None,
) -> list[Figure]:
    """One measure of one shape (ours, bare, floor), a row per comparison (see
    :func:`_comparisons`)."""
    return [
        Figure(
            GROUP,
            f"{name}: {title}",
            unit,
            value=measure(end),
            baseline=measure(against),
            baseline_label=against,
            details={"value": details(end), "baseline": details(against)} if details else {},
        )
        for title, end, against in _comparisons(*shape)
    ]


def _floor_figures(
    sync_lat: dict[str, list[float]],
    async_lat: dict[str, list[float]],
    rates: dict[str, list[float]],
    ends: _Ends,
    profile: Profile,
) -> list[Figure]:
    """The signed floor's and the like-for-like rows (see :func:`_comparisons`)."""
    figures: list[Figure] = []
    for where, ours, bare, floor in SHAPES:
        for style, lat in (("sync", sync_lat), ("async", async_lat)):
            for q in (50, 99):
                figures += _split(
                    f"{style} round trip p{q}, {where}",
                    "s",
                    lambda name, lat=lat, q=q: percentile(lat[name], q),
                    (ours, bare, floor),
                    lambda name, lat=lat: summary(lat[name]),
                )
        figures += _split(
            f"pipelined throughput ({profile.pipeline_window} in flight), {where}",
            "req/s",
            lambda name: float(np.median(rates[name])),
            (ours, bare, floor),
            lambda name: rates[name],
        )
    cpu_shape = (STANDALONE, BARE_PROCESS, SIGNED_PROCESS)
    for lone, per in ((False, "CPU per request"), (True, "CPU per lone round trip (sync)")):
        for role, what in (
            (CLIENT, "client"),
            (MIDDLE, "middle process"),
            (FAR, "far process"),
            (None, "all three processes"),
        ):
            figures += _split(
                f"{per}, standalone, {what}",
                "s",
                lambda name, role=role, lone=lone: ends.cpu_per_request(name, role, lone=lone),
                cpu_shape,
            )
    return figures
