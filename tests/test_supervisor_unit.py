"""The supervisor's state machine on fake processes: every transition, backoff and the limit."""

from __future__ import annotations

import signal

import pytest

from orchestrator.coordinator.supervisor import HostState
from orchestrator.wire.contract import EXIT_ENGINE_FAILED
from table_support import build_parts, unit_config


def test_spawn_then_ready_then_busy_and_back() -> None:
    parts = build_parts(ready=())
    sup, rep = parts.supervisor, parts.replica("b.0")
    seen: list[tuple[HostState, HostState]] = []
    sup.listeners.append(lambda r, old, new, reason: seen.append((old, new)))
    sup.spawn(rep)
    sup.on_ready(rep, {"models": {"m": "ref"}})
    rep.inflight = rep.host.max_inflight
    sup.update_load(rep)
    rep.inflight = 0
    sup.update_load(rep)
    assert seen == [
        (HostState.STOPPED, HostState.STARTING),
        (HostState.STARTING, HostState.READY),
        (HostState.READY, HostState.BUSY),
        (HostState.BUSY, HostState.READY),
    ]


def test_a_crash_schedules_a_restart_and_the_next_tick_respawns() -> None:
    parts = build_parts()
    sup, rep = parts.supervisor, parts.replica("b.0")
    rep.proc.exit(1)
    sup.tick()
    assert rep.state is HostState.RESTARTING and rep.restarts == 1
    assert rep.last_restart_reason == "exited with 1"
    sup.tick()  # backoff_initial_s = 0: due at once
    assert rep.state is HostState.STARTING and rep.generation == 2


def test_too_many_restarts_in_the_window_leave_it_failed() -> None:
    parts = build_parts(unit_config(restart={"backoff_initial_s": 0.0, "max_restarts": 3}))
    sup, rep = parts.supervisor, parts.replica("b.0")
    for _ in range(3):
        rep.proc.exit(1)
        sup.tick()
        assert rep.state is HostState.RESTARTING
        sup.tick()
        assert rep.state is HostState.STARTING
    rep.proc.exit(1)
    sup.tick()
    assert rep.state is HostState.FAILED
    assert "3 restarts" in rep.last_reason
    sup.tick()
    assert rep.state is HostState.FAILED and rep.proc is None  # no more respawns


def test_backoff_grows_until_its_ceiling() -> None:
    restart = {
        "backoff_initial_s": 0.5,
        "backoff_factor": 2.0,
        "backoff_max_s": 1.5,
        "max_restarts": 9,
    }
    parts = build_parts(unit_config(restart=restart))
    sup, rep = parts.supervisor, parts.replica("b.0")
    delays = []
    for _ in range(3):
        rep.proc.exit(1)
        sup.tick()
        delays.append(round(rep.next_start_at - rep.restart_times[-1], 3))
        rep.next_start_at = 0.0  # due now; the test need not sleep
        sup.tick()
    assert delays == [0.5, 1.0, 1.5]


def test_an_engine_that_cannot_start_fails_at_once() -> None:
    parts = build_parts()
    sup, rep = parts.supervisor, parts.replica("b.0")
    rep.proc.exit(EXIT_ENGINE_FAILED)
    sup.tick()
    assert rep.state is HostState.FAILED and rep.restarts == 0


def test_missed_heartbeats_recycle_the_replica() -> None:
    parts = build_parts()
    sup, rep = parts.supervisor, parts.replica("b.0")
    rep.started_at -= 120.0
    rep.last_heartbeat = rep.started_at + 60.0  # heard from once, then silent for a minute
    sup.tick()
    assert (rep.name, int(signal.SIGKILL)) in sup.signals
    assert rep.state is HostState.UNHEALTHY
    sup.tick()
    assert rep.state is HostState.RESTARTING and "no heartbeat" in rep.last_restart_reason


def test_not_ready_in_time_is_recycled() -> None:
    parts = build_parts(ready=())
    sup, rep = parts.supervisor, parts.replica("b.0")
    sup.spawn(rep)
    rep.started_at -= rep.host.ready_timeout_s + 1
    rep.last_heartbeat = rep.started_at  # nothing heard yet
    sup.tick()
    sup.tick()
    assert rep.state is HostState.RESTARTING and "not ready after" in rep.last_restart_reason


def test_drain_waits_for_work_then_recycles() -> None:
    parts = build_parts()
    sup, rep = parts.supervisor, parts.replica("b.0")
    rep.inflight = 1
    sup.drain(rep, "RSS over the limit")
    sup.tick()
    assert rep.state is HostState.UNHEALTHY and rep.proc.returncode is None
    rep.inflight = 0
    sup.tick()  # drained: killed
    sup.tick()  # reaped: restart scheduled
    assert rep.state is HostState.RESTARTING and rep.last_restart_reason == "RSS over the limit"


def test_stop_asks_then_escalates_and_ends_stopped() -> None:
    parts = build_parts()
    sup, rep = parts.supervisor, parts.replica("b.0")
    sup.stop(rep)
    assert sup.shutdowns == ["b.0"] and rep.stop_target is HostState.STOPPED
    rep.stop_deadline_term = rep.stop_deadline_kill = 0.0  # both deadlines passed
    sup.tick()
    assert sup.signals[-1] == ("b.0", int(signal.SIGKILL))
    sup.tick()
    assert rep.state is HostState.STOPPED and rep.proc is None


def test_an_operator_start_revives_a_failed_replica_with_a_fresh_budget() -> None:
    parts = build_parts()
    sup, rep = parts.supervisor, parts.replica("b.0")
    rep.proc.exit(EXIT_ENGINE_FAILED)
    sup.tick()
    sup.start(rep)
    assert rep.state is HostState.STARTING and not rep.restart_times


def test_illegal_transitions_are_refused_loudly() -> None:
    parts = build_parts(ready=())
    rep = parts.replica("b.0")
    with pytest.raises(RuntimeError, match="illegal transition stopped -> ready"):
        parts.supervisor._transition(rep, HostState.READY)


def test_ready_from_an_unknown_generation_is_ignored_by_identity() -> None:
    parts = build_parts()
    sup, rep = parts.supervisor, parts.replica("b.0")
    old_identity = rep.identity
    rep.proc.exit(1)
    sup.tick()
    sup.tick()
    assert sup.by_identity(old_identity) is None and sup.by_identity(rep.identity) is rep
