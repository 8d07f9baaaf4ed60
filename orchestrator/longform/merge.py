"""The pieces' results as one transcript on the file's time line.

Each piece was transcribed as if it started at zero; its segments (and their words, when the
request asked for word timestamps) move by the piece's start. A result without segments (some
engines give text only) becomes one segment spanning its piece, so every format has times to
show.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from orchestrator.audio.decode import AudioInfo
from orchestrator.longform.planner import Piece
from orchestrator.wire.messages import Segment, Word


class PieceResult(Protocol):
    """What the merger reads of one piece's answer (the clients' TranscriptionResult fits)."""

    text: str
    segments: Sequence[Segment]
    language: str | None
    host: str
    replica: str


@dataclasses.dataclass(frozen=True, slots=True)
class PieceOutcome:
    """One piece and what became of it: its result, or None when it was silence (not sent)."""

    piece_index: int
    start_s: float
    end_s: float
    result: PieceResult | None

    @classmethod
    def of(cls, piece: Piece, result: PieceResult | None) -> PieceOutcome:
        return cls(piece.index, piece.start_s, piece.end_s, result)


@dataclasses.dataclass(frozen=True)
class Transcript:
    """A whole recording's transcript: segments in file time and how it was made."""

    name: str
    info: AudioInfo
    model: str
    segments: tuple[Segment, ...]
    language: str | None
    pieces: int
    #: Pieces answered by each replica (the spread over replicas and hosts).
    replicas: Mapping[str, int]
    wall_s: float
    #: Per-piece timings summed: time queued, computing and end to end (client's view).
    timings: Mapping[str, float] = dataclasses.field(default_factory=dict)
    #: What went wrong without stopping the run, one line each: what the decoder found wrong
    #: with the file (cut short, a lying header), then every retried attempt of a piece (which
    #: piece, the error code, the host that failed it and the one it moved to).
    warnings: tuple[str, ...] = ()
    #: Seconds of audio decoded; None means the header's duration (the file was whole).
    decoded_s: float | None = None
    #: Attempts of pieces that were retries (0: every piece succeeded at its first attempt).
    retries: int = 0

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.text)

    @property
    def duration_s(self) -> float:
        """The audio really transcribed: less than the header says when the file was cut."""
        return self.info.duration_s if self.decoded_s is None else self.decoded_s

    @property
    def real_time_factor(self) -> float:
        """Wall time per second of audio: under 1 is faster than real time."""
        return self.wall_s / self.duration_s if self.duration_s else 0.0

    @property
    def hosts(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for replica, n in self.replicas.items():
            counts[replica.rsplit(".", 1)[0]] += n
        return dict(counts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.name,
            "duration_s": round(self.duration_s, 3),
            "sample_rate": self.info.sample_rate,
            "channels": self.info.channels,
            "audio": dataclasses.asdict(self.info),
            "warnings": list(self.warnings),
            "model": self.model,
            "language": self.language,
            "text": self.text,
            "segments": [s.to_wire() for s in self.segments],
            "pieces": self.pieces,
            "retries": self.retries,
            "replicas": dict(self.replicas),
            "wall_s": round(self.wall_s, 3),
            "real_time_factor": round(self.real_time_factor, 4),
        }


def piece_segments(outcome: PieceOutcome) -> list[Segment]:
    """A piece's segments moved to file time and kept inside the piece."""
    result = outcome.result
    if result is None or not result.text.strip():
        return []
    if not result.segments:
        return [Segment(outcome.start_s, outcome.end_s, result.text.strip())]
    out = []
    for seg in result.segments:
        if seg.text.strip():
            start, end = _on_file_time(outcome, seg.start, seg.end)
            words = tuple(
                Word(w.word, *_on_file_time(outcome, w.start, w.end), w.probability)
                for w in seg.words
            )
            out.append(Segment(start, end, seg.text.strip(), words))
    return out


def _on_file_time(outcome: PieceOutcome, start: float, end: float) -> tuple[float, float]:
    """A span of a piece moved by the piece's start and kept inside the piece (ms precision)."""
    file_start = min(outcome.start_s + max(start, 0.0), outcome.end_s)
    file_end = min(outcome.start_s + max(end, start, 0.0), outcome.end_s)
    return round(file_start, 3), round(file_end, 3)


def merge(
    outcomes: Iterable[PieceOutcome],
    *,
    name: str,
    info: AudioInfo,
    model: str,
    wall_s: float,
    timings: Mapping[str, float] | None = None,
    warnings: Sequence[str] = (),
    decoded_s: float | None = None,
    retries: int = 0,
) -> Transcript:
    """One transcript from the outcomes of every piece (any order in, file order out)."""
    ordered = sorted(outcomes, key=lambda o: o.piece_index)
    segments = [seg for outcome in ordered for seg in piece_segments(outcome)]
    answered = [o.result for o in ordered if o.result is not None]
    languages = Counter(r.language for r in answered if r.language)
    return Transcript(
        name=name,
        info=info,
        model=model,
        segments=tuple(segments),
        language=languages.most_common(1)[0][0] if languages else None,
        pieces=len(ordered),
        replicas=dict(Counter(r.replica for r in answered)),
        wall_s=wall_s,
        timings=dict(timings or {}),
        warnings=tuple(warnings),
        decoded_s=decoded_s,
        retries=retries,
    )
