"""Speech-like test audio and the checks that prove a stream's finals lost and doubled nothing.

Used by the streaming tests (coordinator and clients) and by the example server's tests. The
audio is bursts of a voiced tone (harmonics, syllable-rate loudness changes, a little noise)
separated by near-silence, so the energy detector sees one utterance per burst. With the
synthetic engine a final's text is the fingerprint of the audio the engine decoded, so comparing
it with the audio the test sent at the final's ``audio_offset`` proves every sample arrived once.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from orchestrator.client import AsyncStream, StreamEvent
from orchestrator.host.engine import ENGINE_SAMPLE_RATE
from orchestrator.host.synthetic import parse_fingerprint
from support import assert_fingerprint

#: EchoPanel sends 20 ms frames; the tests do too.
CHUNK_MS = 20
CHUNK_S = CHUNK_MS / 1000
#: Generous bound on one whole test stream (the behaviour under test is "it finishes").
STREAM_DEADLINE_S = 60.0
#: The segmenter decides frame by frame; edges are judged to this much.
FRAME_S = 0.02
#: A burst edge may land this many frames off (ramps, frame alignment).
EDGE_TOLERANCE_FRAMES = 2
#: Loudness of the "silence" between bursts: room noise well under the speech threshold.
ROOM_NOISE_RMS = 20.0
BURST_PEAK = 9000.0
RAMP_S = 0.01


@dataclasses.dataclass(frozen=True)
class SpeechLike:
    """PCM16 audio and where its bursts are, as sample spans [start, end)."""

    pcm: np.ndarray
    sample_rate: int
    bursts: tuple[tuple[int, int], ...]

    @property
    def duration_s(self) -> float:
        return self.pcm.size / self.sample_rate

    def chunks(self, chunk_ms: int = CHUNK_MS) -> list[np.ndarray]:
        step = self.sample_rate * chunk_ms // 1000
        return [self.pcm[i : i + step] for i in range(0, self.pcm.size, step)]


def speech_like(
    *,
    bursts: int,
    burst_s: float = 0.8,
    silence_s: float = 0.7,
    lead_s: float = 0.3,
    tail_s: float | None = None,
    sample_rate: int = ENGINE_SAMPLE_RATE,
    seed: int = 0,
) -> SpeechLike:
    """``bursts`` voiced bursts, each after ``silence_s`` of room noise (``lead_s`` before the
    first), then ``tail_s`` (default ``silence_s``) of room noise; a different voice per seed."""
    rng = np.random.default_rng(seed)
    rate = sample_rate
    parts: list[np.ndarray] = []
    spans: list[tuple[int, int]] = []
    at = 0

    def quiet(seconds: float) -> None:
        nonlocal at
        n = round(seconds * rate)
        parts.append(rng.normal(0.0, ROOM_NOISE_RMS, n))
        at += n

    for i in range(bursts):
        quiet(lead_s if i == 0 else silence_s)
        n = round(burst_s * rate)
        t = np.arange(n) / rate
        pitch = rng.uniform(110.0, 240.0)
        voice = sum(np.sin(2 * np.pi * pitch * k * t + rng.uniform(0, 6.3)) / k for k in (1, 2, 3))
        syllables = 0.65 + 0.35 * np.sin(2 * np.pi * rng.uniform(3.0, 5.0) * t)
        ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / RAMP_S)
        burst = BURST_PEAK / 1.6 * voice * syllables * ramp + rng.normal(0.0, 300.0, n)
        parts.append(burst)
        spans.append((at, at + n))
        at += n
    quiet(silence_s if tail_s is None else tail_s)
    pcm = np.clip(np.round(np.concatenate(parts)), -32768, 32767).astype(np.int16)
    return SpeechLike(pcm, rate, tuple(spans))


def finals_of(events: Sequence[Any]) -> list[Mapping[str, Any]]:
    """The raw headers of the final events, in arrival order (StreamEvents or plain dicts)."""
    raw = [getattr(e, "raw", e) for e in events]
    return [r for r in raw if r.get("type") == "final"]


def check_finals(
    finals: Sequence[Mapping[str, Any]],
    sent: SpeechLike,
    *,
    end_silence_s: float,
    fingerprints: bool = True,
) -> None:
    """Every burst lies in exactly one final, in order; finals do not overlap; their times sit at
    the burst edges; and (``fingerprints``) each final's text is the fingerprint of exactly the
    audio sent at its ``audio_offset``/``n_samples``: no sample lost, altered or doubled."""
    rate = sent.sample_rate
    assert len(finals) == len(sent.bursts), (
        f"{len(finals)} finals for {len(sent.bursts)} bursts: "
        f"{[(f['audio_offset'], f['n_samples']) for f in finals]} vs {sent.bursts}"
    )
    tolerance_s = EDGE_TOLERANCE_FRAMES * FRAME_S
    previous_end = 0
    for final, (b_start, b_end) in zip(finals, sent.bursts):
        first, n = int(final["audio_offset"]), int(final["n_samples"])
        last = first + n
        assert first >= previous_end, (
            f"final at {first} overlaps the previous one (ends {previous_end})"
        )
        assert first <= b_start and last >= b_end, (
            f"final [{first}, {last}) does not cover its burst [{b_start}, {b_end})"
        )
        # A final ends after its utterance's trailing silence (the hangover), or at the stream's end.
        assert last <= b_end + round((end_silence_s + tolerance_s) * rate) or last == sent.pcm.size
        assert abs(final["start_s"] - b_start / rate) <= tolerance_s, (
            final["start_s"],
            b_start / rate,
        )
        assert abs(final["end_s"] - b_end / rate) <= tolerance_s, (final["end_s"], b_end / rate)
        if fingerprints:
            assert_fingerprint(final["text"], sent.pcm[first:last])
        previous_end = last


def check_partials(events: Sequence[Any], sent: SpeechLike) -> int:
    """Partials come before their utterance's final, utterances in order, and each partial's text
    is the fingerprint of a prefix of its final's audio. Returns how many partials there were."""
    raw = [getattr(e, "raw", e) for e in events]
    finals = {r["utterance"]: r for r in raw if r.get("type") == "final"}
    seen_final: set[int] = set()
    last_utterance = -1
    partials = 0
    for r in raw:
        kind = r.get("type")
        if kind not in ("partial", "final"):
            continue
        utt = r["utterance"]
        assert utt >= last_utterance, f"utterance {utt} after {last_utterance}"
        last_utterance = utt
        if kind == "final":
            seen_final.add(utt)
            continue
        assert utt not in seen_final, f"partial of utterance {utt} after its final"
        partials += 1
        final = finals[utt]
        n = int(parse_fingerprint(r["text"])["n"])
        assert 0 < n <= int(final["n_samples"])
        first = int(final["audio_offset"])
        assert_fingerprint(r["text"], sent.pcm[first : first + n])
        assert final["start_s"] == r["start_s"]
    return partials


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

    try:
        events = await asyncio.wait_for(all_events(stream), STREAM_DEADLINE_S)
    except BaseException:
        feeder.cancel()
        raise
    await feeder  # done: "closed" comes only after the close it sent
    return events


async def all_events(stream: AsyncStream) -> list[StreamEvent]:
    return [event async for event in stream]
