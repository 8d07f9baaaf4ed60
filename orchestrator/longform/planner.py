"""The pieces of a long recording: each at most the engine's window, cut at pauses, in order.

Reads 16 kHz PCM16 blocks as they come and keeps at most one window plus one block of audio:
memory is bounded by the window, not by the recording. Each piece knows where it starts on the
file's time line, which is all the merger needs to put its segments back in place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import numpy as np

from orchestrator.longform.pauses import PauseFinder, default_pause_finder
from orchestrator.wire.contract import ENGINE_SAMPLE_RATE

#: Whisper's window: 30 s of audio per decode, the longest piece it takes whole.
DEFAULT_MAX_PIECE_S = 30.0
#: How far before the window's end the cut may fall: a pause is found in this stretch.
DEFAULT_SEARCH_S = 8.0
#: A piece whose loudest 10 ms stays under this (dB full scale) is silence: no host is asked.
SILENCE_DBFS = -55.0


@dataclasses.dataclass(frozen=True, slots=True)
class Piece:
    """One piece: its place in the file and its samples (16 kHz PCM16)."""

    index: int
    start_sample: int
    samples: np.ndarray
    sample_rate: int = ENGINE_SAMPLE_RATE

    @property
    def start_s(self) -> float:
        return self.start_sample / self.sample_rate

    @property
    def end_s(self) -> float:
        return (self.start_sample + self.samples.size) / self.sample_rate

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate

    def is_silent(self, threshold_dbfs: float = SILENCE_DBFS) -> bool:
        """No 10 ms of it reaches the threshold: nothing for an engine to transcribe."""
        frame = self.sample_rate // 100
        usable = self.samples[: self.samples.size // frame * frame].astype(np.float32)
        if not usable.size:
            usable = self.samples.astype(np.float32)
            frame = max(1, usable.size)
        peak_power = float(np.square(usable).reshape(-1, frame).mean(axis=1).max())
        return peak_power <= (32768.0 * 10 ** (threshold_dbfs / 20)) ** 2


@dataclasses.dataclass(frozen=True)
class PiecePlan:
    """How to cut: the longest piece and how far back from its end to look for a pause."""

    max_piece_s: float = DEFAULT_MAX_PIECE_S
    search_s: float = DEFAULT_SEARCH_S
    sample_rate: int = ENGINE_SAMPLE_RATE

    def __post_init__(self) -> None:
        if not (0 < self.search_s < self.max_piece_s):
            raise ValueError(
                f"search_s {self.search_s} must be in (0, max_piece_s {self.max_piece_s})"
            )

    @property
    def max_samples(self) -> int:
        return int(self.max_piece_s * self.sample_rate)

    @property
    def search_samples(self) -> int:
        return int(self.search_s * self.sample_rate)


def plan_pieces(
    blocks: Iterable[np.ndarray],
    plan: PiecePlan | None = None,
    finder: PauseFinder | None = None,
) -> Iterator[Piece]:
    """Cut the PCM16 ``blocks`` into pieces of at most ``plan.max_piece_s`` at pauses."""
    plan = plan or PiecePlan()
    finder = finder or default_pause_finder(plan.sample_rate)
    limit, search = plan.max_samples, plan.search_samples
    pending: list[np.ndarray] = []
    held = 0
    start = 0
    index = 0
    for block in blocks:
        pending.append(block)
        held += block.size
        if held <= limit:
            continue
        buffer = np.concatenate(pending)
        while buffer.size > limit:
            cut = finder.find_cut(buffer, limit - search, limit)
            cut = min(max(cut, 1), limit)  # a finder cannot make a piece too long or empty
            yield Piece(index, start, buffer[:cut].copy(), plan.sample_rate)
            index += 1
            start += cut
            buffer = buffer[cut:]
        pending, held = [buffer], buffer.size
    if held:
        yield Piece(index, start, np.concatenate(pending), plan.sample_rate)
