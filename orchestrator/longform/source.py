"""Open a recording streamed, check it before any host is asked, convert it once to 16 kHz PCM16.

The decoder is chosen here, behind :class:`orchestrator.audio.stream.AudioStream`: a WAV of any
common encoding today; another container's decoder plugs in beside it without touching the
planner or the runner. Conversion happens once, on the client: the hosts then get exactly the
PCM16 at the engine's rate that they would otherwise resample themselves, and a piece of 30 s is
under a megabyte on the wire whatever the file's own rate or width.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import IO

import numpy as np

from orchestrator.audio.pcm import check_sample_rate, float_to_pcm16
from orchestrator.audio.resample import Resampler
from orchestrator.audio.stream import AudioInfo, AudioStream
from orchestrator.audio.wav import open_wav
from orchestrator.wire.contract import ENGINE_SAMPLE_RATE
from orchestrator.wire.errors import BadAudioError

#: Decoded per read: a few MB at the highest rates, whatever the file's length.
READ_BLOCK_S = 5.0
#: A day of audio: far past any meeting, and a guard against a header that lies.
DEFAULT_MAX_DURATION_S = 24 * 3600.0

AudioSource = str | os.PathLike[str] | IO[bytes]


def open_audio(source: AudioSource) -> AudioStream:
    """An open, header-checked stream of the file (path or binary file object)."""
    try:
        return open_wav(source)
    except FileNotFoundError:
        raise BadAudioError(f"{os.fspath(source)}: no such file (fix: check the path)") from None  # type: ignore[arg-type]


def check_limits(info: AudioInfo, name: str, max_duration_s: float) -> None:
    """Refuse what no host should be started for: a rate out of range, a file too long."""
    try:
        check_sample_rate(info.sample_rate)
    except BadAudioError as exc:
        raise BadAudioError(
            f"{name}: {exc.message} (fix: resample the file, e.g. sox IN -r 16000 OUT.wav)",
            sample_rate=info.sample_rate,
        ) from None
    duration = info.duration_s
    if duration is not None and duration > max_duration_s:
        raise BadAudioError(
            f"{name}: {duration:.0f}s of audio is over the {max_duration_s:.0f}s limit "
            "(fix: split the file, or raise max_duration_s)",
            duration_s=duration,
        )


def pcm16_blocks(stream: AudioStream, block_s: float = READ_BLOCK_S) -> Iterator[np.ndarray]:
    """The stream as int16 blocks at the engine rate, resampled once with carried filter state."""
    rate = stream.info.sample_rate
    resampler = None if rate == ENGINE_SAMPLE_RATE else Resampler(rate, ENGINE_SAMPLE_RATE)
    frames = max(1, int(block_s * rate))
    while True:
        block = stream.read(frames)
        if not block.size:
            break
        if resampler is not None:
            block = resampler.process(block)
        if block.size:
            yield to_pcm16(block)
    if resampler is not None:
        tail = resampler.flush()
        if tail.size:
            yield to_pcm16(tail)


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as int16, by the wire's own PCM16 conversion."""
    return np.frombuffer(float_to_pcm16(samples), dtype="<i2")
