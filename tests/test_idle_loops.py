"""Idle processes wake only when something is due.

Every wake-up costs CPU even when it finds nothing to do (here, on a VM, about a millisecond of
it; on a laptop, battery): the coordinator's loop ticks with its heartbeats while nothing in it is
timed, a host's loop wakes to heartbeat (and at once when stopped or orphaned, not at its next
check), and neither spins through empty polls while a timer is under a millisecond away.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from orchestrator.errors import DeadlineExceededError
from orchestrator.host.runtime import EXIT_OK, EXIT_ORPHANED, HostRuntime
from orchestrator.wire.protocol import Codec, Kind
from orchestrator.wire.sockets import poll_timeout_ms
from support import host_on_router, make_config, running, synthetic_host

#: Seconds each idle loop is watched.
WATCH_S = 2.0


def test_poll_timeouts_round_up_to_the_next_millisecond() -> None:
    # Rounded down, a timer 0.4 ms away would be polled for with 0 ms: at once, again and again.
    assert [poll_timeout_ms(s) for s in (0.0004, 0.001, 0.0011, 0.25, 0.0, -0.3)] == [
        1,
        1,
        2,
        250,
        0,
        0,
    ]


@pytest.fixture
def polls_by_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """How many times each thread of this process has polled through a zmq.Poller."""
    counts: dict[str, int] = {}
    real = zmq.Poller.poll

    def counted(self: zmq.Poller, timeout: Any = None) -> Any:
        name = threading.current_thread().name
        counts[name] = counts.get(name, 0) + 1
        return real(self, timeout)

    monkeypatch.setattr(zmq.Poller, "poll", counted)
    yield counts


def test_an_idle_coordinator_ticks_with_its_heartbeats(polls_by_thread: dict[str, int]) -> None:
    beat_s = 0.5  # tick_interval_s stays 0.05: the pace of a coordinator with timed work
    with running(make_config(heartbeat_interval_s=beat_s, tick_interval_s=0.05)) as coord:
        coord.sync_client().health()  # served: the replica is ready, nothing is in flight
        time.sleep(beat_s)
        before = polls_by_thread.get("orchestrator-broker", 0)
        time.sleep(WATCH_S)
        turns = polls_by_thread.get("orchestrator-broker", 0) - before
    # Its ticks and heartbeats (2/s each at most), the host's heartbeats (2/s): not 20 ticks.
    assert turns <= 8 * WATCH_S, f"{turns} loop turns in {WATCH_S:g}s idle"


def test_a_busy_coordinator_still_ticks_fast_enough_for_short_deadlines() -> None:
    """A request arriving while the loop ticks slowly is failed at its deadline, not at the next
    slow tick: the loop ticks every tick_interval_s again as soon as something is timed."""
    config = make_config(
        hosts={"syn": synthetic_host(engine_options={"delay_s": 3.0})},
        heartbeat_interval_s=5.0,  # the idle tick
    )
    with running(config) as coord:
        client = coord.sync_client()
        client.health()
        time.sleep(0.3)  # idle: the loop now sleeps up to 5 s between ticks
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            client.transcribe(b"\0\0" * 1600, sample_rate=16_000, model="echo", timeout=0.3)
        assert time.monotonic() - started < 1.5  # the deadline, a fast tick, and slack


@pytest.fixture
def idle_host(tmp_path: Path) -> Iterator[tuple[HostRuntime, zmq.Socket[Any], Codec]]:
    """A real host runtime heartbeating every second to a bare ROUTER."""
    with host_on_router(tmp_path, heartbeat_interval_s=1.0, orphan_timeout_s=60.0) as host:
        yield host


def _run_in_thread(runtime: HostRuntime) -> tuple[threading.Thread, list[int]]:
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(runtime.run()), name="host-loop")
    thread.start()
    return thread, codes


def test_an_idle_host_wakes_only_to_heartbeat(
    idle_host: tuple[HostRuntime, zmq.Socket[Any], Codec], polls_by_thread: dict[str, int]
) -> None:
    runtime, router, _ = idle_host
    thread, _ = _run_in_thread(runtime)
    try:
        assert router.poll(30_000), "no READY from the host"
        time.sleep(0.5)
        before = polls_by_thread.get("host-loop", 0)
        time.sleep(WATCH_S)
        turns = polls_by_thread.get("host-loop", 0) - before
    finally:
        runtime.stop()
        thread.join(10)
    # One heartbeat a second (its checks ride along), and a READY or two: not 10 checks/s.
    assert turns <= 3 * WATCH_S, f"{turns} loop turns in {WATCH_S:g}s idle"


@pytest.mark.parametrize(
    ("event", "exit_code"),
    [("stop", EXIT_OK), ("parent_lost", EXIT_ORPHANED)],  # SIGTERM's handler; stdin's EOF
)
def test_a_host_leaves_at_once_not_at_its_next_wake_up(
    idle_host: tuple[HostRuntime, zmq.Socket[Any], Codec], event: str, exit_code: int
) -> None:
    runtime, router, _ = idle_host
    thread, codes = _run_in_thread(runtime)
    assert router.poll(30_000), "no READY from the host"
    time.sleep(0.2)
    happened = time.monotonic()
    getattr(runtime, event)()  # from another thread, as the signal handler or watcher does
    thread.join(10)
    assert codes == [exit_code]
    assert time.monotonic() - happened < 0.5  # the next heartbeat was up to 1 s away


def test_a_heartbeat_still_goes_out_every_interval(
    idle_host: tuple[HostRuntime, zmq.Socket[Any], Codec],
) -> None:
    runtime, router, codec = idle_host
    thread, _ = _run_in_thread(runtime)
    beats: list[float] = []
    try:
        deadline = time.monotonic() + 30
        while len(beats) < 3 and time.monotonic() < deadline:
            if router.poll(2000):
                msg = codec.decode(router.recv_multipart()[1:])
                if msg.kind is Kind.HEARTBEAT:
                    beats.append(time.monotonic())
    finally:
        runtime.stop()
        thread.join(10)
    assert len(beats) == 3
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert all(0.8 < gap < 1.6 for gap in gaps), gaps
