"""The request table on processless replicas: dispatch, queue, deadlines, retries, answers."""

from __future__ import annotations

import math

import pytest

from orchestrator.coordinator.requests import RequestTable
from orchestrator.coordinator.supervisor import HostState
from orchestrator.wire.errors import (
    BadAudioError,
    BadRequestError,
    NoHostAvailableError,
    UnknownModelError,
)
from orchestrator.wire.protocol import Kind, Message
from table_support import Parts, build_parts, make_ready, unit_config

CLIENT = b"client-1"
PCM = b"\x00\x00" * 1600  # 0.1 s at 16 kHz


def table(parts: Parts) -> RequestTable:
    settings = parts.config.coordinator
    return RequestTable(settings, parts.router, parts.supervisor, parts.outbox)


def transcribe(cid: object = "c1", **header: object) -> Message:
    body = {"id": cid, "model": "m", "sample_rate": 16_000, "format": "pcm16", **header}
    return Message(Kind.TRANSCRIBE, body, [PCM])


def host_result(rid: str, **extra: object) -> Message:
    return Message(Kind.RESULT, {"id": rid, "result": {"text": "hi"}, "compute_s": 0.01, **extra})


def host_error(rid: str, code: str, message: str = "no") -> Message:
    return Message(Kind.ERROR, {"id": rid, "error": {"code": code, "message": message}})


def sent_to_hosts(parts: Parts) -> list[tuple[str, str]]:
    return [(name, m.header["id"]) for name, m in parts.outbox.host_messages(Kind.TRANSCRIBE)]


def test_a_request_goes_to_the_first_host_with_its_own_id_and_the_time_left() -> None:
    parts = build_parts(unit_config(request_timeout_s=10.0))
    t = table(parts)
    t.on_client_request(CLIENT, transcribe(options={"language": "en"}))
    [(name, msg)] = parts.outbox.host_messages(Kind.TRANSCRIBE)
    assert name in ("a.0", "a.1") and msg.header["id"] == "1" and msg.header["model"] == "m"
    assert 9.0 < msg.header["timeout_s"] <= 10.0
    assert msg.header["options"] == {"language": "en"} and msg.payloads == [PCM]
    assert parts.replica(name).inflight == 1


def test_a_result_reaches_the_client_under_its_own_id_with_timings() -> None:
    parts = build_parts()
    t = table(parts)
    t.on_client_request(CLIENT, transcribe(cid=7))
    [(name, _)] = sent_to_hosts(parts)
    t.on_host_reply(parts.replica(name), host_result("1", host_queued_s=0.5))
    [(client, msg)] = parts.outbox.to_clients
    assert client == CLIENT and msg.kind is Kind.RESULT
    assert msg.header["id"] == 7 and msg.header["host"] == "a" and msg.header["attempts"] == 1
    assert msg.header["timings"]["queued_s"] >= 0.5
    assert parts.replica(name).inflight == 0 and parts.replica(name).served == 1
    assert t.stats()["results"] == 1 and t.stats()["inflight"] == 0


def test_requests_spread_over_replicas_then_fall_back_then_queue() -> None:
    parts = build_parts(unit_config(hosts={
        "a": {"python": "current", "engine": "x.y:E", "models": {"m": "r"}, "replicas": 2, "max_inflight": 1},
        "b": {"python": "current", "engine": "x.y:E", "models": {"m": "r"}, "max_inflight": 1},
    }))  # fmt: skip
    t = table(parts)
    for i in range(4):
        t.on_client_request(CLIENT, transcribe(cid=i))
    assert sorted(name for name, _ in sent_to_hosts(parts)) == ["a.0", "a.1", "b.0"]
    assert len(t.pending) == 1 and t.stats()["queued"] == 1
    assert parts.replica("a.0").state is HostState.BUSY
    t.on_host_reply(parts.replica("b.0"), host_result(sent_to_hosts(parts)[2][1]))
    assert len(t.pending) == 0 and sent_to_hosts(parts)[-1][0] == "b.0"  # the queue drained


def test_a_full_queue_refuses_with_overloaded() -> None:
    parts = build_parts(unit_config(max_queue=1))
    for rep in parts.supervisor.replicas:
        rep.inflight = rep.host.max_inflight
    t = table(parts)
    t.on_client_request(CLIENT, transcribe(cid=1))
    t.on_client_request(CLIENT, transcribe(cid=2))
    [(_, msg)] = parts.outbox.to_clients
    assert msg.kind is Kind.ERROR and msg.header["id"] == 2
    assert msg.header["error"]["code"] == "overloaded" and parts.outbox.errors == {"overloaded": 1}


def test_unknown_model_and_bad_fields_are_refused_before_anything_is_sent() -> None:
    parts = build_parts(unit_config(max_audio_s=0.05))
    t = table(parts)
    with pytest.raises(UnknownModelError):
        t.on_client_request(CLIENT, transcribe(model="nope"))
    with pytest.raises(BadAudioError, match=r"over the 0\.05s limit"):
        t.on_client_request(CLIENT, transcribe())
    parts = build_parts()
    t = table(parts)
    with pytest.raises(BadRequestError, match="timeout_s must be a number"):
        t.on_client_request(CLIENT, transcribe(timeout_s="soon"))
    with pytest.raises(BadRequestError, match="timeout_s must be a number"):
        t.on_client_request(CLIENT, transcribe(timeout_s=math.inf))
    assert parts.outbox.to_hosts == [] and t.received == 0


def test_a_pin_to_a_host_that_does_not_serve_the_model_is_no_host_available() -> None:
    parts = build_parts()
    t = table(parts)
    t.on_client_request(CLIENT, transcribe(host="zzz"))
    [(_, msg)] = parts.outbox.to_clients
    assert msg.header["error"]["code"] == "no_host_available"
    t.on_client_request(CLIENT, transcribe(cid="c2", host="b"))
    assert sent_to_hosts(parts) == [("b.0", "2")]


def test_a_queued_request_past_its_deadline_is_answered() -> None:
    parts = build_parts()
    for rep in parts.supervisor.replicas:
        rep.inflight = rep.host.max_inflight
    t = table(parts)
    t.on_client_request(CLIENT, transcribe(timeout_s=1.0))
    t.tick(t.pending[0].deadline + 0.01)
    [(_, msg)] = parts.outbox.to_clients
    assert (
        msg.header["error"]["code"] == "deadline_exceeded"
        and "queued" in msg.header["error"]["message"]
    )
    assert not t.pending


def test_a_dispatched_request_past_its_deadline_is_answered_then_its_host_recycled() -> None:
    parts = build_parts(unit_config(stuck_request_grace_s=2.0))
    t = table(parts)
    t.on_client_request(CLIENT, transcribe(timeout_s=1.0))
    [(name, _)] = sent_to_hosts(parts)
    deadline = t.inflight["1"].deadline
    t.tick(deadline + 0.1)
    assert parts.outbox.to_clients[-1][1].header["error"]["code"] == "deadline_exceeded"
    assert parts.supervisor.signals == []  # within the grace: the host may still answer
    t.tick(deadline + 2.5)
    assert t.recycled_stuck == 1 and parts.supervisor.signals[0][0] == name
    assert len(parts.outbox.to_clients) == 1  # answered once only


def test_a_late_answer_after_the_deadline_is_not_sent_twice() -> None:
    parts = build_parts()
    t = table(parts)
    t.on_client_request(CLIENT, transcribe(timeout_s=1.0))
    [(name, _)] = sent_to_hosts(parts)
    t.tick(t.inflight["1"].deadline + 0.1)
    t.on_host_reply(parts.replica(name), host_result("1"))
    assert [m.kind for _, m in parts.outbox.to_clients] == [Kind.ERROR]
    assert parts.replica(name).inflight == 0


def test_model_unavailable_on_one_host_tries_the_next() -> None:
    parts = build_parts()
    t = table(parts)
    t.on_client_request(CLIENT, transcribe())
    [(first, _)] = sent_to_hosts(parts)
    t.on_host_reply(parts.replica(first), host_error("1", "model_unavailable"))
    assert [name for name, _ in sent_to_hosts(parts)][1] != first
    assert parts.outbox.to_clients == []


def test_other_host_errors_are_forwarded_under_the_client_id_and_counted() -> None:
    parts = build_parts()
    t = table(parts)
    t.on_client_request(CLIENT, transcribe(cid="x"))
    [(name, _)] = sent_to_hosts(parts)
    t.on_host_reply(parts.replica(name), host_error("1", "bad_audio", "odd length"))
    [(_, msg)] = parts.outbox.to_clients
    assert msg.kind is Kind.ERROR and msg.header["id"] == "x"
    assert msg.header["error"]["message"] == "odd length" and parts.outbox.errors == {
        "bad_audio": 1
    }
    assert parts.replica(name).errors == 1


def test_a_reply_from_a_replica_the_request_is_not_on_is_ignored() -> None:
    parts = build_parts()
    t = table(parts)
    t.on_client_request(CLIENT, transcribe())
    t.on_host_reply(parts.replica("b.0"), host_result("1"))
    t.on_host_reply(parts.replica("b.0"), host_result("999"))
    assert parts.outbox.to_clients == [] and t.stats()["inflight"] == 1


def test_a_dead_host_request_is_retried_once_elsewhere_then_answered() -> None:
    parts = build_parts()
    t = table(parts)
    t.on_client_request(CLIENT, transcribe())
    [(first, _)] = sent_to_hosts(parts)
    t.on_replica_lost(parts.replica(first), "exit 1")
    assert t.retries == 1 and len(sent_to_hosts(parts)) == 2
    second = sent_to_hosts(parts)[1][0]
    assert second != first and parts.replica(first).inflight == 0
    t.on_replica_lost(parts.replica(second), "exit 1")
    [(_, msg)] = parts.outbox.to_clients
    assert (
        msg.header["error"]["code"] == "host_crashed" and second in msg.header["error"]["message"]
    )


def test_a_retry_with_no_other_host_reports_the_crash() -> None:
    host = {"python": "current", "engine": "x.y:E", "models": {"m": "r"}}
    parts = build_parts(unit_config(hosts={"a": host}))
    t = table(parts)
    t.on_client_request(CLIENT, transcribe())
    parts.supervisor.stop(parts.replica("a.0"))  # not coming back: nothing to wait for
    t.on_replica_lost(parts.replica("a.0"), "killed")
    [(_, msg)] = parts.outbox.to_clients
    assert (
        msg.header["error"]["code"] == "host_crashed"
        and "no other host" in msg.header["error"]["message"]
    )


def test_no_retry_while_the_coordinator_closes() -> None:
    parts = build_parts()
    t = table(parts)
    t.on_client_request(CLIENT, transcribe())
    [(first, _)] = sent_to_hosts(parts)
    parts.supervisor.closing = True
    t.on_replica_lost(parts.replica(first), "stopping")
    assert t.retries == 0 and len(sent_to_hosts(parts)) == 1
    assert parts.outbox.to_clients[0][1].header["error"]["code"] == "host_crashed"


def test_close_all_answers_queued_and_dispatched_requests() -> None:
    host = {"python": "current", "engine": "x.y:E", "models": {"m": "r"}, "max_inflight": 1}
    parts = build_parts(unit_config(hosts={"a": host}))
    t = table(parts)
    t.on_client_request(CLIENT, transcribe(cid=1))
    t.on_client_request(CLIENT, transcribe(cid=2))
    assert len(t.pending) == 1
    t.close_all("coordinator shut down")
    assert sorted(m.header["id"] for _, m in parts.outbox.to_clients) == [1, 2]
    assert {m.header["error"]["code"] for _, m in parts.outbox.to_clients} == {"host_crashed"}


def test_stats_count_what_the_table_saw() -> None:
    parts = build_parts()
    t = table(parts)
    for i in range(3):
        t.on_client_request(CLIENT, transcribe(cid=i))
    assert t.stats() == {
        "queued": 0, "inflight": 3, "requests": 3, "results": 0, "retries": 0, "recycled_stuck": 0,
    }  # fmt: skip


def test_when_every_host_is_down_the_request_is_refused_at_once() -> None:
    parts = build_parts(ready=())
    t = table(parts)
    t.on_client_request(CLIENT, transcribe())
    assert parts.outbox.to_clients[0][1].header["error"]["code"] == NoHostAvailableError.code


def _one_slot_host() -> Parts:
    host = {"python": "current", "engine": "x.y:E", "models": {"m": "r"}, "max_inflight": 1}
    return build_parts(unit_config(hosts={"a": host}))


def _one_slot_host_asked(count: int) -> tuple[Parts, RequestTable]:
    """The one-slot host's table after requests 0..count-1 arrived (one sent, the rest queued)."""
    parts = _one_slot_host()
    t = table(parts)
    for cid in range(count):
        t.on_client_request(CLIENT, transcribe(cid=cid))
    return parts, t


def test_a_request_arriving_behind_queued_ones_waits_without_routing_and_keeps_its_turn() -> None:
    parts = _one_slot_host()
    t = table(parts)
    asked: list[object] = []
    choose = parts.router.choose
    parts.router.choose = lambda *a, **k: asked.append(a) or choose(*a, **k)  # type: ignore[method-assign]
    for cid in range(4):
        t.on_client_request(CLIENT, transcribe(cid=cid))
    assert len(asked) == 2  # the first dispatched, the second queued; the rest queued behind it
    assert [r.client_id for r in t.pending] == [1, 2, 3]
    for expected in (1, 2, 3):  # each reply frees the one slot for the oldest waiting request
        rid = sent_to_hosts(parts)[-1][1]
        t.on_host_reply(parts.replica("a.0"), host_result(rid))
        assert t.inflight[sent_to_hosts(parts)[-1][1]].client_id == expected
    assert not t.pending and t.stats()["queued"] == 0


def test_a_reply_drains_only_what_fits_and_requeues_the_rest_in_order() -> None:
    parts, t = _one_slot_host_asked(6)
    t.on_host_reply(parts.replica("a.0"), host_result(sent_to_hosts(parts)[-1][1]))
    assert [r.client_id for r in t.pending] == [2, 3, 4, 5] and len(sent_to_hosts(parts)) == 2


def test_queued_requests_are_answered_when_their_only_host_is_gone_for_good() -> None:
    parts, t = _one_slot_host_asked(3)
    rep = parts.replica("a.0")
    parts.supervisor.stop(rep)  # stopped by an operator: nothing will serve the queue
    t.on_replica_lost(rep, "stopped")
    answered = {m.header["id"]: m.header["error"]["code"] for _, m in parts.outbox.to_clients}
    assert answered == {
        0: "host_crashed",
        1: NoHostAvailableError.code,
        2: NoHostAvailableError.code,
    }
    assert not t.pending


def test_queued_requests_keep_waiting_for_a_host_that_restarts() -> None:
    parts, t = _one_slot_host_asked(2)
    rep = parts.replica("a.0")
    rep.proc.exit(1)  # type: ignore[union-attr]
    parts.supervisor.tick()  # a crash: the restart policy brings it back
    t.on_replica_lost(rep, "exited with 1")
    # The one in flight had no other host to retry on; the queued one waits for the restart.
    [(_, crashed)] = parts.outbox.to_clients
    assert crashed.header["id"] == 0 and crashed.header["error"]["code"] == "host_crashed"
    assert [r.client_id for r in t.pending] == [1]
    parts.supervisor.tick()  # the restart is due: respawned
    make_ready(parts.supervisor, rep)
    t.drain_pending()
    assert not t.pending and t.inflight[sent_to_hosts(parts)[-1][1]].client_id == 1


def test_errors_for_a_sent_request_name_its_host_and_replica_in_their_details() -> None:
    parts = build_parts(unit_config(request_timeout_s=10.0))
    t = table(parts)
    for cid in ("late", "forwarded", "crashed"):
        t.on_client_request(CLIENT, transcribe(cid=cid, timeout_s=1.0 if cid == "late" else 10.0))
    (late, _), (fwd_on, fwd_rid), (crash_on, _) = sent_to_hosts(parts)
    t.on_host_reply(parts.replica(fwd_on), host_error(fwd_rid, "bad_audio", "too loud"))
    late_req = next(r for r in t.inflight.values() if r.client_id == "late")
    t.tick(late_req.deadline + 0.01)  # only "late" is due
    parts.supervisor.closing = True  # no retry: the crash is answered
    t.on_replica_lost(parts.replica(crash_on), "exit 1")
    errors = {m.header["id"]: m.header["error"] for _, m in parts.outbox.to_clients}
    codes = {cid: e["code"] for cid, e in errors.items()}
    assert codes == {
        "forwarded": "bad_audio",
        "crashed": "host_crashed",
        "late": "deadline_exceeded",
    }
    for cid, name in (("late", late), ("forwarded", fwd_on), ("crashed", crash_on)):
        details = errors[cid]["details"]
        assert details["replica"] == name and details["host"] == parts.replica(name).host.name
    assert errors["forwarded"]["message"] == "too loud"  # the host's words, unchanged
