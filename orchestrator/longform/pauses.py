"""Where to cut a long recording: at a pause near the point the engine's window ends.

A cut inside a word costs that word (or two half-words). So the planner asks for a cut between a
lower and an upper bound, and the finder returns the middle of the quietest stretch there. The
energy finder below needs nothing but numpy; a model VAD (Silero) can implement the same one
method and be passed instead.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from orchestrator.wire.contract import ENGINE_SAMPLE_RATE

#: The stretch whose energy is compared: long enough to be a pause between words, not the
#: silence between two samples of a zero crossing.
PAUSE_WINDOW_S = 0.2
#: Energy is measured per frame of this length.
FRAME_S = 0.01


class PauseFinder(Protocol):
    """Chooses a cut in ``pcm16[low:high]``; returns its sample index (low <= index <= high)."""

    def find_cut(self, pcm16: np.ndarray, low: int, high: int) -> int: ...


class QuietestStretch:
    """The centre of the quietest ``window_s`` between the bounds (ties: the latest, for longer
    pieces), by RMS energy over ``frame_s`` frames."""

    def __init__(
        self,
        window_s: float = PAUSE_WINDOW_S,
        frame_s: float = FRAME_S,
        sample_rate: int = ENGINE_SAMPLE_RATE,
    ) -> None:
        self.frame = max(1, int(frame_s * sample_rate))
        self.window_frames = max(1, int(window_s / frame_s))

    def find_cut(self, pcm16: np.ndarray, low: int, high: int) -> int:
        n_frames = (high - low) // self.frame
        if n_frames < 1:
            return high
        frames = pcm16[low : low + n_frames * self.frame].astype(np.float32)
        energy = np.square(frames).reshape(n_frames, self.frame).mean(axis=1)
        width = min(self.window_frames, n_frames)
        # Mean energy of every run of `width` frames, by a cumulative sum (one pass).
        cumulative = np.concatenate(([0.0], np.cumsum(energy, dtype=np.float64)))
        stretch = cumulative[width:] - cumulative[:-width]
        best = len(stretch) - 1 - int(np.argmin(stretch[::-1]))  # the latest of equal minima
        return low + (best * self.frame) + (width * self.frame) // 2
