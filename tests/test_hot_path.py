"""The routing hot path's shortcuts keep the guarantees of the long way round.

- the signature is standard HMAC-SHA256 (pads hashed once) over the frame count, each frame's
  length and the frames, so any peer can check it with the standard library alone;
- the fast header parse agrees with ``json.loads`` on what it accepts and refuses;
- the synthetic engine is answered inline only when no fault could make it sleep or hang;
- an AsyncClient delivers a burst of replies larger than one wake-up's share, every one of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import struct
from typing import Any

import pytest

from orchestrator import client as client_module
from orchestrator.coordinator import Coordinator
from orchestrator.errors import ProtocolError
from orchestrator.host.synthetic import SyntheticEngine
from orchestrator.wire.protocol import VERSION_FRAME, Codec, Kind, Message, new_key
from support import make_config, running, synthetic_host

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
