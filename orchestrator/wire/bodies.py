"""Typed bodies of the routed messages: each header parsed and type-checked once, where it enters.

The coordinator parses what a client sends (TRANSCRIBE, STREAM_OPEN, STREAM_AUDIO, STREAM_CLOSE,
CONTROL, HEALTH) and what a host answers (RESULT); the host parses what the coordinator forwards
(TRANSCRIBE, MODEL).
Code past the entry point holds these frozen objects, never the raw dict, so a field's type is
checked in one place and a malformed one is refused there with the typed error naming it (the
same codes a deeper check used to give). ``to_header`` writes the same keys in the same order the
senders always wrote, so the wire format is unchanged.

A stream is named ``id`` between client and coordinator and ``sid`` between coordinator and host
(the coordinator's own id for it): the stream bodies take the key as an argument.

Standard library only (host side). Slotted, and built without copying headers: the coordinator
parses every chunk of every stream on its hot path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.wire.errors import BadAudioError, BadRequestError, StreamSequenceError
from orchestrator.wire.formats import (
    FORMATS_BY_NAME,
    MAX_SAMPLE_RATE_HZ,
    MIN_SAMPLE_RATE_HZ,
    AudioFormat,
    check_sample_rate,
)
from orchestrator.wire.messages import parse_options

#: The key naming a stream between client and coordinator, and between coordinator and host.
CLIENT_STREAM_KEY, HOST_STREAM_KEY = "id", "sid"
_FORMATS = ", ".join(FORMATS_BY_NAME)
_PCM16 = AudioFormat.PCM16.value
#: JSON's numbers (a tuple: ``int | float`` would build a union type at every check).
_NUMBERS = (int, float)

Header = Mapping[str, Any]


def _optional_str(header: Header, name: str) -> str | None:
    value = header.get(name)
    if value is None or isinstance(value, str):
        return value
    raise BadRequestError(f"{name} must be a string, got {value!r}", field=name)


def _str(header: Header, name: str) -> str:
    return _optional_str(header, name) or ""


def _int(header: Header, name: str, default: int) -> int:
    value = header.get(name, default)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise BadRequestError(f"{name} must be an integer, got {value!r}", field=name)


def _number(header: Header, name: str, default: float) -> float:
    value = header.get(name, default)
    if isinstance(value, _NUMBERS) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise BadRequestError(f"{name} must be a finite number, got {value!r}", field=name)


def _format(header: Header, error: type[BadRequestError] | type[BadAudioError]) -> str:
    """The sample format name; ``error`` keeps the code each message always refused it with."""
    fmt = header.get("format", AudioFormat.PCM16.value)
    if isinstance(fmt, str) and fmt in FORMATS_BY_NAME:
        return fmt
    raise error(f"unknown sample format {fmt!r}; expected one of: {_FORMATS}", field="format")


@dataclass(frozen=True, slots=True)
class TranscribeRequest:
    """A one-shot TRANSCRIBE: client -> coordinator, then coordinator -> host (re-addressed)."""

    id: Any
    model: str
    sample_rate: int
    format: str
    options: dict[str, Any]
    #: Seconds the requester will wait; None when it named none (the receiver's default).
    timeout_s: float | None = None
    #: Pinned to this host: no other is tried.
    host: str | None = None

    @classmethod
    def from_header(cls, header: Header) -> TranscribeRequest:
        get = header.get
        model, rate, fmt = get("model"), get("sample_rate"), get("format", _PCM16)
        options, timeout, host = get("options"), get("timeout_s"), get("host")
        # The usual request, checked in one expression (exact types: a bool is no int here);
        # anything else takes the field-by-field checks below, which name what is wrong.
        if (
            type(model) is str
            and type(rate) is int
            and MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ
            and type(fmt) is str
            and fmt in FORMATS_BY_NAME
            and (options is None or type(options) is dict)
            and (timeout is None or (type(timeout) in _NUMBERS and math.isfinite(timeout)))
            and (host is None or type(host) is str)
        ):
            return cls(
                get("id"),
                model,
                rate,
                fmt,
                options or {},
                None if timeout is None else float(timeout),
                host,
            )
        return cls._from_header_checked(header)

    @classmethod
    def _from_header_checked(cls, header: Header) -> TranscribeRequest:
        model = _str(header, "model")
        rate = check_sample_rate(header.get("sample_rate"))  # before the format, as decoding did
        fmt = _format(header, BadAudioError)
        options = parse_options(header.get("options"))
        timeout = header.get("timeout_s")
        if timeout is not None and not (
            isinstance(timeout, _NUMBERS)
            and not isinstance(timeout, bool)
            and math.isfinite(timeout)  # NaN or infinity would never expire
        ):
            raise BadRequestError(
                f"timeout_s must be a number of seconds, got {timeout!r}", field="timeout_s"
            )
        return cls(
            header.get("id"),
            model,
            rate,
            fmt,
            options,
            None if timeout is None else float(timeout),
            _optional_str(header, "host"),
        )

    def to_header(self) -> dict[str, Any]:
        header: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "sample_rate": self.sample_rate,
            "format": self.format,
            "options": self.options,
            "timeout_s": self.timeout_s,
        }
        if self.host is not None:
            header["host"] = self.host
        return header


@dataclass(frozen=True, slots=True)
class StreamOpen:
    """A STREAM_OPEN: client -> coordinator (may pin a host), coordinator -> host (where the
    stream's timeline resumes after a failover)."""

    stream: Any
    model: str
    sample_rate: int
    format: str
    options: dict[str, Any]
    host: str | None = None
    #: Coordinator -> host: the stream sample and utterance number the host starts counting at.
    start_sample: int = 0
    first_utterance: int = 0

    @classmethod
    def from_header(cls, header: Header, key: str) -> StreamOpen:
        model = _str(header, "model")
        fmt = _format(header, BadRequestError)
        return cls(
            header.get(key),
            model,
            check_sample_rate(header.get("sample_rate")),
            fmt,
            parse_options(header.get("options")),
            _optional_str(header, "host"),
            _int(header, "start_sample", 0),
            _int(header, "first_utterance", 0),
        )

    def to_header(self, key: str) -> dict[str, Any]:
        header: dict[str, Any] = {
            key: self.stream,
            "model": self.model,
            "sample_rate": self.sample_rate,
            "format": self.format,
            "options": self.options,
        }
        if key == HOST_STREAM_KEY:
            header["start_sample"] = self.start_sample
            header["first_utterance"] = self.first_utterance
        if self.host is not None:
            header["host"] = self.host  # pinned: no failover to another host
        return header


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """The header of a STREAM_AUDIO (its payload frame is the audio): which stream, which chunk."""

    stream: Any
    seq: int

    @classmethod
    def from_header(cls, header: Header, key: str) -> StreamChunk:
        seq = header.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            # An out-of-order chunk, as a wrong number is: the sender's sequence is broken.
            raise StreamSequenceError(f"chunk seq must be an integer, got {seq!r}", got=seq)
        return cls(header.get(key), seq)

    def to_header(self, key: str) -> dict[str, Any]:
        return {key: self.stream, "seq": self.seq}


@dataclass(frozen=True, slots=True)
class StreamClose:
    """A STREAM_CLOSE: no more audio; the stream ends once its last words are out."""

    stream: Any

    @classmethod
    def from_header(cls, header: Header, key: str) -> StreamClose:
        return cls(header.get(key))

    def to_header(self, key: str) -> dict[str, Any]:
        return {key: self.stream}


@dataclass(frozen=True, slots=True)
class Control:
    """An operator's CONTROL: do ``action`` to every replica of ``host`` (for a model action,
    load or unload, to ``model`` on them)."""

    id: Any
    action: str
    host: str
    #: The model a load or unload names; None for the host actions.
    model: str | None = None

    @classmethod
    def from_header(cls, header: Header) -> Control:
        return cls(
            header.get("id"),
            _str(header, "action"),
            _str(header, "host"),
            _optional_str(header, "model"),
        )

    def to_header(self) -> dict[str, Any]:
        header = {"id": self.id, "action": self.action, "host": self.host}
        if self.model is not None:
            header["model"] = self.model
        return header


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """The coordinator's MODEL to one replica: ``action`` (load or unload) ``model`` there."""

    id: Any
    action: str
    model: str

    @classmethod
    def from_header(cls, header: Header) -> ModelRequest:
        return cls(header.get("id"), _str(header, "action"), _str(header, "model"))

    def to_header(self) -> dict[str, Any]:
        return {"id": self.id, "action": self.action, "model": self.model}


@dataclass(frozen=True, slots=True)
class HealthRequest:
    """A HEALTH request: only the id the reply is matched by."""

    id: Any

    @classmethod
    def from_header(cls, header: Header) -> HealthRequest:
        return cls(header.get("id"))

    def to_header(self) -> dict[str, Any]:
        return {"id": self.id}


@dataclass(frozen=True, slots=True)
class HostResult:
    """A host's RESULT for a one-shot request: the engine's result and where the time went."""

    id: str
    #: ``EngineResult.to_wire()``, forwarded to the client untouched (the client types it).
    result: Any
    host_queued_s: float = 0.0
    #: Seconds the host spent loading the model first (an on-demand or unloaded one), else 0.
    load_s: float = 0.0
    compute_s: float = 0.0

    @classmethod
    def from_header(cls, header: Header) -> HostResult:
        get = header.get
        queued, load, compute = get("host_queued_s", 0.0), get("load_s", 0.0), get("compute_s", 0.0)
        # What hosts send: three finite floats (their sum is finite only if each is); anything
        # else takes the checks below, which name the field.
        if (
            type(queued) is float
            and type(load) is float
            and type(compute) is float
            and math.isfinite(queued + load + compute)
        ):
            return cls(str(get("id")), get("result"), queued, load, compute)
        return cls._from_header_checked(header)

    @classmethod
    def _from_header_checked(cls, header: Header) -> HostResult:
        return cls(
            str(header.get("id")),
            header.get("result"),
            _number(header, "host_queued_s", 0.0),
            _number(header, "load_s", 0.0),
            _number(header, "compute_s", 0.0),
        )

    def to_header(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "result": self.result,
            "host_queued_s": self.host_queued_s,
            "load_s": self.load_s,
            "compute_s": self.compute_s,
        }
