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
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from orchestrator.audio.pcm import pcm16_to_float
from orchestrator.audio.resample import resample
from orchestrator.client import StreamEvent
from orchestrator.coordinator import Coordinator
from orchestrator.coordinator.config import Config
from orchestrator.errors import BadRequestError, StreamSequenceError, UnknownModelError
from orchestrator.wire.contract import SegmenterSettings
from orchestrator.wire.protocol import Kind, Message
from stream_support import (
    CHUNK_MS,
    STREAM_DEADLINE_S,
    SpeechLike,
    all_events,
    check_finals,
    check_partials,
    finals_of,
    run_stream,
    speech_like,
)
from support import (
    assert_fingerprint,
    assert_gone,
    make_config,
    replica,
    running,
    synthetic_host,
    wait_for,
)

#: Partials every 200 ms so even short bursts get several.
#: The bursts are tones, not speech: the energy detector is the one that hears them.
SEGMENTER = SegmenterSettings(partial_interval_ms=200, vad="energy")
END_SILENCE_S = SEGMENTER.end_silence_ms / 1000
SAMPLES_PER_CHUNK = 16000 * CHUNK_MS // 1000


def stream_config(config: Config, **segmenter: Any) -> Config:
    return dataclasses.replace(config, segmenter=dataclasses.replace(SEGMENTER, **segmenter))


@pytest.fixture(scope="module")
def coord() -> Iterator[Coordinator]:
    with running(stream_config(make_config())) as coordinator:
        yield coordinator


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


def test_bursts_at_real_time_pace_give_partials_and_one_final_each_in_order(
    coord: Coordinator,
) -> None:
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
    # Lag is reported and stays under the skip limit (1.5 s): the pauses did not count.
    assert all(
        e.lag_s is not None and e.lag_s < 1.5 for e in events if e.type in ("partial", "final")
    )


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


def test_44k1_stream_is_resampled_by_the_host_with_offsets_in_stream_samples(
    coord: Coordinator,
) -> None:
    sent = speech_like(bursts=3, burst_s=0.6, silence_s=0.6, sample_rate=44_100, seed=4)
    events = stream_once(coord, sent, pace=None)
    finals = finals_of(events)
    # Offsets and sizes are in 44.1 kHz samples; the engine got the audio resampled to 16 kHz.
    check_finals(finals, sent, end_silence_s=END_SILENCE_S, fingerprints=False)
    # The host's chunk-by-chunk resampling equals resampling all that was sent at once, so each
    # final is exactly the 16 kHz audio between its converted offsets: none lost or doubled.
    at_16k = resample(pcm16_to_float(sent.pcm.tobytes()), 44_100, 16_000)
    engine_pcm16 = np.clip(np.round(at_16k * 32768.0), -32768, 32767).astype(np.int16)
    for final in finals:
        first = round(final["audio_offset"] * 16_000 / 44_100)
        last = round((final["audio_offset"] + final["n_samples"]) * 16_000 / 44_100)
        assert_fingerprint(final["text"], engine_pcm16[first:last])
    assert events[-1].raw["samples_in"] == sent.pcm.size


def test_sequence_gap_and_reorder_give_typed_errors_and_the_stream_goes_on(
    coord: Coordinator,
) -> None:
    sent_all = speech_like(bursts=2, burst_s=0.5, silence_s=0.6, seed=5)
    gap_at, repeat_at = 10, 20  # chunk 10 is sent as seq 11, chunk 20 as the previous seq

    async def main() -> list[StreamEvent]:
        client = coord.client()
        try:
            async with client.stream(model="echo", sample_rate=16000) as stream:
                seq = 0
                for i, chunk in enumerate(sent_all.chunks()):
                    wrong = {gap_at: seq + 1, repeat_at: seq - 1}.get(i)
                    # What a buggy client puts on the wire (AsyncStream numbers its own chunks).
                    header = {"id": stream.sid, "seq": seq if wrong is None else wrong}
                    await stream._client._send(
                        Message(Kind.STREAM_AUDIO, header, [chunk.tobytes()])
                    )
                    if wrong is None:
                        seq += 1
                await stream.close()
                return [e async for e in stream]
        finally:
            await client.aclose()

    events = asyncio.run(main())
    errors = [e for e in events if e.type == "error"]
    assert [type(e.error) for e in errors] == [StreamSequenceError, StreamSequenceError]
    assert [e.raw["error"]["details"] for e in errors] == [
        {"expected": gap_at, "got": gap_at + 1},
        {"expected": repeat_at - 1, "got": repeat_at - 2},
    ]
    # The refused chunks never entered the stream; everything else did, exactly once.
    check_finals(
        finals_of(events),
        without_chunks(sent_all, {gap_at, repeat_at}),
        end_silence_s=END_SILENCE_S,
    )
    assert events[-1].type == "closed"


def without_chunks(sent: SpeechLike, dropped: set[int]) -> SpeechLike:
    """The audio a stream holds when the chunks ``dropped`` were refused; bursts move up."""
    keep = np.ones(sent.pcm.size, dtype=bool)
    for i in dropped:
        keep[i * SAMPLES_PER_CHUNK : (i + 1) * SAMPLES_PER_CHUNK] = False

    def moved(index: int) -> int:
        return index - int(np.count_nonzero(~keep[:index]))

    bursts = tuple((moved(start), moved(end)) for start, end in sent.bursts)
    return SpeechLike(sent.pcm[keep], sent.sample_rate, bursts)


@pytest.mark.parametrize(
    ("model", "fmt", "error"),
    [("no-such-model", "pcm16", UnknownModelError), ("echo", "pcm24", BadRequestError)],
)
def test_a_refused_stream_ends_with_its_typed_error_then_closed(
    coord: Coordinator, model: str, fmt: str, error: type[Exception]
) -> None:
    async def main() -> list[StreamEvent]:
        client = coord.client()
        try:
            async with client.stream(model=model, sample_rate=16000, format=fmt) as stream:
                # Iteration ends by itself: a refused stream must not leave its client waiting.
                return await asyncio.wait_for(all_events(stream), STREAM_DEADLINE_S)
        finally:
            await client.aclose()

    events = asyncio.run(main())
    assert types_of(events) == ["error", "closed"]
    assert isinstance(events[0].error, error) and events[0].raw["final"] is True
    assert coord.health()["coordinator"]["streams"]["open"] == 0


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
    config = stream_config(
        make_config({"syn": synthetic_host(engine_options={"load_delay_s": 2.0})})
    )
    sent = speech_like(bursts=3, burst_s=0.4, silence_s=0.5, seed=9)
    with started_without_waiting(config) as coord:
        assert replica(coord, "syn.0")["state"] == "starting"
        events = stream_once(coord, sent, pace=None)  # all audio sent long before the host is up
    assert events[0].type == "opened" and events[0].raw["parked"] is True
    assert events[1].type == "opened" and events[1].host == "syn"
    assert "error" not in types_of(events)
    check_finals(finals_of(events), sent, end_silence_s=END_SILENCE_S)


SENT_FOR_KILL = speech_like(bursts=4, burst_s=0.8, silence_s=0.6, seed=11)


def chunk_at(sample: int) -> int:
    return sample // SAMPLES_PER_CHUNK


@pytest.mark.slow
@pytest.mark.parametrize(
    ("decode_delay_s", "partial_interval_ms", "kill_at_chunk", "hosts_of_finals"),
    [
        # Half way through the third burst: the first two finals are in, the third is open.
        pytest.param(
            0.0, 200, chunk_at(sum(SENT_FOR_KILL.bursts[2]) // 2), "aabb", id="mid_utterance"
        ),
        # 250 ms into the 600 ms decode of the second utterance's final (no partials, so it
        # starts at once): the host has decided that audio, yet the coordinator must keep it.
        pytest.param(
            0.6,
            10_000,
            chunk_at(SENT_FOR_KILL.bursts[1][1] + int((END_SILENCE_S + 0.25) * 16000)),
            "abbb",
            id="while_a_final_decodes",
        ),
    ],
)
def test_host_killed_mid_stream_fails_over_without_losing_or_doubling_audio(
    decode_delay_s: float, partial_interval_ms: int, kill_at_chunk: int, hosts_of_finals: str
) -> None:
    host = synthetic_host(engine_options={"delay_s": decode_delay_s})
    config = stream_config(
        make_config(
            {"a": host, "b": host},
            models={"echo": {"hosts": ["a", "b"]}},
            # The kill is seen at once (the process exits); a loaded machine must not make the
            # fallback host miss heartbeats and move the stream a second time.
            heartbeat_liveness=30,
        ),
        partial_interval_ms=partial_interval_ms,
    )
    sent = SENT_FOR_KILL
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
        wait_for(lambda: replica(coord, "a.0")["restarts"] >= 1, what="a.0 restarted")

    kinds = types_of(events)
    assert kinds.count("host_changed") == 1 and "error" not in kinds
    changed = kinds.index("host_changed")
    move = events[changed].raw
    assert move["from"] == "a.0" and move["host"] == "b" and move["replayed_s"] > 0
    assert all(e.host == "a" for e in events[1:changed] if e.type in ("partial", "final"))
    assert all(e.host == "b" for e in events[changed:] if e.type in ("partial", "final"))
    finals = finals_of(events)
    assert "".join(f["host"] for f in finals) == hosts_of_finals
    check_finals(finals, sent, end_silence_s=END_SILENCE_S)
    # Utterance numbers go on across the move, so a panel never confuses two utterances.
    assert [f["utterance"] for f in finals] == [0, 1, 2, 3]
    utterances = [e.utterance for e in events if e.type in ("partial", "final")]
    assert utterances == sorted(utterances)
