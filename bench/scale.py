"""Scale: N concurrent real-time streams of 20 ms PCM16 chunks through a standalone coordinator.

For each N (1, 8, 32; and 128 with ``--full``) a fresh ``python -m orchestrator serve`` runs one
synthetic host (``bench.stream_probe:ProbeEngine``, the synthetic engine with an arrival probe),
and this process opens N streams with one :class:`orchestrator.AsyncClient`. Every stream sends
a chunk every 20 ms on its own phase (streams are not synchronised, as real callers are not),
speech-like: 1.5 s of noise, 0.5 s of silence, so the host's segmenter emits partials and finals
and the coordinator carries events back as well as audio. After a warm-up, for a measuring window:

* coordinator CPU% (psutil on the coordinator's process alone: it runs standalone for this), per
  stream;
* chunk -> host latency, p99: from the client's ``send`` call (its CLOCK_MONOTONIC time written
  into the chunk's first 8 bytes) to the host runtime handing the verified chunk to its stream
  handler (see :mod:`bench.stream_probe`);
* coordinator memory per stream: its RSS with the streams flowing minus its RSS before they
  opened, over N.

Baseline, same N, same pacing and chunks, right after: the bare ROUTER/ROUTER broker in a child
forwarding to a bare sink worker in another child that records arrivals the same way.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import zmq
import zmq.asyncio

from bench import harness
from bench.bare import CHUNK, HWM, REPORT, stamp
from bench.procstat import cpu_seconds
from bench.profiles import Profile
from bench.report import Figure, skipped
from bench.stats import percentile, summary
from bench.stream_probe import PROBE_FILE_ENV
from orchestrator.client import AsyncClient, AsyncStream, Client

GROUP = "scale"
MODEL = "echo"
CHUNK_S = 0.02
CYCLE_SPEECH_S, CYCLE_SILENCE_S = 1.5, 0.5
#: The synthetic host takes every stream of the largest N (the default is 32 per host).
HOST_MAX_STREAMS = 160
#: After the last chunk, how long streams get to deliver their final events.
CLOSE_TIMEOUT_S = 30.0
#: First send this long after every stream opened.
START_DELAY_S = 0.2


def _pattern() -> np.ndarray:
    """One speech/silence cycle of PCM16, as 20 ms chunks: shape (chunks, 320)."""
    rng = np.random.default_rng(11)
    speech = rng.normal(0, 3000, int(CYCLE_SPEECH_S * harness.SAMPLE_RATE))
    silence = np.zeros(int(CYCLE_SILENCE_S * harness.SAMPLE_RATE))
    cycle = np.clip(np.concatenate([speech, silence]), -32768, 32767).astype("<i2")
    return cycle.reshape(-1, harness.CHUNK_SAMPLES)


async def _paced(
    send: Callable[[bytearray], Awaitable[object]],
    index: int,
    n: int,
    start: float,
    end: float,
    pattern: np.ndarray,
) -> int:
    """Send one stamped chunk every 20 ms from ``start`` (+ this stream's phase) until ``end``."""
    phase = CHUNK_S * index / n
    offset = (index * 17) % len(pattern)
    k = 0
    while True:
        due = start + phase + k * CHUNK_S
        if due >= end:
            return k
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        chunk = bytearray(pattern[(offset + k) % len(pattern)].tobytes())
        stamp(chunk)
        await send(chunk)
        k += 1


class _Window:
    """CPU and RSS of one process at the start and end of the measuring window."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.vanished = False
        self.cpu0 = self.cpu1 = 0.0
        self.t0 = self.t1 = 0.0
        self.rss_before_open = self.proc.memory_info().rss
        self.rss_flowing = 0

    def begin(self) -> None:
        self.t0, self.cpu0 = time.monotonic(), cpu_seconds(self.proc)

    def end(self) -> None:
        self.t1 = time.monotonic()
        try:
            self.cpu1 = cpu_seconds(self.proc)
            self.rss_flowing = self.proc.memory_info().rss
        except psutil.NoSuchProcess:
            self.vanished = True  # a recycled host; the caller reports the run as failed

    @property
    def cpu_percent(self) -> float:
        return 100.0 * (self.cpu1 - self.cpu0) / (self.t1 - self.t0)

    @property
    def rss_delta(self) -> int:
        return self.rss_flowing - self.rss_before_open


async def _measure_window(windows: list[_Window], begin: float, end: float) -> None:
    await asyncio.sleep(max(0.0, begin - time.monotonic()))
    for w in windows:
        w.begin()
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    for w in windows:
        w.end()


def _latencies(sent_ns: list[int], arrived_ns: list[int], begin: float, end: float) -> list[float]:
    lo, hi = int(begin * 1e9), int(end * 1e9)
    return [(a - s) / 1e9 for s, a in zip(sent_ns, arrived_ns) if lo <= s < hi]


# ---------------------------------------------------------------------------- ours
async def _consume(stream: AsyncStream, counts: dict[str, int]) -> None:
    async for event in stream:
        counts[event.type] = counts.get(event.type, 0) + 1


async def _ours_streams(
    connection_file: Path, n: int, profile: Profile, windows: list[_Window]
) -> tuple[float, float, dict[str, int]]:
    pattern = _pattern()
    counts: dict[str, int] = {}
    async with AsyncClient(connection_file=connection_file) as client:
        streams = [client.stream(model=MODEL, sample_rate=harness.SAMPLE_RATE) for _ in range(n)]
        for s in streams:
            await s.open()
        consumers = [asyncio.create_task(_consume(s, counts)) for s in streams]
        start = time.monotonic() + START_DELAY_S
        begin = start + profile.stream_warmup_s
        end = begin + profile.stream_measure_s
        await asyncio.gather(
            _measure_window(windows, begin, end),
            *(_paced(s.send, i, n, start, end, pattern) for i, s in enumerate(streams)),
        )
        for s in streams:
            await s.close()
        try:
            await asyncio.wait_for(asyncio.gather(*consumers), CLOSE_TIMEOUT_S)
        except TimeoutError:
            counts["not closed in time"] = sum(1 for s in streams if not s.closed)
    return begin, end, counts


def _ours(n: int, profile: Profile) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="orc-bench-probe-") as tmp:
        probe = Path(tmp) / "arrivals.jsonl"
        host = harness.synthetic_host(
            engine="bench.stream_probe:ProbeEngine",
            max_streams=HOST_MAX_STREAMS,
            env_vars={PROBE_FILE_ENV: str(probe)},
        )
        raw = harness.raw_config({"syn": host})
        raw["segmenter"] = {"vad": "energy"}  # noise bursts, not speech: the energy detector
        with harness.standalone(raw) as (child, conn):
            host_pid = _host_pid(conn)
            windows = [_Window(child.pid), _Window(host_pid), _Window(psutil.Process().pid)]
            begin, end, counts = asyncio.run(_ours_streams(conn, n, profile, windows))
            restarts, restart_reason = _host_restarts(conn)
        lat: list[float] = []
        records = probe.read_text().splitlines() if probe.exists() else []
        for line in records:
            rec = json.loads(line)
            lat += _latencies(rec["sent_ns"], rec["arrived_ns"], begin, end)
    coord, host_w, client_w = windows
    return {
        "latencies": lat,
        "cpu_percent": coord.cpu_percent,
        "rss_delta": coord.rss_delta,
        "host_cpu_percent": host_w.cpu_percent,
        "client_cpu_percent": client_w.cpu_percent,
        "events": counts,
        "host_restarts": restarts,
        "host_restart_reason": restart_reason,
        "host_vanished": host_w.vanished,
    }


def _host_pid(connection_file: Path) -> int:
    with Client(connection_file=connection_file) as client:
        return int(client.health()["replicas"][0]["pid"])


def _host_restarts(connection_file: Path) -> tuple[int, str]:
    """Restarts of the host during the run, and the supervisor's reason for the last one."""
    with Client(connection_file=connection_file) as client:
        replica = client.health()["replicas"][0]
    return int(replica["restarts"]), str(replica.get("last_restart_reason") or "")


# ---------------------------------------------------------------------------- bare
async def _bare_streams(
    front: str, n: int, profile: Profile, windows: list[_Window]
) -> tuple[float, float, bytes]:
    pattern = _pattern()
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.connect(front)
    try:

        async def send(chunk: bytearray) -> None:
            await sock.send_multipart([CHUNK, chunk], copy=False)

        start = time.monotonic() + START_DELAY_S
        begin = start + profile.stream_warmup_s
        end = begin + profile.stream_measure_s
        await asyncio.gather(
            _measure_window(windows, begin, end),
            *(_paced(send, i, n, start, end, pattern) for i in range(n)),
        )
        await sock.send(REPORT)
        frames = await asyncio.wait_for(sock.recv_multipart(), CLOSE_TIMEOUT_S)
        return begin, end, frames[1]
    finally:
        sock.close()
        ctx.term()


def _bare(n: int, profile: Profile) -> dict[str, Any]:
    with harness.socket_folder() as tmp:
        front = harness.ipc_endpoint(tmp, "front")
        back = harness.ipc_endpoint(tmp, "back")
        with (
            harness.bare_child("broker", front, back) as broker,
            harness.bare_child("worker", back, "--mode", "sink") as worker,
        ):
            windows = [_Window(broker.pid), _Window(worker.pid)]
            begin, end, record = asyncio.run(_bare_streams(front, n, profile, windows))
    sent, arrived = np.frombuffer(record, dtype=np.int64).reshape(2, -1)
    return {
        "latencies": _latencies(sent.tolist(), arrived.tolist(), begin, end),
        "cpu_percent": windows[0].cpu_percent,
        "rss_delta": windows[0].rss_delta,
    }


# ---------------------------------------------------------------------------- figures
def run(profile: Profile) -> list[Figure]:
    figures: list[Figure] = []
    memory: dict[int, tuple[int, int]] = {}  # streams -> (ours, bare) RSS growth in bytes
    for n in profile.stream_counts:
        ours = _ours(n, profile)
        if ours["host_restarts"] or ours["host_vanished"]:
            reason = (
                f"the host was recycled {ours['host_restarts']} time(s) during the run; "
                f"last reason: {ours['host_restart_reason'] or 'unknown'}"
            )
            figures += [
                skipped(GROUP, f"{n:>3} streams: {what}", unit, reason)
                for what, unit in (
                    ("coordinator CPU per stream", "%"),
                    ("chunk -> host latency p99", "s"),
                    ("coordinator memory per stream", "KiB"),
                )
            ]
            continue
        _check_ran_clean(n, ours)
        bare = _bare(n, profile)
        memory[n] = (ours["rss_delta"], bare["rss_delta"])
        figures += [
            Figure(
                GROUP, f"{n:>3} streams: coordinator CPU per stream", "%",
                value=ours["cpu_percent"] / n, baseline=bare["cpu_percent"] / n,
                baseline_label="bare broker process",
                details={
                    "coordinator_cpu_percent": ours["cpu_percent"],
                    "host_cpu_percent": ours["host_cpu_percent"],
                    "client_cpu_percent": ours["client_cpu_percent"],
                    "bare_broker_cpu_percent": bare["cpu_percent"],
                    "events": ours["events"],
                    "host_restarts": ours["host_restarts"],
                },
            ),
            Figure(
                GROUP, f"{n:>3} streams: chunk -> host latency p99", "s",
                value=percentile(ours["latencies"], 99), baseline=percentile(bare["latencies"], 99),
                baseline_label="bare broker -> sink worker",
                details={"ours": summary(ours["latencies"]), "baseline": summary(bare["latencies"])},
            ),
            Figure(
                GROUP, f"{n:>3} streams: coordinator memory per stream", "KiB",
                value=ours["rss_delta"] / n / 1024,
                baseline_label=f"bare broker: {bare['rss_delta'] / n / 1024:.1f} KiB (keeps no stream state)",
                details={"rss_delta_bytes": ours["rss_delta"], "bare_rss_delta_bytes": bare["rss_delta"]},
            ),
        ]  # fmt: skip
    if len(memory) >= 2:
        figures.append(_memory_slope(memory))
    return figures


def _check_ran_clean(n: int, ours: dict[str, Any]) -> None:
    """Refuse figures from a run whose streams failed: error events mean the host refused the
    chunks (its CPU and latency would describe error handling), and no arrivals mean the probe
    never saw one. Either fails the group with the reason instead of printing a number."""
    errors = ours["events"].get("error", 0)
    if errors or not ours["latencies"]:
        raise RuntimeError(
            f"{n} stream(s): {errors} error event(s) and {len(ours['latencies'])} probed "
            f"arrival(s) (events: {ours['events']}); the stream path or bench.stream_probe broke"
        )


def _memory_slope(memory: dict[int, tuple[int, int]]) -> Figure:
    """RSS growth per added stream between the smallest and largest N: one-off allocations of a
    fresh coordinator (first messages, buffers) cancel out, which RSS / N at small N cannot do."""
    lo, hi = min(memory), max(memory)
    ours = (memory[hi][0] - memory[lo][0]) / (hi - lo) / 1024
    bare = (memory[hi][1] - memory[lo][1]) / (hi - lo) / 1024
    return Figure(
        GROUP,
        f"coordinator memory per added stream ({lo} -> {hi} streams)",
        "KiB",
        value=ours,
        baseline_label=f"bare broker: {bare:.1f} KiB (keeps no stream state)",
        note="includes each stream's replay buffer: the audio no final has confirmed yet (the "
        "open utterance plus up to PROGRESS_EVERY_S of decided audio, 32 KiB/s of PCM16)",
    )
