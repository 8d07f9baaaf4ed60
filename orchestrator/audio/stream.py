"""What a streamed audio file looks like to its readers: its facts first, then blocks of samples.

A decoder (``wav.open_wav`` here; any other container plugs in behind the same two names) reads
a file's header into an :class:`AudioInfo` before it decodes a single sample, so duration, rate
and channels can be checked (and shown) before any host is asked. Samples then come in bounded
blocks, mono float32, so a recording of any length is read in constant memory.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np


@dataclasses.dataclass(frozen=True, slots=True)
class AudioInfo:
    """A file's facts, known from its header."""

    sample_rate: int
    channels: int
    #: Sample frames (one per channel group); None when the container does not say.
    frames: int | None
    #: The encoding as people name it, e.g. "PCM 16-bit" or "float 32-bit".
    encoding: str = ""

    @property
    def duration_s(self) -> float | None:
        return None if self.frames is None else self.frames / self.sample_rate

    def describe(self) -> str:
        """One line for people: "62.35 s, 44100 Hz, 2 channels, PCM 16-bit"."""
        duration = "unknown length" if self.duration_s is None else f"{self.duration_s:.2f} s"
        channels = "1 channel" if self.channels == 1 else f"{self.channels} channels"
        parts = [duration, f"{self.sample_rate} Hz", channels, self.encoding]
        return ", ".join(p for p in parts if p)


class AudioStream(Protocol):
    """An open audio file read block by block; downmixed to mono, float32 in [-1, 1]."""

    info: AudioInfo

    def read(self, frames: int) -> np.ndarray:
        """Up to ``frames`` mono samples; an empty array at the end of the file."""
        ...

    def close(self) -> None: ...
