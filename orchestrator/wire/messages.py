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
KNOWN_OPTIONS = frozenset({"language", "context", "max_tokens", "temperature"})


@dataclasses.dataclass(frozen=True, slots=True)
class Segment:
    """A span of the transcript, times in seconds from the start of the audio sent."""

    start: float
    end: float
    text: str

    def to_wire(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "text": self.text}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Segment:
        return cls(float(data["start"]), float(data["end"]), str(data["text"]))


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
        return {
            "text": self.text,
            "segments": [s.to_wire() for s in self.segments],
            "language": self.language,
            "prompt_tokens": self.prompt_tokens,
            "generation_tokens": self.generation_tokens,
            "extra": dict(self.extra),
        }

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
