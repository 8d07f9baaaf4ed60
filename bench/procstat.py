"""CPU time of processes, read with psutil: what a figure costs in CPU, not only in wall time.

On a machine whose cores other processes share, wall-clock latency mixes our work with waiting
for a core; CPU seconds per request or per stream do not, so the groups report both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psutil


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU seconds the process has used so far (all its threads)."""
    times = proc.cpu_times()
    return times.user + times.system


class CpuMeter:
    """CPU seconds each named process spent inside ``with meter:`` blocks, summed over blocks,
    and the requests those blocks served (:meth:`serving`), so it can say what one cost."""

    def __init__(self, pids: dict[str, int] | None = None) -> None:
        self._procs: dict[str, psutil.Process] = {}
        self.spent: dict[str, float] = {}
        self._start: dict[str, float] = {}
        self.requests = 0
        self.watch(pids or {})

    def watch(self, pids: dict[str, int]) -> None:
        """Meter these processes under these names from now on, keeping what the names spent
        so far (an end started afresh for each measurement)."""
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        for name in pids:
            self.spent.setdefault(name, 0.0)

    def __enter__(self) -> CpuMeter:
        self._start = {name: cpu_seconds(p) for name, p in self._procs.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        for name, proc in self._procs.items():
            self.spent[name] += cpu_seconds(proc) - self._start[name]

    @contextlib.contextmanager
    def serving(self, requests: int) -> Iterator[None]:
        """Meter a block that serves ``requests`` requests (counted once it ends)."""
        with self:
            yield
        self.requests += requests

    def per_request(self, name: str | None = None) -> float:
        """CPU seconds per request served of one named process (None: all of them)."""
        spent = self.spent[name] if name else sum(self.spent.values())
        return spent / self.requests
