"""Running one transcription for the face: a one-shot request, or the stream path.

:func:`transcribe_upload` is the face's one call into the coordinator for a whole file. Audio
that fits one request (the coordinator's ``max_audio_s`` and message size) goes as one request;
longer audio goes through the coordinator's stream path, whose host-side segmenter cuts it at
pauses, and the finals become the transcript's segments.

PLACEHOLDER(w13-longform): the long branch is to become ``AsyncClient.transcribe_file`` (the
long-form path with its piece planner and merger) once that is merged; the stream path stays for
``stream=true`` answers, where its finals are the deltas.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.client import AsyncClient, StreamEvent, Timings
from orchestrator.http.decoding import SEND_RATE_HZ, DecodedUpload
from orchestrator.wire.errors import DeadlineExceededError, InternalError
from orchestrator.wire.messages import EventType, Segment

BYTES_PER_SAMPLE = 2  # PCM16


@dataclass(frozen=True, slots=True)
class Transcript:
    """What every response format is rendered from."""

    text: str
    segments: tuple[Segment, ...]
    language: str | None
    duration_s: float
    model: str
    host: str
    timings: Timings | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    """How long a clip one request may carry; longer ones take the stream path."""

    one_shot_max_s: float
    timeout_s: float
    stream_chunk_ms: int
    #: How far the stream path's feed may run ahead of confirmed audio (under max_audio_s).
    stream_ahead_s: float


async def transcribe_upload(
    client: AsyncClient,
    upload: DecodedUpload,
    *,
    model: str,
    options: Mapping[str, Any],
    limits: Limits,
) -> Transcript:
    """The whole file's transcript (one request, or the stream path for long audio)."""
    if upload.duration_s <= limits.one_shot_max_s:
        result = await client.transcribe(
            upload.pcm16,
            sample_rate=SEND_RATE_HZ,
            model=model,
            timeout=limits.timeout_s,
            **options,
        )
        segments = result.segments or (Segment(0.0, upload.duration_s, result.text.strip()),)
        return Transcript(
            result.text,
            segments,
            result.language,
            upload.duration_s,
            result.model,
            result.host,
            result.timings,
        )
    segments: list[Segment] = []
    host = ""
    async for final in stream_finals(client, upload, model=model, options=options, limits=limits):
        host = final.host or host
        # A final's segments are in stream time already (words too, when asked for).
        segments.extend(
            final.segments
            or (Segment(final.start_s or 0.0, final.end_s or 0.0, final.text.strip()),)
        )
    text = " ".join(s.text for s in segments if s.text)
    language = options.get("language")
    return Transcript(text, tuple(segments), language, upload.duration_s, model, host)


async def open_stream_finals(
    client: AsyncClient,
    upload: DecodedUpload,
    *,
    model: str,
    options: Mapping[str, Any],
    limits: Limits,
) -> AsyncIterator[StreamEvent]:
    """Open a stream for the upload and wait until it is accepted (a refusal raises here, before
    any answer has started); then iterate the finals as the host makes them."""
    stream = await client.stream(model=model, sample_rate=SEND_RATE_HZ, **options).open()
    first = await _next(stream, limits.timeout_s)
    if first.type == EventType.ERROR:
        raise first.error or InternalError("stream refused")
    return _finals(stream, upload, limits)


async def stream_finals(
    client: AsyncClient,
    upload: DecodedUpload,
    *,
    model: str,
    options: Mapping[str, Any],
    limits: Limits,
) -> AsyncIterator[StreamEvent]:
    """The finals of the upload sent through the stream path, in order."""
    finals = await open_stream_finals(client, upload, model=model, options=options, limits=limits)
    async for final in finals:
        yield final


async def _next(stream: Any, timeout_s: float) -> StreamEvent:
    try:
        return await stream.next_event(timeout=timeout_s)
    except TimeoutError:
        raise DeadlineExceededError(f"no stream event within {timeout_s:.1f}s") from None


class _Confirmed:
    """How far the coordinator has confirmed the stream's audio (finals and progress events)."""

    def __init__(self) -> None:
        self.sample = 0
        self.changed = asyncio.Event()

    def advance(self, sample: int) -> None:
        if sample > self.sample:
            self.sample = sample
            self.changed.set()


async def _finals(stream: Any, upload: DecodedUpload, limits: Limits) -> AsyncIterator[StreamEvent]:
    """Feed the upload as fast as the host confirms it; yield its finals as they come.

    The coordinator keeps unconfirmed audio for failover and refuses a stream that runs more than
    ``max_audio_s`` ahead of its host, so the feeder stays ``stream_ahead_s`` ahead of what
    finals and progress events have confirmed.
    """
    chunk = SEND_RATE_HZ * limits.stream_chunk_ms // 1000 * BYTES_PER_SAMPLE
    ahead = int(limits.stream_ahead_s * SEND_RATE_HZ)
    confirmed = _Confirmed()

    async def feed() -> None:
        for start in range(0, len(upload.pcm16), chunk):
            end_sample = (start + chunk) // BYTES_PER_SAMPLE
            while end_sample - confirmed.sample > ahead:
                confirmed.changed.clear()
                await confirmed.changed.wait()
            await stream.send(upload.pcm16[start : start + chunk])
        await stream.close()

    feeder = asyncio.create_task(feed())
    try:
        while True:
            event = await _next(stream, limits.timeout_s + upload.duration_s)
            if event.type == EventType.ERROR:
                raise event.error or InternalError("stream failed")
            if event.type == EventType.PROGRESS:
                confirmed.advance(int(event.raw.get("confirmed_sample", 0)))
            elif event.type == EventType.FINAL:
                confirmed.advance(int(event.raw.get("end_sample", 0)))
                yield event
            elif event.type == EventType.CLOSED:
                break
            if feeder.done() and feeder.exception() is not None:
                raise feeder.exception()  # type: ignore[misc]
        await feeder
    finally:
        if not feeder.done():
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeder
        await stream.close()
