"""The measuring loops the benchmarks share (bench.loops): what they time and what they meter."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from bench import loops


def test_a_pipelined_runs_meter_sees_only_the_measured_requests_not_the_warm_up() -> None:
    """The warm-up runs one request at a time past its first window, each paying a lone
    request's cost: metered, it would be charged to pipelining (CPU per pipelined request)."""
    answered = 0
    metered: list[int] = []

    async def request() -> None:
        nonlocal answered
        await asyncio.sleep(0)
        answered += 1

    @contextlib.contextmanager
    def meter() -> Iterator[None]:
        metered.append(answered)
        yield
        metered.append(answered)

    result = asyncio.run(loops.pipelined(request, 200, 8, 50, measured=meter()))
    assert metered == [50, 250]  # entered after the 50 warm-ups, left after the 200 measured
    assert len(result.latencies_s) == 200 and result.window == 8 and result.rate_per_s > 0
