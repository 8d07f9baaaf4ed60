"""The routing bench's signed floor does the protocol's work for real: every hop verifies and signs
with the right key, the broker swaps ids both ways and refuses replays, and the keys reach its
child processes outside argv."""

from __future__ import annotations

import asyncio

import pytest
import zmq

from bench import harness
from bench.signed import HOST_KEY_ENV, RESULT_BODY, Keys, SignedRelay, key_from_env
from bench.signed_clients import SignedAsyncClient, SignedExchange, SignedSyncClient
from orchestrator.wire.errors import ProtocolError
from orchestrator.wire.protocol import Codec, Kind, Message

PAYLOAD = bytes(range(256)) * 2 + bytes(128)  # 640 bytes, like the bench's chunk


def exchange(keys: Keys) -> SignedExchange:
    return SignedExchange(keys.client, model="echo", sample_rate=16_000, timeout_s=30.0)


def frames_of(parts: list[bytes]) -> list[zmq.Frame]:
    return [zmq.Frame(p) for p in parts]


def test_relay_re_signs_each_way_and_swaps_the_ids() -> None:
    keys = Keys.new()
    client, relay, host = exchange(keys), SignedRelay(keys), Codec(keys.host)
    rid, request = client.request(PAYLOAD)

    to_worker = relay.to_worker(frames_of([b"client-7", *request]))
    assert to_worker is not None
    with pytest.raises(ProtocolError):  # signed for the hosts, not with the clients' key
        Codec(keys.client).decode(to_worker)
    msg = host.decode(to_worker)
    assert msg.kind is Kind.TRANSCRIBE
    assert msg.payloads == [PAYLOAD]
    assert msg.header["id"] != rid and isinstance(msg.header["id"], int)
    assert msg.header["model"] == "echo" and msg.header["sample_rate"] == 16_000

    reply = host.encode(Message(Kind.RESULT, {"id": msg.header["id"], "result": RESULT_BODY}))
    to_client = relay.to_client(frames_of(reply))
    assert to_client is not None
    assert to_client[0] == b"client-7"
    answer = client.reply(frames_of(to_client[1:]))
    assert answer is not None and answer.header["id"] == rid
    # Answered once: the same reply again is a replay, and no entry is left to answer twice.
    assert relay.to_client(frames_of(reply)) is None
    assert relay.drops.by_reason["replay"] == 1


def test_relay_drops_replays_and_foreign_keys() -> None:
    keys = Keys.new()
    relay = SignedRelay(keys)
    _, request = exchange(keys).request(PAYLOAD)
    assert relay.to_worker(frames_of([b"c", *request])) is not None
    assert relay.to_worker(frames_of([b"c", *request])) is None
    _, stranger = exchange(Keys.new()).request(PAYLOAD)
    assert relay.to_worker(frames_of([b"c", *stranger])) is None
    assert relay.drops.by_reason == {"replay": 1, "signature": 1}


def test_floor_processes_answer_sync_and_pipelined_requests() -> None:
    keys = Keys.new()
    with harness.socket_folder() as folder:
        front = harness.ipc_endpoint(folder, "front")
        back = harness.ipc_endpoint(folder, "back")
        with (
            harness.signed_child(keys.broker_env(), "broker", front, back) as broker,
            harness.signed_child(keys.worker_env(), "worker", back) as worker,
        ):
            for child in (broker, worker):  # keys in the environment only, never on argv
                assert keys.client.hex() not in " ".join(child.proc.args)
                assert keys.host.hex() not in " ".join(child.proc.args)
            ctx = zmq.Context()
            try:
                sync = SignedSyncClient(ctx, front, exchange(keys))
                reply = sync.round_trip(PAYLOAD)
                sync.close()
                assert reply.kind is Kind.RESULT
                assert reply.header["result"] == RESULT_BODY

                async def pipelined() -> int:
                    client = SignedAsyncClient(ctx, front, exchange(keys))
                    try:
                        requests = (client.request(PAYLOAD) for _ in range(64))
                        replies = await asyncio.wait_for(asyncio.gather(*requests), 10)
                    finally:
                        await client.aclose()
                    return len(replies)

                assert asyncio.run(pipelined()) == 64
            finally:
                ctx.destroy(linger=0)


def test_key_from_env_reads_once_and_refuses_a_missing_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = Keys.new().host
    monkeypatch.setenv(HOST_KEY_ENV, key.hex())
    assert key_from_env(HOST_KEY_ENV) == key
    with pytest.raises(SystemExit, match=f"{HOST_KEY_ENV} holds no 32-byte hex key"):
        key_from_env(HOST_KEY_ENV)  # removed from the environment once read
    monkeypatch.setenv(HOST_KEY_ENV, "not hex")
    with pytest.raises(SystemExit, match="signed_child"):
        key_from_env(HOST_KEY_ENV)


def test_the_host_alone_rows_measure_answered_requests() -> None:
    # Every variant's requests are answered with RESULTs (the driver raises otherwise), and each
    # row stands beside the signed worker driven the same way.
    from bench import host_alone

    rows = host_alone.figures(PAYLOAD, count=200, rounds=1)
    assert [r.name.rsplit(": ", 1)[1] for r in rows] == [v[0] for v in host_alone.VARIANTS]
    assert all(r.value and r.value > 0 for r in rows)
    assert len({r.baseline for r in rows}) == 1 and rows[0].baseline > 0
