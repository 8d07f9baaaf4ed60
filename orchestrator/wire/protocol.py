"""The wire protocol spoken between clients, the coordinator and model hosts.

A message is a list of ZeroMQ frames (after any ROUTER identity frames)::

    [b"orc/3"] [signature] [kind] [header: JSON] [payload] [payload] ...

- ``orc/3`` carries the protocol version, so a peer from another release is refused before
  anything else is read.
- ``signature`` is one HMAC-SHA256 over every other frame, payloads included (Jupyter signs only
  its JSON; we sign the audio too), preceded by the frame count and each frame's length, so the
  signature binds the frame boundaries too. The key is random per run and reaches hosts on their
  stdin; its HMAC pads are hashed once per codec, so a message costs two hash copies, not a key
  schedule.
- ``header`` is a small JSON object. Audio is never in it: it travels as raw little-endian
  payload frames, never base64 or pickle. orjson writes and reads it where installed (every env
  this project builds: a tenth of the standard library's cost per header, the largest share of
  a hop's codec time); elsewhere the standard library does, and either side reads the other's.

``Codec`` is the only place that builds or checks frames. Anything that fails a check raises
``ProtocolError`` with a short ``reason``; receivers count the reason and drop the frames, so
garbage never crashes a process. Standard library (and orjson, when present) only: hosts
import this in every env, including engines' envs we do not control.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import hmac
import json
import json.encoder
import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.wire.contract import DEFAULT_MAX_MESSAGE_BYTES
from orchestrator.wire.errors import ProtocolError

try:
    import orjson
except ImportError:  # an env we did not build: the standard library's JSON, same wire text
    orjson = None  # type: ignore[assignment]

#: 2: signatures cover each frame's length (frame boundaries), not just the bytes.
#: 3: the count and lengths go first, in one block, then the frames (one hash update each).
PROTOCOL_VERSION = 3
VERSION_FRAME = f"orc/{PROTOCOL_VERSION}".encode()
#: Digests remembered to reject replays (Jupyter keeps the same number).
REPLAY_HISTORY_SIZE = 65_536
#: Headers are small; a large one is an attack or a bug.
MAX_HEADER_BYTES = 64 * 1024
KEY_BYTES = 32

Frames = Sequence[bytes | memoryview]
#: SHA-256's block size: the HMAC key is padded to it (RFC 2104).
_HASH_BLOCK_BYTES = 64


def _header_encoder() -> Any:
    """The C JSON encoder, built once: ``json.dumps`` (and ``JSONEncoder.encode``) rebuild it on
    every call, a third of the cost of encoding a small header. No circular-reference markers:
    headers are trees of plain values (a caller's self-containing option would fail with
    RecursionError rather than ValueError)."""
    plain = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
    make = json.encoder.c_make_encoder
    if make is None:  # an interpreter without the C accelerator: the pure encoder, same output
        return lambda obj, _level: plain.iterencode(obj)
    return make(
        None, plain.default, json.encoder.encode_basestring_ascii, None, ":", ",",
        False, False, False,
    )  # fmt: skip


_encode_header = _header_encoder()


def _json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by null: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def encode_header(header: dict[str, Any]) -> bytes:
    """A header as strict JSON. A non-finite number (an id of ``1e999`` parses to inf and is
    echoed back) becomes null rather than ``Infinity``, which no JSON parser need accept.

    orjson when installed (it writes non-finite numbers as null too); what it refuses (an
    integer beyond 64 bits, a lone surrogate, a non-string key) the standard library writes,
    and what neither can write raises its TypeError, as without orjson.
    """
    if orjson is not None:
        try:
            return orjson.dumps(header)
        except TypeError:
            pass
    return _encode_header_stdlib(header)


def _encode_header_stdlib(header: dict[str, Any]) -> bytes:
    try:
        return "".join(_encode_header(header, 0)).encode()
    except ValueError:  # the rare slow path: only headers that carry such a number
        return "".join(_encode_header(_json_safe(header), 0)).encode()


_scan_json = json.JSONDecoder().scan_once


def _parse_header(data: bytes | memoryview) -> Any:
    """The header frame's JSON value (raises ValueError or RecursionError for anything else).

    orjson reads our canonical UTF-8 text; what it refuses (``NaN``, ``1e999``, a lone
    surrogate escape, nesting past 1024) gets the standard library's verdict, so a header means
    the same with or without orjson; but for one thing: an integer beyond 64 bits reads as the
    nearest float (as in most JSON parsers) where the standard library keeps it exact.
    """
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return _parse_header_stdlib(str(data, "utf-8"))


def _parse_header_stdlib(text: str) -> Any:
    """``json.loads(text)`` without its three Python layers, for the canonical text we send;
    anything else (surrounding whitespace, trailing bytes, no value) gets json.loads' verdict.
    UTF-8 only (what we send): json.loads on bytes would first sniff for UTF-16/32."""
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:
        end = -1
    return value if end == len(text) else json.loads(text)


#: The signed length block of a message of n body frames, one packer per n (messages have a few).
_LENGTH_BLOCKS: dict[int, Any] = {}


def _length_block(frames: Sequence[bytes | memoryview]) -> bytes:
    n = len(frames)
    pack = _LENGTH_BLOCKS.get(n)
    if pack is None:
        pack = _LENGTH_BLOCKS[n] = struct.Struct(f"<{n + 1}Q").pack
    return pack(n, *map(len, frames))


class Kind(enum.StrEnum):
    """Message kinds. The value is what travels in the kind frame."""

    READY = "ready"  # host -> coordinator: models, capabilities, pid, versions
    HEARTBEAT = "hb"  # both ways; host adds load and in-flight ages
    TRANSCRIBE = "transcribe"  # client -> coordinator -> host: one-shot request
    RESULT = "result"  # host -> coordinator -> client
    ERROR = "error"  # anyone -> requester, with a stable code
    STREAM_OPEN = "stream_open"
    STREAM_AUDIO = "stream_audio"
    STREAM_EVENT = "stream_event"  # partial / final / host_changed / lag / closed
    STREAM_CLOSE = "stream_close"
    SHUTDOWN = "shutdown"  # coordinator -> host: finish and exit
    HEALTH = "health"  # client -> coordinator
    HEALTH_REPLY = "health_reply"
    CONTROL = "control"  # client -> coordinator: admin actions (stop/start a host, load a model)
    CONTROL_REPLY = "control_reply"  # coordinator -> client; host -> coordinator for MODEL
    MODEL = "model"  # coordinator -> host: load or unload one model
    HELLO = "hello"  # external host -> coordinator over Curve: "register me" (wire.dialin)
    WELCOME = "welcome"  # coordinator -> external host: its replica, the signing key, timings


_KINDS = {k.value.encode(): k for k in Kind}
_KIND_FRAMES = {k: k.value.encode() for k in Kind}


@dataclass(slots=True)
class Message:
    """One decoded message: its kind, a JSON header and raw payload frames."""

    kind: Kind
    header: dict[str, Any] = field(default_factory=dict)
    payloads: list[bytes] = field(default_factory=list)


def new_key() -> bytes:
    """A fresh random signing key for one run."""
    return os.urandom(KEY_BYTES)


class Codec:
    """Encodes, signs, verifies and decodes messages under one key.

    One codec per socket owner (not thread-safe: its replay history is plain state).
    """

    def __init__(
        self,
        key: bytes,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        replay_history: int = REPLAY_HISTORY_SIZE,
    ) -> None:
        if len(key) < 16:
            raise ValueError("signing key must be at least 16 bytes")
        # HMAC (RFC 2104) by hand so the key's pads are hashed once, here: a message then costs
        # two hash copies and one update per frame. Same digest as hmac.new(key, ..., sha256).
        block = (hashlib.sha256(key).digest() if len(key) > _HASH_BLOCK_BYTES else key).ljust(
            _HASH_BLOCK_BYTES, b"\0"
        )
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        self.max_message_bytes = max_message_bytes
        self._history_size = replay_history
        self._seen: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        # A unique message id makes every signature unique, so the replay check never
        # rejects two honest messages that happen to say the same thing (two heartbeats).
        self._mid_prefix = os.urandom(6).hex()
        self._mid_count = 0

    def _sign(self, frames: Sequence[bytes | memoryview]) -> bytes:
        # The frame count and every length go in first, so re-splitting frames (or adding an
        # empty one) changes the digest: the signature binds the boundaries, not just the bytes.
        inner = self._inner.copy()
        inner.update(_length_block(frames))
        for frame in frames:
            inner.update(frame)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def sign(self, frames: Sequence[bytes | memoryview]) -> bytes:
        """The signature of a message body (kind, header, payloads): for tools and tests."""
        return self._sign(frames)

    def encode(self, msg: Message) -> list[bytes]:
        """Frames ready for ``send_multipart`` (identity frames are the caller's)."""
        self._mid_count += 1
        msg.header["mid"] = f"{self._mid_prefix}{self._mid_count:x}"
        header = encode_header(msg.header)
        body = [_KIND_FRAMES[msg.kind], header, *msg.payloads]
        return [VERSION_FRAME, self._sign(body), *body]

    def decode(self, frames: Frames) -> Message:
        """Check and decode; raises ProtocolError(reason) and changes no state on failure."""
        if len(frames) < 4:
            raise ProtocolError("too few frames", reason="malformed")
        if frames[0] != VERSION_FRAME:
            raise ProtocolError(f"protocol version {bytes(frames[0])[:16]!r}", reason="version")
        total = sum(map(len, frames))
        if total > self.max_message_bytes:
            raise ProtocolError(
                f"message of {total} bytes over the {self.max_message_bytes} byte limit",
                reason="oversize",
            )
        body = frames[2:]
        digest = self._sign(body)
        if not hmac.compare_digest(digest, frames[1]):
            raise ProtocolError("bad signature", reason="signature")
        if digest in self._seen:
            raise ProtocolError("replayed message", reason="replay")
        kind = _KINDS.get(bytes(body[0]))
        if kind is None:
            raise ProtocolError(f"unknown kind {bytes(body[0])[:32]!r}", reason="kind")
        if len(body[1]) > MAX_HEADER_BYTES:
            raise ProtocolError("header too large", reason="oversize")
        try:
            header = _parse_header(body[1])
        except (ValueError, RecursionError):  # bad UTF-8, a 5000-digit number, deep nesting
            raise ProtocolError("header is not JSON", reason="malformed") from None
        if not isinstance(header, dict):
            raise ProtocolError("header is not a JSON object", reason="malformed")
        seen = self._seen  # remembered only once the message is accepted
        seen[digest] = None
        if len(seen) > self._history_size:
            seen.popitem(last=False)
        return Message(kind, header, [bytes(p) for p in body[2:]])


class DropCounter:
    """Counts dropped frames by reason; health and metrics read it."""

    def __init__(self) -> None:
        self.by_reason: collections.Counter[str] = collections.Counter()

    def add(self, err: ProtocolError) -> None:
        self.by_reason[str(err.details.get("reason", "malformed"))] += 1

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())


def error_message(err: Any, request_id: str | None = None, **extra: Any) -> Message:
    """An ERROR message for a typed OrchestratorError (``err.to_wire()``)."""
    header: dict[str, Any] = {"error": err.to_wire(), **extra}
    if request_id is not None:
        header["id"] = request_id
    return Message(Kind.ERROR, header)
