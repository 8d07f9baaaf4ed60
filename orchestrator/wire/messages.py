"""Typed message bodies: what the headers of the wire's messages mean, read once where they enter.

The coordinator parses a client's TRANSCRIBE or STREAM_OPEN into these types before routing;
the host parses the coordinator's the same way. A malformed field is a ``BadRequestError`` (or
``BadAudioError``) naming it, raised here and nowhere else. Standard library only (host side).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from orchestrator.wire.errors import BadRequestError


class EventType(enum.StrEnum):
    """The ``type`` of a STREAM_EVENT."""

    OPENED = "opened"  # coordinator -> client: bound to a replica (or parked until one is ready)
    PARTIAL = "partial"  # text of the open utterance so far
    FINAL = "final"  # text of a finished utterance, with its audio span
    HOST_CHANGED = "host_changed"  # failed over: unconfirmed audio replayed to another host
    PROGRESS = "progress"  # audio before ``confirmed_sample`` is confirmed (paces a fast feed)
    ERROR = "error"
    CLOSED = "closed"  # the last event of every stream


def parse_options(value: object) -> dict[str, Any]:
    """A request's ``options``: absent means none; anything but an object is refused."""
    if not value:  # None, or an empty value of any type: no options
        return {}
    if not isinstance(value, dict):
        raise BadRequestError(f"options must be an object, got {type(value).__name__}")
    return value


#: Options a request may carry. Engines declare the subset they honour; others are refused.
#: ``word_timestamps`` (bool): fill ``Segment.words`` (see :class:`Word` for the contract).
KNOWN_OPTIONS = frozenset({"language", "context", "max_tokens", "temperature", "word_timestamps"})
#: Options whose value must be a bool (a JSON true/false), checked before any engine sees them.
BOOL_OPTIONS = frozenset({"word_timestamps"})


@dataclasses.dataclass(frozen=True, slots=True)
class Word:
    """One word of a segment and when it was spoken.

    The contract every engine that honours ``word_timestamps`` follows:

    * ``word`` is the word as it appears in the segment's text, without surrounding spaces
      (punctuation attached as the model wrote it, e.g. ``"expected."``); joining a segment's
      words with spaces gives its text up to whitespace;
    * ``start``/``end`` are seconds from the start of the audio the engine received (like
      ``Segment``), ``0 <= start <= end``, non-decreasing from word to word, and within the
      segment's own span;
    * ``probability`` is the model's confidence in [0, 1] (Whisper: the mean token probability of
      the word), or None when the stack gives none (an aligner);
    * words are filled only when the request set ``word_timestamps=True``; otherwise ``()``.
    """

    word: str
    start: float
    end: float
    probability: float | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "word": self.word,
            "start": self.start,
            "end": self.end,
            "probability": self.probability,
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Word:
        p = data.get("probability")
        return cls(
            str(data["word"]),
            float(data["start"]),
            float(data["end"]),
            None if p is None else float(p),
        )

    def shifted(self, offset_s: float) -> Word:
        return dataclasses.replace(
            self, start=round(self.start + offset_s, 4), end=round(self.end + offset_s, 4)
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Segment:
    """A span of the transcript, times in seconds from the start of the audio sent; ``words``
    when the request asked for ``word_timestamps`` and the engine gives them."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"start": self.start, "end": self.end, "text": self.text}
        if self.words:
            wire["words"] = [w.to_wire() for w in self.words]
        return wire

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Segment:
        return cls(
            float(data["start"]),
            float(data["end"]),
            str(data["text"]),
            tuple(Word.from_wire(w) for w in data.get("words") or ()),
        )

    def shifted(self, offset_s: float) -> Segment:
        """The same segment in a timeline that starts ``offset_s`` earlier (stream time)."""
        return Segment(
            round(self.start + offset_s, 4),
            round(self.end + offset_s, 4),
            self.text,
            tuple(w.shifted(offset_s) for w in self.words),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class EngineResult:
    """What an engine returns for one piece of audio."""

    text: str
    segments: tuple[Segment, ...] = ()
    language: str | None = None
    prompt_tokens: int | None = None
    generation_tokens: int | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "text": self.text,
            "segments": [s.to_wire() for s in self.segments],
            "language": self.language,
            "prompt_tokens": self.prompt_tokens,
            "generation_tokens": self.generation_tokens,
        }
        if self.extra:  # most engines have none: not written, not parsed at three hops
            wire["extra"] = dict(self.extra)
        return wire

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> EngineResult:
        return cls(
            text=str(data.get("text", "")),
            segments=tuple(Segment.from_wire(s) for s in data.get("segments") or ()),
            language=data.get("language"),
            prompt_tokens=data.get("prompt_tokens"),
            generation_tokens=data.get("generation_tokens"),
            extra=dict(data.get("extra") or {}),
        )


def check_bool_options(options: Mapping[str, Any]) -> None:
    """Refuse a non-bool value of a bool option (``"false"`` would read as true)."""
    for name in BOOL_OPTIONS & set(options):
        if not isinstance(options[name], bool):
            raise BadRequestError(
                f"option {name} must be true or false, got {options[name]!r}", option=name
            )
