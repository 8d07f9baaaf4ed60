"""Measuring loops shared by our clients and the bare baselines, so both are timed identically.

A loop gets a callable doing one round trip (sync or async) and returns what it measured; it
knows nothing about what is on the other end. Warm-up round trips are run and discarded first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Pipelined:
    """Throughput of a window of requests kept in flight, and each request's latency."""

    rate_per_s: float
    latencies_s: list[float]
    window: int


def sync_round_trips(
    round_trip: Callable[[], object],
    n: int,
    warmup: int,
    measured: contextlib.AbstractContextManager[object] | None = None,
) -> list[float]:
    """Latency of ``n`` sequential round trips (one in flight at a time); ``measured`` (a CPU
    meter) is entered after the warm-up and left after the ``n``."""
    for _ in range(warmup):
        round_trip()
    out = []
    clock = time.perf_counter
    with measured or contextlib.nullcontext():
        for _ in range(n):
            t0 = clock()
            round_trip()
            out.append(clock() - t0)
    return out


async def async_round_trips(
    round_trip: Callable[[], Awaitable[object]], n: int, warmup: int
) -> list[float]:
    """Latency of ``n`` sequential awaited round trips."""
    for _ in range(warmup):
        await round_trip()
    out = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        await round_trip()
        out.append(clock() - t0)
    return out


async def pipelined(
    request: Callable[[], Awaitable[object]],
    n: int,
    window: int,
    warmup: int,
    measured: contextlib.AbstractContextManager[object] | None = None,
) -> Pipelined:
    """``n`` requests with ``window`` in flight at all times (one task per slot).

    ``measured`` (a CPU meter) is entered after the warm-up and left once the ``n`` are
    answered: the warm-up's requests go one at a time past the first window, each paying what
    a lone request pays, and would pass that off as pipelining's cost.
    """
    await asyncio.gather(*(request() for _ in range(min(warmup, window))))
    for _ in range(max(0, warmup - window)):
        await request()
    with measured or contextlib.nullcontext():
        return await _pipelined(request, n, window)


async def _pipelined(request: Callable[[], Awaitable[object]], n: int, window: int) -> Pipelined:
    remaining = n
    latencies: list[float] = []
    clock = time.perf_counter

    async def slot() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = clock()
            await request()
            latencies.append(clock() - t0)

    started = clock()
    await asyncio.gather(*(slot() for _ in range(window)))
    elapsed = clock() - started
    return Pipelined(n / elapsed, latencies, window)
