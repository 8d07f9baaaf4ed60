"""The coordinator's stream table on processless replicas: binding, chunks, failover, replay."""

from __future__ import annotations

import time

import pytest

from orchestrator.coordinator.streams import StreamTable
from orchestrator.wire.errors import (
    BadAudioError,
    BadRequestError,
    OverloadedError,
    StreamClosedError,
    StreamSequenceError,
)
from orchestrator.wire.protocol import Kind, Message
from table_support import Parts, build_parts, make_ready, unit_config

CLIENT = b"client-1"
CHUNK = b"\x01\x00" * 320  # 20 ms of PCM16 at 16 kHz


def table(parts: Parts) -> StreamTable:
    return StreamTable(parts.config.coordinator, parts.router, parts.supervisor, parts.outbox)


def open_stream(t: StreamTable, cid: object = "s1", **header: object) -> None:
    body = {"id": cid, "model": "m", "sample_rate": 16_000, "format": "pcm16", **header}
    t.on_client_open(CLIENT, Message(Kind.STREAM_OPEN, body))


def chunk(t: StreamTable, seq: int, data: bytes = CHUNK, cid: object = "s1") -> None:
    t.on_client_audio(CLIENT, Message(Kind.STREAM_AUDIO, {"id": cid, "seq": seq}, [data]))


def host_event(t: StreamTable, parts: Parts, replica: str, **event: object) -> None:
    stream = next(iter(t.streams.values()))
    t.on_host_event(
        parts.replica(replica), Message(Kind.STREAM_EVENT, {"sid": stream.sid, **event})
    )


def test_open_binds_to_the_first_host_and_tells_the_client() -> None:
    parts = build_parts()
    t = table(parts)
    open_stream(t, options={"language": "en"})
    [(name, msg)] = parts.outbox.host_messages(Kind.STREAM_OPEN)
    assert name in ("a.0", "a.1") and msg.header["start_sample"] == 0
    assert msg.header["options"] == {"language": "en"} and msg.header["first_utterance"] == 0
    [event] = parts.outbox.events()
    assert event["type"] == "opened" and event["host"] == "a" and event["id"] == "s1"
    assert parts.replica(name).streams == 1


def test_streams_spread_by_open_streams() -> None:
    parts = build_parts()
    t = table(parts)
    open_stream(t, cid=1)
    open_stream(t, cid=2)
    assert sorted(n for n, _ in parts.outbox.host_messages(Kind.STREAM_OPEN)) == ["a.0", "a.1"]


def test_chunks_are_forwarded_in_order_with_the_host_sequence() -> None:
    parts = build_parts()
    t = table(parts)
    open_stream(t)
    for seq in range(3):
        chunk(t, seq)
    sent = parts.outbox.host_messages(Kind.STREAM_AUDIO)
    assert [m.header["seq"] for _, m in sent] == [0, 1, 2]
    assert all(m.payloads == [CHUNK] for _, m in sent)
    stream = next(iter(t.streams.values()))
    assert stream.samples_in == 960 and len(stream.buffer) == 3 * len(CHUNK)


def test_a_chunk_out_of_order_or_of_partial_samples_is_refused() -> None:
    parts = build_parts()
    t = table(parts)
    open_stream(t)
    with pytest.raises(StreamSequenceError, match="expected chunk 0, got 1"):
        chunk(t, 1)
    with pytest.raises(BadAudioError, match="whole pcm16 samples"):
        chunk(t, 0, b"\x00\x00\x00")
    with pytest.raises(StreamClosedError):
        chunk(t, 0, cid="other")


def test_unconfirmed_audio_is_capped() -> None:
    parts = build_parts(unit_config(max_audio_s=0.05))
    t = table(parts)
    open_stream(t)
    chunk(t, 0)
    chunk(t, 1)
    with pytest.raises(OverloadedError, match="unconfirmed"):
        chunk(t, 2)


def test_failover_replays_unconfirmed_audio_from_the_first_unconfirmed_sample() -> None:
    parts = build_parts()
    t = table(parts)
    open_stream(t)
    for seq in range(5):
        chunk(t, seq)
    first = parts.outbox.host_messages(Kind.STREAM_OPEN)[0][0]
    host_event(t, parts, first, type="progress", confirmed_sample=640)
    host_event(t, parts, first, type="final", text="hi", utterance=0, end_sample=960, n_samples=960)
    t.on_replica_lost(parts.replica(first), "exit 1")
    opens = parts.outbox.host_messages(Kind.STREAM_OPEN)
    assert len(opens) == 2 and opens[1][0] != first
    reopen = opens[1][1].header
    assert reopen["start_sample"] == 960 and reopen["first_utterance"] == 1
    replay = [m for n, m in parts.outbox.host_messages(Kind.STREAM_AUDIO) if n == opens[1][0]]
    assert b"".join(m.payloads[0] for m in replay) == CHUNK * 2  # samples 960..1600
    assert [m.header["seq"] for m in replay] == list(range(len(replay)))
    changed = [e for e in parts.outbox.events() if e["type"] == "host_changed"]
    assert changed and changed[0]["from"] == first and changed[0]["replayed_s"] == 0.04
    assert t.failovers == 1


def test_a_closing_stream_is_closed_again_on_the_new_host() -> None:
    parts = build_parts()
    t = table(parts)
    open_stream(t)
    chunk(t, 0)
    t.on_client_close(CLIENT, Message(Kind.STREAM_CLOSE, {"id": "s1"}))
    first = parts.outbox.host_messages(Kind.STREAM_CLOSE)[0][0]
    t.on_replica_lost(parts.replica(first), "exit 1")
    closes = parts.outbox.host_messages(Kind.STREAM_CLOSE)
    assert len(closes) == 2 and closes[1][0] != first


def test_late_events_from_the_old_host_are_void() -> None:
    parts = build_parts()
    t = table(parts)
    open_stream(t)
    first = parts.outbox.host_messages(Kind.STREAM_OPEN)[0][0]
    t.on_replica_lost(parts.replica(first), "exit 1")
    before = len(parts.outbox.events())
    host_event(t, parts, first, type="partial", text="stale")
    assert len(parts.outbox.events()) == before


def test_with_no_ready_replica_a_stream_parks_and_attaches_when_one_is_ready() -> None:
    parts = build_parts(ready=())
    for rep in parts.supervisor.replicas:
        parts.supervisor.spawn(rep)  # starting
    t = table(parts)
    open_stream(t)
    chunk(t, 0)
    assert parts.outbox.events()[0] == {"type": "opened", "host": None, "parked": True, "id": "s1"}
    assert parts.outbox.host_messages(Kind.STREAM_OPEN) == []
    make_ready(parts.supervisor, parts.replica("b.0"))
    t.on_replica_ready(parts.replica("b.0"))
    assert parts.outbox.host_messages(Kind.STREAM_OPEN)[0][0] == "b.0"
    assert parts.outbox.host_messages(Kind.STREAM_AUDIO)[0][1].payloads == [CHUNK]
    assert t.stats()["parked"] == 0


def test_a_parked_stream_fails_after_the_failover_timeout() -> None:
    parts = build_parts(unit_config(stream_failover_timeout_s=5.0), ready=())
    for rep in parts.supervisor.replicas:
        parts.supervisor.spawn(rep)
    t = table(parts)
    open_stream(t)
    t.tick(time.monotonic() + 6.0)
    types = [e["type"] for e in parts.outbox.events()]
    assert types == ["opened", "error", "closed"] and not t.streams
    assert parts.outbox.errors == {"no_host_available": 1}


def test_a_stream_no_host_can_take_is_refused_with_error_then_closed() -> None:
    parts = build_parts(ready=())
    t = table(parts)
    open_stream(t)
    events = parts.outbox.events()
    assert [e["type"] for e in events] == ["error", "closed"]
    assert events[0]["error"]["code"] == "no_host_available" and not t.streams


def test_full_replicas_refuse_with_overloaded() -> None:
    host = {"python": "current", "engine": "x.y:E", "models": {"m": "r"}, "max_streams": 1}
    parts = build_parts(unit_config(hosts={"a": host}))
    t = table(parts)
    open_stream(t, cid=1)
    open_stream(t, cid=2)
    assert parts.outbox.events()[-2]["error"]["code"] == "overloaded"


def test_the_coordinator_stream_limit_is_overloaded_and_reopening_is_refused() -> None:
    parts = build_parts(unit_config(max_streams=1))
    t = table(parts)
    open_stream(t, cid=1)
    with pytest.raises(BadRequestError, match="already open"):
        open_stream(t, cid=1)
    open_stream(t, cid=2)
    assert parts.outbox.events()[-2]["error"]["code"] == "overloaded"


def test_bad_open_fields_are_refused() -> None:
    parts = build_parts()
    t = table(parts)
    open_stream(t, cid=1, format="mp3")
    open_stream(t, cid=2, sample_rate=100)
    open_stream(t, cid=3, options=["x"])
    codes = [e["error"]["code"] for e in parts.outbox.events() if e["type"] == "error"]
    assert codes == ["bad_request", "bad_audio", "bad_request"] and not t.streams


def test_the_host_closed_event_reaches_the_client_with_whole_stream_totals() -> None:
    parts = build_parts()
    t = table(parts)
    open_stream(t)
    chunk(t, 0)
    chunk(t, 1)
    name = parts.outbox.host_messages(Kind.STREAM_OPEN)[0][0]
    host_event(t, parts, name, type="final", utterance=0, end_sample=640, n_samples=600, text="x")
    host_event(t, parts, name, type="closed", samples_in=640)
    closed = parts.outbox.events()[-1]
    assert closed["type"] == "closed" and closed["samples_in"] == 640
    assert closed["samples_in_finals"] == 600 and closed["samples_discarded"] == 40
    assert not t.streams and parts.replica(name).streams == 0


def test_a_host_error_event_is_forwarded_as_an_error() -> None:
    parts = build_parts()
    t = table(parts)
    open_stream(t)
    name = parts.outbox.host_messages(Kind.STREAM_OPEN)[0][0]
    stream = next(iter(t.streams.values()))
    err = {"code": "internal", "message": "host is still loading"}
    t.on_host_event(parts.replica(name), Message(Kind.ERROR, {"sid": stream.sid, "error": err}))
    assert parts.outbox.events()[-1]["type"] == "error"
    assert parts.outbox.events()[-1]["error"] == err


def test_an_idle_stream_is_closed() -> None:
    parts = build_parts(unit_config(stream_idle_timeout_s=10.0))
    t = table(parts)
    open_stream(t)
    t.tick(time.monotonic() + 11.0)
    assert parts.outbox.events()[-2]["error"]["code"] == "stream_closed" and not t.streams


def test_close_all_fails_every_stream() -> None:
    parts = build_parts()
    t = table(parts)
    open_stream(t, cid=1)
    open_stream(t, cid=2)
    t.close_all("coordinator shut down")
    assert [e["type"] for e in parts.outbox.events()[-4:]] == ["error", "closed"] * 2
    assert t.stats()["open"] == 0 and t.stats()["opened_total"] == 2
