"""The routing hot path's shortcuts keep the guarantees of the long way round.

- the signature is standard HMAC-SHA256 (pads hashed once) over the frame count, each frame's
  length and the frames, so any peer can check it with the standard library alone;
- the fast header parse agrees with ``json.loads`` on what it accepts and refuses;
- the synthetic engine is answered inline only when no fault could make it sleep or hang;
- an AsyncClient delivers a burst of replies larger than one wake-up's share, every one of them;
- what the coordinator's outbox and a host send while handling a batch goes out at the batch's
  end, every message once and in order (a lone message goes at once).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from orchestrator import client as client_module
from orchestrator.coordinator import Coordinator
from orchestrator.coordinator.outbox import Outbox
from orchestrator.errors import ProtocolError
from orchestrator.host.synthetic import SyntheticEngine, parse_fingerprint
from orchestrator.wire.contract import ModelSpec
from orchestrator.wire.protocol import VERSION_FRAME, Codec, Kind, Message, new_key
from orchestrator.wire.sockets import MAX_HELD_SENDS, HeldSends
from support import host_on_router, make_config, running, synthetic_host
from table_support import ProcesslessSupervisor, unit_config

#: Far more than 400 health answers take on a busy machine; a lost reply would hang forever.
BURST_TIMEOUT_S = 30.0


@pytest.mark.parametrize("key_bytes", [16, 32, 64, 100])
def test_the_signature_is_hmac_sha256_over_count_lengths_and_frames(key_bytes: int) -> None:
    key = new_key()[:key_bytes].ljust(key_bytes, b"k")
    body = [b"transcribe", b'{"id":"1"}', b"\x01\x02" * 300, b""]
    lengths = struct.pack("<5Q", len(body), *map(len, body))
    expected = hmac.new(key, lengths + b"".join(body), hashlib.sha256).digest()
    assert Codec(key).sign(body) == expected


def signed(codec: Codec, header_text: bytes) -> list[bytes]:
    body = [Kind.HEARTBEAT.value.encode(), header_text]
    return [VERSION_FRAME, codec.sign(body), *body]


@pytest.mark.parametrize(
    "text", [b'{"a":1}', b' {"a": [1, 2.5, null]} ', b'\n{"b":"\\u00e9"}\t', b'{"a":1}{}', b""]
)
def test_headers_are_accepted_exactly_when_json_loads_accepts_them(text: bytes) -> None:
    key = new_key()
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(ProtocolError) as refused:
            Codec(key).decode(signed(Codec(key), text))
        assert refused.value.details["reason"] == "malformed"
    else:
        assert Codec(key).decode(signed(Codec(key), text)).header == expected


def test_the_synthetic_engine_runs_inline_only_when_no_fault_applies() -> None:
    assert SyntheticEngine({}).runs_inline({}) is True
    assert SyntheticEngine({}).runs_inline({"language": "en"}) is True
    assert SyntheticEngine({}).runs_inline({"context": "hang"}) is False
    for option in ("delay_s", "hang_after_requests", "crash_after_requests"):
        assert SyntheticEngine({option: 1}).runs_inline({}) is False


def test_answer_once_gives_each_models_first_answer_to_every_later_request() -> None:
    """The routing bench's like-for-like model: no work per request after a model's first."""
    engine = SyntheticEngine({"answer_once": True})
    for name in ("a", "b"):
        engine.load(ModelSpec(name, "synthetic"))
    first = engine.transcribe("a", np.full(320, 0.5, dtype=np.float32), {})
    later = engine.transcribe("a", np.zeros(16, dtype=np.float32), {})
    assert later is first and parse_fingerprint(first.text)["n"] == 320
    other = engine.transcribe("b", np.zeros(16, dtype=np.float32), {})
    assert parse_fingerprint(other.text)["n"] == 16  # each model has its own first answer
    # Without the option every request is fingerprinted.
    plain = SyntheticEngine({})
    plain.load(ModelSpec("a", "synthetic"))
    plain.transcribe("a", np.full(320, 0.5, dtype=np.float32), {})
    assert parse_fingerprint(plain.transcribe("a", np.zeros(16, np.float32), {}).text)["n"] == 16


def test_an_async_client_delivers_a_burst_larger_than_one_wake_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A small share per wake-up, so bursts surely exceed it and the rest waits for the next turn.
    monkeypatch.setattr(client_module, "MAX_MESSAGES_PER_WAKE", 3)
    count = 400

    async def burst(coord: Coordinator) -> list[dict[str, Any]]:
        client = coord.client()
        try:
            return await asyncio.wait_for(
                asyncio.gather(*(client.health() for _ in range(count))), BURST_TIMEOUT_S
            )
        finally:
            await client.aclose()

    with running(make_config({"syn": synthetic_host()})) as coord:
        replies = asyncio.run(burst(coord))
    assert len(replies) == count and all("replicas" in r for r in replies)


def test_a_replayed_message_is_still_refused() -> None:
    key = new_key()
    frames = Codec(key).encode(Message(Kind.HEARTBEAT, {}))
    receiver = Codec(key)
    receiver.decode(frames)
    with pytest.raises(ProtocolError) as refused:
        receiver.decode(frames)
    assert refused.value.details["reason"] == "replay"


def _dealer(ctx: zmq.Context[Any], endpoint: str, identity: bytes) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, identity)
    sock.connect(endpoint)
    return sock


def _ids(sock: zmq.Socket[Any], codec: Codec, count: int) -> list[Any]:
    """The ids of the next ``count`` messages on ``sock`` (each within a second)."""
    ids = []
    for _ in range(count):
        assert sock.poll(1000), f"only {len(ids)} of {count} messages arrived"
        ids.append(codec.decode(sock.recv_multipart()).header["id"])
    return ids


def test_the_outbox_holds_a_batch_and_sends_it_in_order_at_release() -> None:
    supervisor = ProcesslessSupervisor(unit_config())
    rep = supervisor.replicas[0]
    client_codec, host_codec = Codec(new_key()), Codec(new_key())
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        routers = []
        for name in ("clients", "hosts"):
            router = ctx.socket(zmq.ROUTER)
            router.setsockopt(zmq.LINGER, 0)
            router.bind(f"inproc://outbox-{name}")
            routers.append(router)
        client = _dealer(ctx, "inproc://outbox-clients", b"client-1")
        host = _dealer(ctx, "inproc://outbox-hosts", rep.identity)
        for sock, router in ((client, routers[0]), (host, routers[1])):
            sock.send(b"hello")  # the ROUTER learns the peer's identity
            assert router.poll(1000)
            router.recv_multipart()
        out = Outbox(routers[0], client_codec, routers[1], host_codec)

        out.to_client(b"client-1", Message(Kind.RESULT, {"id": "alone"}))
        assert _ids(client, client_codec, 1) == ["alone"]  # not held: sent at once

        out.hold()
        for n in range(5):
            out.to_client(b"client-1", Message(Kind.RESULT, {"id": n}))
            out.to_host(rep, Message(Kind.TRANSCRIBE, {"id": f"h{n}"}))
        assert not client.poll(50) and not host.poll(0)  # held: nothing sent yet
        out.release()
        assert _ids(client, client_codec, 5) == [0, 1, 2, 3, 4]
        assert _ids(host, host_codec, 5) == [f"h{n}" for n in range(5)]

        out.to_client(b"client-1", Message(Kind.RESULT, {"id": "after"}))
        assert _ids(client, client_codec, 1) == ["after"]  # released: no longer held
    finally:
        ctx.destroy(linger=0)


def test_a_host_answers_a_batch_once_handled_every_request_in_order(tmp_path: Path) -> None:
    with host_on_router(tmp_path) as (runtime, router, codec):
        runtime.start_loading()
        deadline = time.monotonic() + 30
        while runtime.streams is None:  # loading on its thread; READY is sent once loaded
            assert time.monotonic() < deadline, "the synthetic engine did not load"
            time.sleep(0.01)
            runtime.calls.run_pending()
        assert router.poll(5000)
        identity, *ready = router.recv_multipart()
        assert codec.decode(ready).kind is Kind.READY
        engine = runtime.engine
        assert engine is not None
        transcribe = engine.transcribe
        batch = 0
        batch_of_request: list[int] = []  # the n-th engine call is request r<n>
        answered: list[tuple[int, str]] = []  # (batch during which it arrived, request id)

        def take_answers() -> None:
            while router.poll(0):
                msg = codec.decode(router.recv_multipart()[1:])
                if msg.kind is Kind.RESULT:
                    answered.append((batch, msg.header["id"]))

        def watched(*args: Any) -> Any:
            batch_of_request.append(batch)
            take_answers()  # whatever has left the host by now
            return transcribe(*args)

        engine.transcribe = watched  # type: ignore[method-assign]
        count = 40
        assert count < MAX_HELD_SENDS  # one batch's answers are all held
        pcm = (np.arange(320, dtype=np.int16) * 7).astype("<i2").tobytes()
        for n in range(count):
            header = {"id": f"r{n}", "model": "echo", "sample_rate": 16_000, "format": "pcm16"}
            router.send_multipart(
                [identity, *codec.encode(Message(Kind.TRANSCRIBE, header, [pcm]))]
            )
        deadline = time.monotonic() + 30
        while len(batch_of_request) < count:
            assert time.monotonic() < deadline, f"{len(batch_of_request)} of {count} handled"
            if runtime.sock.poll(100):
                batch += 1
                runtime.drain_socket()
        batch += 1  # what arrives from now on arrived after every batch was handled
        while len(answered) < count and router.poll(1000):
            take_answers()
        ids = [rid for _, rid in answered]
        assert ids == [f"r{n}" for n in range(count)]  # each answered once, in order
        for arrived_in, rid in answered:  # none left the host while its own batch was handled
            assert arrived_in > batch_of_request[int(rid[1:])], rid


def test_an_async_client_keeps_requests_until_a_coordinator_takes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nobody listens yet and the socket's own queue holds one message, so later sends are
    # refused (zmq.Again): the client keeps at most MAX_OUTGOING queued, the other senders wait
    # for room, and all go out once a coordinator listens.
    monkeypatch.setattr(client_module, "SOCKET_HWM", 1)
    monkeypatch.setattr(client_module, "MAX_OUTGOING", 3)
    key, endpoint, count = new_key(), f"ipc://{tmp_path}/coordinator.sock", 10

    def coordinator(router: zmq.Socket[Any]) -> None:
        codec = Codec(key)
        for n in range(count):
            assert router.poll(10_000), f"request {n} never came"
            identity, *frames = router.recv_multipart()
            rid = codec.decode(frames).header["id"]
            reply = Message(Kind.HEALTH_REPLY, {"id": rid, "health": {"n": n}})
            router.send_multipart([identity, *codec.encode(reply)])

    async def scenario() -> list[dict[str, Any]]:
        client = client_module.AsyncClient(endpoint, key=key)
        try:
            asked = [asyncio.create_task(client.health(timeout=30)) for _ in range(count)]
            await asyncio.sleep(0.3)
            assert not any(task.done() for task in asked)
            assert len(client._outgoing) == client_module.MAX_OUTGOING  # bounded while refused
            ctx: zmq.Context[Any] = zmq.Context()
            router = ctx.socket(zmq.ROUTER)
            router.bind(endpoint)
            try:
                serving = asyncio.get_running_loop().run_in_executor(None, coordinator, router)
                replies = await asyncio.wait_for(asyncio.gather(*asked), 20)
                await serving
            finally:
                router.close(linger=0)
                ctx.term()
            return replies
        finally:
            await client.aclose()

    replies = asyncio.run(scenario())
    assert sorted(r["n"] for r in replies) == list(range(count))


def test_held_sends_go_out_in_order_and_at_most_a_limit_wait() -> None:
    sent: list[int] = []
    sends = HeldSends(sent.append, limit=3)
    sends.send(0)
    assert sent == [0]  # not holding: at once
    sends.hold()
    for n in range(1, 8):
        sends.send(n)
    assert sent == [0, 1, 2, 3, 4, 5, 6]  # every third held one sends the three
    sends.release()
    assert sent == list(range(8))
    sends.send(8)
    assert sent == list(range(9))


def test_an_async_request_nobody_answers_fails_at_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One deadline sweep for all requests: each fails within a sweep interval of its own limit,
    # and requests with later deadlines keep waiting.
    monkeypatch.setattr(client_module, "REPLY_GRACE_S", 0.0)
    key, endpoint = new_key(), f"ipc://{tmp_path}/silent.sock"
    ctx: zmq.Context[Any] = zmq.Context()
    silent = ctx.socket(zmq.ROUTER)  # takes every request, answers none
    silent.setsockopt(zmq.LINGER, 0)
    silent.bind(endpoint)

    async def scenario() -> list[tuple[float, BaseException | None]]:
        client = client_module.AsyncClient(endpoint, key=key)
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def timed(timeout: float) -> tuple[float, BaseException | None]:
            try:
                await client.health(timeout=timeout)
            except client_module.DeadlineExceededError as exc:
                return loop.time() - started, exc
            return loop.time() - started, None

        try:
            return await asyncio.gather(timed(0.3), timed(0.6), timed(0.3))
        finally:
            await client.aclose()

    try:
        outcomes = asyncio.run(scenario())
    finally:
        silent.close()
        ctx.term()
    slack = client_module.DEADLINE_SWEEP_S + 0.25
    for (elapsed, error), limit in zip(outcomes, (0.3, 0.6, 0.3), strict=True):
        assert error is not None and "within" in str(error)
        assert limit <= elapsed <= limit + slack, (elapsed, limit)
