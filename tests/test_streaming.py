"""Streaming end to end: real coordinator, real synthetic host processes, both clients.

Speech-like audio (voiced bursts between near-silence) goes in as 20 ms chunks; the tests check
that partials and exactly one final per burst come back in order, at the burst edges, and that the
finals' fingerprints match the audio sent at their offsets: nothing lost, nothing doubled, also
across a host killed mid-utterance and a host still loading when the stream opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from orchestrator.client import AsyncStream, StreamEvent
from orchestrator.config import Config, SegmenterSettings
from orchestrator.coordinator import Coordinator
from orchestrator.errors import StreamSequenceError
from orchestrator.protocol import Kind, Message
from orchestrator.synthetic import parse_fingerprint
from stream_support import (
    CHUNK_MS,
    SpeechLike,
    check_finals,
    check_partials,
    finals_of,
    speech_like,
)
from support import assert_gone, make_config, replica, running, synthetic_host, wait_for

#: Partials every 200 ms so even short bursts get several.
SEGMENTER = SegmenterSettings(partial_interval_ms=200)
END_SILENCE_S = SEGMENTER.end_silence_ms / 1000
CHUNK_S = CHUNK_MS / 1000
#: Generous bound on one whole test stream (the behaviour under test is "it finishes").
STREAM_DEADLINE_S = 60.0


def stream_config(config: Config, **segmenter: Any) -> Config:
    return dataclasses.replace(config, segmenter=dataclasses.replace(SEGMENTER, **segmenter))


@pytest.fixture(scope="module")
def coord() -> Iterator[Coordinator]:
    with running(stream_config(make_config())) as coordinator:
        yield coordinator


async def feed(
    stream: AsyncStream,
    chunks: Sequence[np.ndarray],
    *,
    pace: float | None,
    before_chunk: Callable[[int], None] | None = None,
) -> None:
    """Send the chunks (at ``pace`` times real time, or as fast as possible), then close."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i, chunk in enumerate(chunks):
        if pace:
            await asyncio.sleep(max(0.0, t0 + i * CHUNK_S / pace - loop.time()))
        if before_chunk is not None:
            before_chunk(i)
        await stream.send(chunk)
    await stream.close()


async def run_stream(
    stream: AsyncStream, sent: SpeechLike, *, pace: float | None, **kwargs: Any
) -> list[StreamEvent]:
    """Feed ``sent`` and collect every event up to ``closed``."""
    feeder = asyncio.create_task(feed(stream, sent.chunks(), pace=pace, **kwargs))

    async def collect() -> list[StreamEvent]:
        return [event async for event in stream]

    try:
        events = await asyncio.wait_for(collect(), STREAM_DEADLINE_S)
    finally:
        feeder.cancel() if not feeder.done() else None
    await feeder
    return events


def types_of(events: Sequence[StreamEvent]) -> list[str]:
    return [e.type for e in events]


def stream_once(coord: Coordinator, sent: SpeechLike, *, pace: float | None) -> list[StreamEvent]:
    async def main() -> list[StreamEvent]:
        client = coord.client()
        try:
            async with client.stream(model="echo", sample_rate=sent.sample_rate) as stream:
                return await run_stream(stream, sent, pace=pace)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_bursts_at_real_time_pace_give_partials_and_one_final_each_in_order(coord: Coordinator) -> None:
    sent = speech_like(bursts=3, burst_s=0.8, silence_s=0.6, seed=1)
    events = stream_once(coord, sent, pace=1.0)
    assert events[0].type == "opened" and events[0].host == "syn"
    assert events[-1].type == "closed"
    assert "error" not in types_of(events)
    check_finals(finals_of(events), sent, end_silence_s=END_SILENCE_S)
    assert [f["reason"] for f in finals_of(events)] == ["silence"] * 3
    assert check_partials(events, sent) >= 3
    partial_utterances = {e.utterance for e in events if e.type == "partial"}
    assert partial_utterances == {0, 1, 2}, "at real-time pace every burst gets partials"


def test_pauses_longer_than_the_lag_limit_do_not_stop_partials(coord: Coordinator) -> None:
    # Silence is discarded, not decoded: it must not count as decoding lag.
    sent = speech_like(bursts=2, burst_s=0.8, silence_s=2.0, lead_s=0.2, tail_s=0.5, seed=2)
    events = stream_once(coord, sent, pace=1.0)
    check_finals(finals_of(events), sent, end_silence_s=END_SILENCE_S)
    check_partials(events, sent)
    assert {e.utterance for e in events if e.type == "partial"} == {0, 1}
    assert all(e.lag_s is not None and e.lag_s < 1.0 for e in events if e.type in ("partial", "final"))


def test_many_bursts_sent_faster_than_real_time_lose_no_sample(coord: Coordinator) -> None:
    sent = speech_like(bursts=8, burst_s=0.5, silence_s=0.6, seed=3)
    events = stream_once(coord, sent, pace=None)
    check_finals(finals_of(events), sent, end_silence_s=END_SILENCE_S)
    check_partials(events, sent)
    closed = events[-1].raw
    assert closed["type"] == "closed"
    assert closed["samples_in"] == sent.pcm.size
    assert closed["samples_in_finals"] == sum(f["n_samples"] for f in finals_of(events))


def test_concurrent_streams_each_get_finals_of_their_own_audio(coord: Coordinator) -> None:
    clips = [speech_like(bursts=3, burst_s=0.4, silence_s=0.5, seed=10 + i) for i in range(4)]

    async def main() -> list[list[StreamEvent]]:
        client = coord.client()

        async def one(sent: SpeechLike) -> list[StreamEvent]:
            async with client.stream(model="echo", sample_rate=16000) as stream:
                return await run_stream(stream, sent, pace=4.0)

        try:
            return await asyncio.gather(*(one(c) for c in clips))
        finally:
            await client.aclose()

    for sent, events in zip(clips, asyncio.run(main())):
        check_finals(finals_of(events), sent, end_silence_s=END_SILENCE_S)


def test_44k1_stream_is_resampled_by_the_host_with_offsets_in_stream_samples(coord: Coordinator) -> None:
    sent = speech_like(bursts=3, burst_s=0.6, silence_s=0.6, sample_rate=44_100, seed=4)
    events = stream_once(coord, sent, pace=None)
    finals = finals_of(events)
    # The engine got 16 kHz audio, so the fingerprints are of resampled audio: check spans and sizes.
    check_finals(finals, sent, end_silence_s=END_SILENCE_S, fingerprints=False)
    for final in finals:
        engine_n = parse_fingerprint(final["text"])["n"]
        assert abs(engine_n - final["n_samples"] * 16_000 / 44_100) <= 2, (engine_n, final["n_samples"])
    assert events[-1].raw["samples_in"] == sent.pcm.size


def test_sequence_gap_and_reorder_give_typed_errors_and_the_stream_goes_on(coord: Coordinator) -> None:
    sent_all = speech_like(bursts=2, burst_s=0.5, silence_s=0.6, seed=5)
    chunks = sent_all.chunks()

    async def send_raw(stream: AsyncStream, seq: int, chunk: np.ndarray) -> None:
        # What a buggy client would put on the wire; AsyncStream numbers its chunks itself.
        msg = Message(Kind.STREAM_AUDIO, {"id": stream.sid, "seq": seq}, [chunk.tobytes()])
        await stream._client._send(msg)

    async def main() -> tuple[list[StreamEvent], list[np.ndarray]]:
        client = coord.client()
        accepted: list[np.ndarray] = []
        try:
            async with client.stream(model="echo", sample_rate=16000) as stream:
                events: list[StreamEvent] = []
                seq = 0
                for i, chunk in enumerate(chunks):
                    if i == 10:
                        await send_raw(stream, seq + 1, chunk)  # a gap: chunk seq is missing
                    elif i == 20:
                        await send_raw(stream, seq - 1, chunk)  # a repeat/reorder
                    else:
                        await send_raw(stream, seq, chunk)
                        accepted.append(chunk)
                        seq += 1
                stream._seq = seq
                await stream.close()
                events = [e async for e in stream]
        finally:
            await client.aclose()
        return events, accepted

    events, accepted = asyncio.run(main())
    errors = [e for e in events if e.type == "error"]
    assert [type(e.error) for e in errors] == [StreamSequenceError, StreamSequenceError]
    assert [e.raw["error"]["details"] for e in errors] == [
        {"expected": 10, "got": 11},
        {"expected": 19, "got": 18},
    ]
    # The rejected chunks never entered the stream; everything else did, exactly once.
    kept = np.concatenate(accepted)
    bursts = tuple((a - (a > 10 * 320) * 320 - (a > 20 * 320) * 320, b - 2 * 320) for a, b in sent_all.bursts)
    sent = SpeechLike(kept, 16000, bursts)
    check_finals(finals_of(events), sent, end_silence_s=END_SILENCE_S)
    assert events[-1].type == "closed"


def test_close_inside_an_utterance_flushes_its_final(coord: Coordinator) -> None:
    sent = speech_like(bursts=2, burst_s=0.7, silence_s=0.6, tail_s=0.0, seed=6)
    events = stream_once(coord, sent, pace=None)
    finals = finals_of(events)
    check_finals(finals, sent, end_silence_s=END_SILENCE_S)
    assert [f["reason"] for f in finals] == ["silence", "flush"]
    assert finals[-1]["audio_offset"] + finals[-1]["n_samples"] == sent.pcm.size


def test_sync_client_stream_gives_the_same_finals(coord: Coordinator) -> None:
    sent = speech_like(bursts=3, burst_s=0.5, silence_s=0.6, seed=7)
    client = coord.sync_client()
    try:
        events: list[StreamEvent] = []
        with client.stream(model="echo", sample_rate=16000) as stream:
            for chunk in sent.chunks():
                stream.send(chunk.tobytes())
                events += stream.poll_events()
        events += list(stream)  # the with block closed it: the rest, up to "closed"
    finally:
        client.close()
    assert events[0].type == "opened" and events[-1].type == "closed"
    check_finals(finals_of(events), sent, end_silence_s=END_SILENCE_S)
    check_partials(events, sent)


@pytest.mark.slow
def test_lagging_host_skips_partials_but_delivers_every_final() -> None:
    # Each decode takes 1 s, longer than an utterance (0.5 s speech + 0.45 s pause): decoding
    # falls further behind with every burst.
    config = stream_config(
        make_config({"syn": synthetic_host(engine_options={"delay_s": 1.0})}), lag_skip_s=0.5
    )
    sent = speech_like(bursts=5, burst_s=0.5, silence_s=0.45, seed=8)
    with running(config) as coord:
        events = stream_once(coord, sent, pace=1.0)
    check_finals(finals_of(events), sent, end_silence_s=END_SILENCE_S)
    check_partials(events, sent)
    lags = [e.lag_s for e in events if e.type == "final"]
    assert max(lags) > 1.0, lags  # reported, and growing: the last final trails the audio
    closed = events[-1].raw
    # Due partials: one per 200 ms of each 0.5 s utterance (~2-3 each); nearly all were skipped.
    decoded = sum(1 for e in events if e.type == "partial")
    assert closed["partials_skipped"] >= 5, closed
    assert decoded < closed["partials_skipped"]


@contextlib.contextmanager
def started_without_waiting(config: Config) -> Iterator[Coordinator]:
    """Like support.running, but returns while the hosts are still loading."""
    coordinator = Coordinator(config)
    coordinator.start(wait=False)
    try:
        yield coordinator
    finally:
        pids = {r["pid"] for r in coordinator.health()["replicas"] if r["pid"]}
        coordinator.close()
        assert_gone(pids)


def test_stream_opened_while_the_only_host_loads_is_buffered_then_served() -> None:
    config = stream_config(make_config({"syn": synthetic_host(engine_options={"load_delay_s": 2.0})}))
    sent = speech_like(bursts=3, burst_s=0.4, silence_s=0.5, seed=9)
    with started_without_waiting(config) as coord:
        assert replica(coord, "syn.0")["state"] == "starting"
        events = stream_once(coord, sent, pace=None)  # all audio sent long before the host is up
    assert events[0].type == "opened" and events[0].raw["parked"] is True
    assert events[1].type == "opened" and events[1].host == "syn"
    assert "error" not in types_of(events)
    check_finals(finals_of(events), sent, end_silence_s=END_SILENCE_S)


@pytest.mark.slow
def test_host_killed_mid_utterance_stream_fails_over_without_losing_or_doubling_audio() -> None:
    config = stream_config(
        make_config(
            {"a": synthetic_host(), "b": synthetic_host()}, models={"echo": {"hosts": ["a", "b"]}}
        )
    )
    sent = speech_like(bursts=4, burst_s=0.8, silence_s=0.6, seed=11)
    # Half way through the third burst: finals of the first two are in, partials of the third.
    b_start, b_end = sent.bursts[2]
    kill_at_chunk = (b_start + b_end) // 2 // (16000 * CHUNK_MS // 1000)

    with running(config) as coord:

        async def main() -> list[StreamEvent]:
            client = coord.client()
            try:
                async with client.stream(model="echo", sample_rate=16000) as stream:
                    opened = await stream.next_event(timeout=10)
                    assert opened.type == "opened" and opened.raw["replica"] == "a.0"
                    victim = replica(coord, "a.0")["pid"]

                    def kill(i: int) -> None:
                        if i == kill_at_chunk:
                            os.kill(victim, signal.SIGKILL)

                    return [opened, *await run_stream(stream, sent, pace=1.0, before_chunk=kill)]
            finally:
                await client.aclose()

        events = asyncio.run(main())
        wait_for(lambda: replica(coord, "a.0")["restarts"] == 1, what="a.0 restarted")

    kinds = types_of(events)
    assert kinds.count("host_changed") == 1 and "error" not in kinds
    changed = kinds.index("host_changed")
    move = events[changed].raw
    assert move["from"] == "a.0" and move["host"] == "b" and move["replayed_s"] > 0
    assert all(e.host == "a" for e in events[1:changed] if e.type in ("partial", "final"))
    assert all(e.host == "b" for e in events[changed:] if e.type in ("partial", "final"))
    finals = finals_of(events)
    assert [f["host"] for f in finals[:2]] == ["a", "a"] and finals[-1]["host"] == "b"
    check_finals(finals, sent, end_silence_s=END_SILENCE_S)
    # Utterance numbers go on across the move, so a panel never confuses two utterances.
    assert [f["utterance"] for f in finals] == [0, 1, 2, 3]
    utterances = [e.utterance for e in events if e.type in ("partial", "final")]
    assert utterances == sorted(utterances)
