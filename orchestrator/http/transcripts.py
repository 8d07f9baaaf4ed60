"""The upload's audio, and the stream path behind ``stream=true`` answers.

A whole-file answer is the long-form path's (``AsyncClient.transcribe_file``: any length, cut at
pauses, pieces in parallel, merged with file timestamps). A ``stream=true`` answer goes through
the coordinator's stream path instead: the file is decoded block by block and fed to a stream as
fast as the host confirms it, and each final (a finished utterance, never revised) becomes a
text delta the moment it is made.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from orchestrator.audio.decode import AudioFile, open_audio
from orchestrator.client import AsyncClient, StreamEvent
from orchestrator.longform.source import DEFAULT_MAX_DURATION_S, check_limits, pcm16_blocks
from orchestrator.wire.contract import ENGINE_SAMPLE_RATE
from orchestrator.wire.errors import DeadlineExceededError, InternalError
from orchestrator.wire.messages import EventType


@dataclass(frozen=True, slots=True)
class Limits:
    """The face's timings for one transcription."""

    timeout_s: float
    stream_chunk_ms: int
    #: How far the stream path's feed may run ahead of confirmed audio (under max_audio_s).
    stream_ahead_s: float


def open_upload(path: Path, filename: str) -> IO[bytes]:
    """The spooled upload as a file object named as the client named it, so the decoder's
    messages name the client's file, never the server's temporary path."""
    f = path.open("rb")
    f.raw.name = filename  # type: ignore[attr-defined]
    return f


async def open_stream_finals(
    client: AsyncClient,
    upload: IO[bytes],
    *,
    model: str,
    options: Mapping[str, Any],
    limits: Limits,
) -> AsyncIterator[StreamEvent]:
    """Check and open the upload (closed when the finals end), open a stream and wait until it is accepted (a refusal raises
    here, before any answer has started); then iterate the finals as the host makes them."""
    audio = await asyncio.to_thread(open_audio, upload)
    try:
        check_limits(audio.info, audio.name, DEFAULT_MAX_DURATION_S)
        stream = await client.stream(model=model, sample_rate=ENGINE_SAMPLE_RATE, **options).open()
        first = await _next(stream, limits.timeout_s)
        if first.type == EventType.ERROR:
            raise first.error or InternalError("stream refused")
    except BaseException:
        audio.close()
        upload.close()
        raise
    return _finals(stream, audio, upload, limits)


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


def _chunks(audio: AudioFile, chunk_samples: int) -> Iterator[np.ndarray]:
    for block in pcm16_blocks(audio):
        for start in range(0, block.size, chunk_samples):
            yield block[start : start + chunk_samples]


async def _finals(
    stream: Any, audio: AudioFile, upload: IO[bytes], limits: Limits
) -> AsyncIterator[StreamEvent]:
    """Feed the file as fast as the host confirms it; yield its finals as they come.

    The coordinator keeps unconfirmed audio for failover and refuses a stream that runs more than
    ``max_audio_s`` ahead of its host, so the feeder stays ``stream_ahead_s`` ahead of what
    finals and progress events have confirmed.
    """
    chunk_samples = ENGINE_SAMPLE_RATE * limits.stream_chunk_ms // 1000
    ahead = int(limits.stream_ahead_s * ENGINE_SAMPLE_RATE)
    confirmed = _Confirmed()
    chunks = _chunks(audio, chunk_samples)
    end_of_file = object()

    async def feed() -> None:
        sent = 0
        while (chunk := await asyncio.to_thread(next, chunks, end_of_file)) is not end_of_file:
            sent += chunk.size
            while sent - confirmed.sample > ahead:
                confirmed.changed.clear()
                await confirmed.changed.wait()
            await stream.send(chunk)
        await stream.close()

    feeder = asyncio.create_task(feed())
    # The deadline of one event: a whole decode of the longest utterance, after the feed waited.
    event_timeout_s = limits.timeout_s + limits.stream_ahead_s
    try:
        while True:
            event = await _next(stream, event_timeout_s)
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
        audio.close()
        upload.close()  # the upload is ours from open_stream_finals on
