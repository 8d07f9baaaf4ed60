"""The measuring loops the benchmarks share (bench.loops): what they time and what they meter."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from bench import loops
from bench.procstat import CpuMeter


class _Counter:
    """Counts the requests a fake end answers, and what the count was when a meter was entered
    and when it was left."""

    def __init__(self) -> None:
        self.answered = 0
        self.metered: list[int] = []

    def answer(self) -> None:
        self.answered += 1

    @contextlib.contextmanager
    def meter(self) -> Iterator[None]:
        self.metered.append(self.answered)
        yield
        self.metered.append(self.answered)


def test_a_pipelined_runs_meter_sees_only_the_measured_requests_not_the_warm_up() -> None:
    """The warm-up runs one request at a time past its first window, each paying a lone
    request's cost: metered, it would be charged to pipelining (CPU per pipelined request)."""
    count = _Counter()

    async def request() -> None:
        await asyncio.sleep(0)
        count.answer()

    result = asyncio.run(loops.pipelined(request, 200, 8, 50, measured=count.meter()))
    assert count.metered == [50, 250]  # entered after the 50 warm-ups, left after the 200
    assert len(result.latencies_s) == 200 and result.window == 8 and result.rate_per_s > 0


def test_a_sync_runs_meter_sees_only_the_measured_round_trips() -> None:
    """CPU per lone round trip is read from the measured ones, never the warm-up's."""
    count = _Counter()
    latencies = loops.sync_round_trips(count.answer, 30, 7, measured=count.meter())
    assert count.metered == [7, 37] and len(latencies) == 30


def _burn(seconds: float) -> None:
    """Spend ``seconds`` of this process's CPU."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_meter_keeps_what_a_role_spent_when_it_watches_a_new_process() -> None:
    """Ours' ends are started afresh for each measurement: their CPU adds up by role."""
    meter = CpuMeter()
    spent = []
    for _ in range(2):
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
        )
        meter.watch({"client": os.getpid(), "far": child.pid})
        with meter:
            _burn(0.2)  # charged to "client"
        child.communicate(b"")
        spent.append(meter.spent["client"])
    assert 0.15 < spent[0] < spent[1]  # the second run added to the first
    assert spent[1] > 0.3 and set(meter.spent) == {"client", "far"}


def test_a_meter_divides_what_it_measured_by_the_requests_its_blocks_served() -> None:
    meter = CpuMeter({"client": os.getpid()})
    for _ in range(2):
        with meter.serving(50):
            _burn(0.1)
    assert meter.requests == 100
    assert meter.per_request("client") == pytest.approx(meter.spent["client"] / 100)
    assert meter.per_request() == meter.per_request("client")  # one process: all of them
    assert 0.15 / 100 < meter.per_request() < 1.0 / 100
