"""Open a recording streamed, check it before any host is asked, convert it once to 16 kHz PCM16.

The reading itself is ``orchestrator.audio.decode`` (every common format, block by block, the
file's facts from its header first, warnings for a cut or lying file); this module adds what the
long-form path needs on top: the limits checked from those facts, and the one conversion. It
happens on the client: the hosts then get exactly the PCM16 at the engine's rate that they would
otherwise resample themselves, and a piece of 30 s is under a megabyte on the wire whatever the
file's own rate or width.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from orchestrator.audio.decode import AudioFile, AudioInfo, AudioSource, open_audio
from orchestrator.audio.pcm import check_sample_rate, float_to_pcm16
from orchestrator.wire.contract import ENGINE_SAMPLE_RATE
from orchestrator.wire.errors import BadAudioError

__all__ = [
    "DEFAULT_MAX_DURATION_S",
    "READ_BLOCK_S",
    "AudioSource",
    "check_limits",
    "open_audio",
    "pcm16_blocks",
    "to_pcm16",
]

#: Decoded per read: a few MB at the highest rates, whatever the file's length.
READ_BLOCK_S = 5.0
#: A day of audio: far past any meeting, and a guard against a header that lies.
DEFAULT_MAX_DURATION_S = 24 * 3600.0


def check_limits(info: AudioInfo, name: str, max_duration_s: float) -> None:
    """Refuse what no host should be started for: a rate out of range, a file too long."""
    try:
        check_sample_rate(info.sample_rate)
    except BadAudioError as exc:
        raise BadAudioError(
            f"{name}: {exc.message} (fix: resample the file, e.g. sox IN -r 16000 OUT.wav)",
            sample_rate=info.sample_rate,
        ) from None
    if info.duration_s > max_duration_s:
        raise BadAudioError(
            f"{name}: {info.duration_s:.0f}s of audio is over the {max_duration_s:.0f}s limit "
            "(fix: split the file, or raise max_duration_s)",
            duration_s=info.duration_s,
        )


def pcm16_blocks(audio: AudioFile, block_s: float = READ_BLOCK_S) -> Iterator[np.ndarray]:
    """The file as int16 blocks at the engine rate: decoded and resampled (soxr, state carried
    from block to block) by the decoder, converted here to the wire's PCM16."""
    frames = max(1, int(block_s * audio.info.sample_rate))
    for block in audio.blocks(frames, sample_rate=ENGINE_SAMPLE_RATE):
        if block.size:
            yield to_pcm16(block)


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as int16, by the wire's own PCM16 conversion."""
    return np.frombuffer(float_to_pcm16(samples), dtype="<i2")
