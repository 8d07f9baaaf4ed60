"""Every configured limit refuses with a typed error, is counted, and leaves the system serving.

Limits under test, each against a real coordinator with synthetic hosts: the coordinator's request
queue (``max_queue``), its open streams (``max_streams``), a host's streams (``max_streams`` of the
host), message size (``max_message_bytes``), one-shot audio length (``max_audio_s``) and a host's
memory ceiling (``memory_limit_mb``: drained, then recycled). A refusal is counted where ops look:
``errors_by_code`` of the health snapshot and ``orchestrator_request_errors_total`` of the
metrics registry built from it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest
import zmq

from orchestrator.client import AsyncClient, StreamEvent
from orchestrator.coordinator import Coordinator
from orchestrator.coordinator.metrics import build_registry
from orchestrator.errors import (
    BadAudioError,
    BadRequestError,
    ErrorCode,
    OrchestratorError,
    OverloadedError,
)
from orchestrator.wire.protocol import Codec, Kind, Message
from support import (
    assert_fingerprint,
    make_config,
    replica,
    running,
    synthetic_host,
    tone_pcm16,
    wait_for,
)

RATE = 16_000
#: Generous bound for any single event the tests wait for (a loaded CI machine is slow).
EVENT_TIMEOUT_S = 15.0


def refusals(coord: Coordinator, code: ErrorCode) -> float:
    """How many answers with ``code`` the metrics report (zero when none yet)."""
    registry = build_registry(coord.health)
    value = registry.get_sample_value("orchestrator_request_errors_total", {"code": str(code)})
    return value or 0.0


def client_drops(coord: Coordinator) -> dict[str, int]:
    return dict(coord.health()["coordinator"]["dropped"]["clients"])


async def open_stream(client: AsyncClient, model: str = "echo") -> tuple[Any, StreamEvent]:
    """Open a stream and return it with its first event (``opened`` or the refusal)."""
    stream = await client.stream(model=model, sample_rate=RATE).open()
    return stream, await stream.next_event(EVENT_TIMEOUT_S)


async def finish(stream: Any) -> list[StreamEvent]:
    """Close a stream and collect its events up to ``closed``."""
    await stream.close()
    events = []
    while not stream.closed:
        events.append(await stream.next_event(EVENT_TIMEOUT_S))
    return events


def test_requests_past_max_queue_are_refused_overloaded_before_any_is_served() -> None:
    config = make_config(
        {"syn": synthetic_host(max_inflight=1, engine_options={"delay_s": 0.4})}, max_queue=2
    )
    with running(config) as coord:

        async def main() -> list[tuple[int, object]]:
            client = coord.client()
            finished: list[tuple[int, object]] = []

            async def one(i: int) -> None:
                clip = tone_pcm16(400, seed=i)
                try:
                    result: object = await client.transcribe(
                        clip.tobytes(), sample_rate=RATE, model="echo", timeout=10
                    )
                    assert_fingerprint(result.text, clip)  # type: ignore[attr-defined]
                except OrchestratorError as exc:
                    result = exc
                finished.append((i, result))

            await asyncio.gather(*(one(i) for i in range(6)))
            await client.aclose()
            return finished

        finished = asyncio.run(main())
        outcomes = [r for _, r in finished]
        overloaded = [r for r in outcomes if isinstance(r, OverloadedError)]
        served = [r for r in outcomes if not isinstance(r, Exception)]
        # One running, two queued; the other three are refused.
        assert len(served) == 3 and len(overloaded) == 3, outcomes
        assert all("queue full (2 waiting)" in str(e) for e in overloaded)
        # Refused at once: every refusal was answered before the first served request finished.
        first_served = next(n for n, r in enumerate(outcomes) if not isinstance(r, Exception))
        assert first_served == len(overloaded), outcomes
        assert refusals(coord, ErrorCode.OVERLOADED) == 3
        # The bounded queue is not stuck: the next request is served.
        client = coord.sync_client()
        assert client.transcribe(tone_pcm16(160, 9).tobytes(), sample_rate=RATE, model="echo").text
        assert coord.health()["coordinator"]["queued"] == 0
        client.close()


def test_streams_past_the_coordinators_max_streams_are_refused_overloaded() -> None:
    config = make_config({"syn": synthetic_host(replicas=2)}, max_streams=2)
    with running(config) as coord:

        async def main() -> None:
            client = coord.client()
            first, opened = await open_stream(client)
            assert opened.type == "opened"
            second, opened = await open_stream(client)
            assert opened.type == "opened"
            _refused_stream, refused = await open_stream(client)
            assert refused.type == "error" and isinstance(refused.error, OverloadedError)
            assert "2 streams already open" in str(refused.error)
            assert refusals(coord, ErrorCode.OVERLOADED) == 1

            # Refusing one stream disturbed neither open one; closing one frees its place.
            pcm = tone_pcm16(RATE, seed=3)
            await first.send(pcm.tobytes())
            events = await finish(first)
            finals = [e for e in events if e.type == "final"]
            assert len(finals) == 1
            assert_fingerprint(finals[0].text, pcm)
            fourth, opened = await open_stream(client)
            assert opened.type == "opened"
            for stream in (second, fourth):
                assert [e.type for e in await finish(stream)][-1] == "closed"
            await client.aclose()

        asyncio.run(main())


def test_streams_past_a_hosts_max_streams_are_refused_with_a_typed_error() -> None:
    config = make_config({"syn": synthetic_host(max_streams=1)})
    with running(config) as coord:

        async def main() -> None:
            client = coord.client()
            first, opened = await open_stream(client)
            assert opened.type == "opened" and opened.raw["replica"] == "syn.0"
            _refused_stream, refused = await open_stream(client)
            assert refused.type == "error"
            # The only replica is full, not gone: the client is told to come back later.
            assert isinstance(refused.error, OverloadedError), refused.error
            assert replica(coord, "syn.0")["streams"] == 1
            await finish(first)
            third, opened = await open_stream(client)
            assert opened.type == "opened"
            await finish(third)
            await client.aclose()

        asyncio.run(main())


def test_messages_over_max_message_bytes_are_refused_by_the_client_and_dropped_raw() -> None:
    limit = 64 * 1024
    with running(make_config(max_message_bytes=limit)) as coord:
        client = coord.sync_client()
        too_long = tone_pcm16(limit // 2, seed=1)  # PCM16 alone is the whole limit
        with pytest.raises(BadRequestError, match="over the 65536 byte limit"):
            client.transcribe(too_long.tobytes(), sample_rate=RATE, model="echo")
        with client.stream(model="echo", sample_rate=RATE) as stream:
            with pytest.raises(BadRequestError, match="byte limit"):
                stream.send(too_long.tobytes())
            assert stream.next_event(EVENT_TIMEOUT_S).type == "opened"
        # Past the client's own check (another client, or a hostile one), the coordinator drops
        # the frames unread and counts them.
        sock = coord.ctx.socket(zmq.DEALER)
        sock.connect(coord.inproc_endpoint)
        unlimited = Codec(coord.client_key, max_message_bytes=10 * limit)
        header = {"id": "big", "model": "echo", "sample_rate": RATE, "format": "pcm16"}
        sock.send_multipart(
            unlimited.encode(Message(Kind.TRANSCRIBE, header, [too_long.tobytes()]))
        )
        wait_for(lambda: client_drops(coord).get("oversize") == 1, what="the oversize drop counted")
        assert not sock.poll(200), "an oversize message must not be answered"
        sock.close(linger=0)
        assert replica(coord, "syn.0")["served"] == 0  # nothing oversize reached the host
        ok = tone_pcm16(RATE, seed=2)
        assert_fingerprint(client.transcribe(ok.tobytes(), sample_rate=RATE, model="echo").text, ok)
        client.close()


def test_messages_just_under_max_message_bytes_are_served_not_lost_on_the_way() -> None:
    """The coordinator re-frames a request for its host; the host must not drop it as oversize."""
    limit = 64 * 1024
    with running(make_config(max_message_bytes=limit)) as coord:
        client = coord.sync_client()
        served = 0
        for slack in (4, 8, 16, 32, 64):
            # Largest clip whose client message is `slack` bytes under the limit.
            probe = client._core.transcribe_message(b"\0\0", RATE, "echo", 5, {})[1]
            overhead = sum(len(f) for f in client._core.codec.encode(probe)) - 2
            clip = tone_pcm16((limit - overhead - slack) // 2, seed=slack)
            result = client.transcribe(clip.tobytes(), sample_rate=RATE, model="echo", timeout=5)
            assert_fingerprint(result.text, clip)
            served += 1
        assert replica(coord, "syn.0")["host_dropped"] == 0
        assert served == 5
        client.close()


def test_one_shot_audio_over_max_audio_s_is_refused_by_the_coordinator() -> None:
    with running(make_config(max_audio_s=1.0)) as coord:
        client = coord.sync_client()
        too_long = [
            (tone_pcm16(RATE * 3 // 2, seed=1), RATE),  # 1.5 s of PCM16
            (tone_pcm16(12_000, seed=2), 8_000),  # 1.5 s at 8 kHz
            (tone_pcm16(RATE * 3 // 2, seed=3).astype(np.float32) / 32768.0, RATE),  # f32
        ]
        for clip, rate in too_long:
            with pytest.raises(BadAudioError, match=r"1\.5s of audio is over the 1s limit") as info:
                client.transcribe(clip, sample_rate=rate, model="echo")
            assert info.value.details == {"seconds": 1.5, "max_audio_s": 1.0}
        assert refusals(coord, ErrorCode.BAD_AUDIO) == 3
        # Refused before dispatch: the host never saw them.
        assert replica(coord, "syn.0")["served"] == replica(coord, "syn.0")["errors"] == 0
        exactly = tone_pcm16(RATE, seed=4)
        result = client.transcribe(exactly.tobytes(), sample_rate=RATE, model="echo")
        assert_fingerprint(result.text, exactly)
        assert replica(coord, "syn.0")["served"] == 1
        client.close()


class _Background:
    """Sends requests one after another from a thread until stopped; keeps every outcome."""

    def __init__(self, coord: Coordinator) -> None:
        self._client = coord.sync_client()
        self._stop = threading.Event()
        self.outcomes: list[tuple[str, object]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seed = 0
        while not self._stop.is_set():
            seed += 1
            clip = tone_pcm16(1600, seed=seed)
            try:
                result = self._client.transcribe(clip.tobytes(), sample_rate=RATE, model="echo")
                assert_fingerprint(result.text, clip)
                self.outcomes.append((result.replica, result))
            except OrchestratorError as exc:
                self.outcomes.append(("", exc))
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(EVENT_TIMEOUT_S)
        self._client.close()


def test_host_over_its_memory_ceiling_is_drained_then_recycled_while_requests_are_served() -> None:
    limit_mb = 150
    # A slow heartbeat on a loaded machine must not be what recycles the host here.
    config = make_config(
        {"syn": synthetic_host(replicas=2, memory_limit_mb=limit_mb)}, heartbeat_liveness=50
    )
    with running(config) as coord:
        background = _Background(coord)
        try:

            async def leak_then_finish() -> Any:
                client = coord.client()
                clip = tone_pcm16(RATE, seed=77)
                # Grows the host by 250 MB, then keeps it busy long enough for the ceiling check
                # (once a second) to catch it with this request still in flight.
                call = asyncio.ensure_future(
                    client.transcribe(
                        clip.tobytes(), sample_rate=RATE, model="echo", timeout=20,
                        context="leak=250,delay=3",
                    )
                )  # fmt: skip

                def draining() -> dict[str, Any] | None:
                    reps = coord.health()["replicas"]
                    return next((r for r in reps if r["state"] == "unhealthy"), None)

                drained = await asyncio.to_thread(wait_for, draining, EVENT_TIMEOUT_S, "a drain")
                assert f"MB over the {limit_mb} MB limit" in drained["reason"]
                assert drained["rss_mb"] > limit_mb and drained["inflight"] == 1
                result = await call  # drained, not killed: its request completes
                assert_fingerprint(result.text, clip)
                assert result.attempts == 1 and result.replica == drained["name"]
                await client.aclose()
                return drained

            drained = asyncio.run(leak_then_finish())
            name = drained["name"]
            wait_for(lambda: replica(coord, name)["restarts"] == 1, EVENT_TIMEOUT_S, "the recycle")
            wait_for(
                lambda: replica(coord, name)["state"] == "ready", EVENT_TIMEOUT_S, "its return"
            )
            after = replica(coord, name)
            assert after["pid"] != drained["pid"]
            assert f"over the {limit_mb} MB limit" in after["last_restart_reason"]
            wait_for(lambda: (replica(coord, name)["rss_mb"] or limit_mb) < limit_mb, what="RSS")
        finally:
            background.stop()
        errors = [o for _, o in background.outcomes if isinstance(o, Exception)]
        assert not errors, errors
        assert len(background.outcomes) >= 10


def test_stream_failover_replays_more_audio_than_one_message_may_carry() -> None:
    """The unconfirmed audio replayed to the next host may exceed max_message_bytes in total."""
    limit = 64 * 1024
    config = make_config(
        {"a": synthetic_host({"echo": "s"}), "b": synthetic_host({"echo": "s"})},
        models={"echo": {"hosts": ["a", "b"]}},
        max_message_bytes=limit,
    )
    with running(config) as coord:
        # One long utterance (no pause): nothing is confirmed, so all of it must be replayed.
        pcm = tone_pcm16(3 * limit // 2, seed=11)
        chunk = 320

        async def main() -> list[StreamEvent]:
            client = coord.client()
            stream, opened = await open_stream(client)
            assert opened.raw["replica"] == "a.0"
            half = pcm.size // 2 // chunk * chunk
            for i in range(0, half, chunk):
                await stream.send(pcm[i : i + chunk].tobytes())
            os.kill(replica(coord, "a.0")["pid"], signal.SIGKILL)
            for i in range(half, pcm.size, chunk):
                await stream.send(pcm[i : i + chunk].tobytes())
            events = await finish(stream)
            await client.aclose()
            return events

        events = asyncio.run(main())
        kinds = [e.type for e in events]
        assert "error" not in kinds, events
        changed = next(e for e in events if e.type == "host_changed")
        assert changed.raw["replica"] == "b.0"
        assert changed.raw["replayed_s"] * RATE * 2 > limit  # more than one message could carry
        finals = [e for e in events if e.type == "final"]
        assert [(f.raw["audio_offset"], f.raw["n_samples"]) for f in finals] == [(0, pcm.size)]
        assert_fingerprint(finals[0].text, pcm)
