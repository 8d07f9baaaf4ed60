"""Failover: SIGKILL the primary host under steady load; when does the fallback serve, when is the
primary back?

Config: two synthetic hosts ``a`` and ``b`` serving ``echo`` with ``models.echo.hosts = [a, b]``
(so everything goes to ``a`` while it lives), default timings and restart policy. A thread sends
one-shot requests back to back with a blocking client; after 50 answers from ``a`` the bench
SIGKILLs ``a``'s process and records, on the monotonic clock:

* the first answer served by ``b`` (the request in flight at the kill is retried there);
* ``a.0`` turning READY again (a supervisor state listener timestamps it on the broker thread);
* the first answer served by ``a`` again, and every request that failed meanwhile.

Each trial starts a fresh coordinator, so every kill is a first failure (no grown backoff).
Baselines, same run: how fast the OS tells a parent that its SIGKILLed child died (kill ->
waitpid of a bare child, the floor of any detection), and the cold spawn -> READY of ``a`` in
the same trial (what a restart costs at least).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np

from bench import harness
from bench.profiles import Profile
from bench.report import Figure, Target
from bench.routing import chunk_payload
from orchestrator.errors import OrchestratorError

GROUP = "failover"
MODEL = "echo"
ANSWERS_BEFORE_KILL = 50
#: A trial that has not seen the fallback serve and the primary serve again by then failed.
TRIAL_TIMEOUT_S = 20.0
REQUEST_TIMEOUT_S = 5.0
FAILOVER_TARGET = Target("value", "<=", 1.0)
NO_FAILED_REQUESTS = Target("value", "<=", 0)


def failover_raw() -> dict[str, Any]:
    return harness.raw_config(
        {"a": harness.synthetic_host(), "b": harness.synthetic_host()},
        models={MODEL: {"hosts": ["a", "b"]}},
    )


def kill_to_reap_s() -> float:
    """SIGKILL -> waitpid returning, for a bare child of this process."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    time.sleep(0.2)
    started = time.monotonic()
    proc.kill()
    proc.wait()
    return time.monotonic() - started


class _Load:
    """Back-to-back one-shot requests on a thread; every answer and failure timestamped."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.payload = chunk_payload()
        self.served: list[tuple[float, str]] = []
        self.failed: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                result = self.client.transcribe(
                    self.payload,
                    sample_rate=harness.SAMPLE_RATE,
                    model=MODEL,
                    timeout=REQUEST_TIMEOUT_S,
                )
                self.served.append((time.monotonic(), result.host))
            except OrchestratorError as exc:
                self.failed.append((time.monotonic(), str(exc.code)))

    def first_after(self, t: float, host: str) -> float | None:
        return next((when for when, h in list(self.served) if when > t and h == host), None)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(REQUEST_TIMEOUT_S * 3)


def _trial() -> dict[str, float]:
    with harness.embedded(harness.config(failover_raw())) as coord:
        cold = harness.startup_split(coord)["a.0"]
        ready_events: list[float] = []

        def listen(rep: Any, old: Any, new: Any, reason: str) -> None:
            if rep.name == "a.0" and str(new) == "ready":
                ready_events.append(time.monotonic())

        coord.call(lambda broker: broker.supervisor.listeners.append(listen))
        pid = coord.call(lambda broker: broker.router.replicas_of("a")[0].pid)
        load = _Load(coord.sync_client())
        try:
            _wait(
                lambda: sum(1 for _, h in load.served if h == "a") >= ANSWERS_BEFORE_KILL,
                "answers from a",
            )
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            _wait(lambda: load.first_after(killed, "b") is not None, "an answer from b")
            _wait(lambda: any(t > killed for t in ready_events), "a ready again")
            ready = min(t for t in ready_events if t > killed)
            # After READY: an answer sent by a just before the kill may still arrive after it.
            _wait(lambda: load.first_after(ready, "a") is not None, "an answer from a again")
        finally:
            load.stop()
        fallback = load.first_after(killed, "b")
        back = load.first_after(ready, "a")
        assert fallback is not None and back is not None
        return {
            "failover_s": fallback - killed,
            "ready_again_s": ready - killed,
            "back_on_primary_s": back - killed,
            "failed_requests": float(sum(1 for t, _ in load.failed if t > killed)),
            "cold_spawn_to_ready_s": cold["total_s"],
            "kill_to_reap_s": kill_to_reap_s(),
        }


def _wait(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + TRIAL_TIMEOUT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"failover trial: no {what} within {TRIAL_TIMEOUT_S:.0f}s")
        time.sleep(0.002)


def run(profile: Profile) -> list[Figure]:
    trials = [_trial() for _ in range(profile.failover_trials)]

    def med(key: str) -> float:
        return float(np.median([t[key] for t in trials]))

    details = {"trials": trials}
    return [
        Figure(
            GROUP, "SIGKILL primary -> first answer from fallback (median)", "s",
            value=med("failover_s"), baseline=med("kill_to_reap_s"),
            baseline_label="OS floor: kill -> waitpid of a bare child", target=FAILOVER_TARGET,
            note=f"worst of {len(trials)}: {max(t['failover_s'] for t in trials) * 1e3:.0f} ms; the "
            "supervisor notices an exit on its tick (tick_interval_s = 0.05), then the in-flight "
            "request is retried on the fallback",
            details=details,
        ),
        Figure(
            GROUP, "SIGKILL primary -> primary READY again (median)", "s",
            value=med("ready_again_s"), baseline=med("cold_spawn_to_ready_s"),
            baseline_label="cold spawn -> READY of the same host",
            note="includes noticing the exit (one tick) and the restart backoff "
            "(restart.backoff_initial_s = 0.2 by default); the restart spawns while the fallback "
            "serves the load, the cold start on an idle machine",
        ),
        Figure(
            GROUP, "SIGKILL primary -> first answer from primary again (median)", "s",
            value=med("back_on_primary_s"), baseline=med("ready_again_s"),
            baseline_label="primary READY again",
        ),
        Figure(
            GROUP, "requests failed across the kills", "count",
            value=sum(t["failed_requests"] for t in trials), target=NO_FAILED_REQUESTS,
            note="a request in flight on the killed host is retried on the fallback (MAX_ATTEMPTS = 2)",
        ),
    ]  # fmt: skip
