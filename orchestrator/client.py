"""Clients of the coordinator: ``AsyncClient`` (asyncio first) and its twin ``Client`` (blocking).

As in httpx, the two share everything but I/O: request building, validation and result parsing
live in ``_Core``; each client only sends frames and waits for the reply with the same id.

    client = AsyncClient.connect()                  # a standalone coordinator's connection file
    result = await client.transcribe(pcm16, sample_rate=16000, model="qwen3-asr")
    async with client.stream(model="qwen3-asr", sample_rate=16000) as s:
        await s.send(chunk)
        async for event in s: ...

Errors are raised as the typed classes of ``orchestrator.wire.errors``, one per code.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq
import zmq.asyncio

from orchestrator.audio import pcm as audio_mod
from orchestrator.coordinator.runtime_dir import read_connection_file
from orchestrator.longform import runner as longform
from orchestrator.longform.merge import Transcript
from orchestrator.longform.retry import DEFAULT_PIECE_ATTEMPTS
from orchestrator.longform.source import AudioSource
from orchestrator.wire import curve
from orchestrator.wire.contract import DEFAULT_MAX_MESSAGE_BYTES
from orchestrator.wire.errors import (
    BadAudioError,
    BadRequestError,
    ConnectionFileError,
    DeadlineExceededError,
    OrchestratorError,
    ProtocolError,
    StreamClosedError,
    error_from_wire,
)
from orchestrator.wire.formats import BYTES_PER_SAMPLE, AudioFormat
from orchestrator.wire.handshake import HandshakeWatch, Party
from orchestrator.wire.messages import KNOWN_OPTIONS, EventType, Segment, Word, check_bool_options
from orchestrator.wire.protocol import Codec, Kind, Message
from orchestrator.wire.sockets import has_message, recv_frames, send_frames, waiting_messages

#: Extra time the client waits past a request's deadline for the coordinator's own answer.
REPLY_GRACE_S = 5.0
#: ZeroMQ queues silently up to its high-water mark: set it well above any honest burst.
SOCKET_HWM = 50_000
DEFAULT_TIMEOUT_S = 30.0
#: Replies an AsyncClient reads per wake-up before other callbacks of its loop get a turn.
MAX_MESSAGES_PER_WAKE = 1000
#: How often an AsyncClient retries a send the coordinator's full queue refused (ZeroMQ's HWM).
SEND_RETRY_INTERVAL_S = 0.001
#: How often an AsyncClient looks for requests past their deadline: one timer for all of them
#: rather than one per request (whose handle, heap entry and cancel cost more than the rest of
#: the client's bookkeeping); a request is failed at most this much after its deadline.
DEADLINE_SWEEP_S = 0.1
#: Messages an AsyncClient keeps waiting for the socket before senders wait for room (reached
#: only while the coordinator's queue is full: otherwise each loop turn sends all it queued).
MAX_OUTGOING = 1000
#: A Curve Client's blocking send stops this often to hear whether its handshake was refused.
LINK_CHECK_INTERVAL_S = 0.1
#: A model load or unload may take a big model's load time; the coordinator bounds it too
#: (``model_op_timeout_s``) and answers with the reason.
MODEL_OP_TIMEOUT_S = 300.0


@dataclass(frozen=True, slots=True)
class Timings:
    queued_s: float
    compute_s: float
    total_s: float
    #: Time the host spent loading the model for this request (an on-demand or unloaded model).
    load_s: float = 0.0


@dataclass(frozen=True, slots=True)
class TranscriptionResult:
    """A one-shot transcript and where and how fast it was made."""

    text: str
    segments: tuple[Segment, ...]
    language: str | None
    model: str
    host: str
    replica: str
    timings: Timings
    attempts: int = 1
    prompt_tokens: int | None = None
    generation_tokens: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def words(self) -> tuple[Word, ...]:
        """Every segment's words in order (empty unless ``word_timestamps=True`` was asked)."""
        return tuple(w for s in self.segments for w in s.words)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event of a stream: opened, partial, final, host_changed, lag, error or closed.

    A partial's or final's ``segments`` (and their ``words``, with ``word_timestamps=True``)
    are timed in stream seconds, like ``start_s``/``end_s``.
    """

    type: str
    text: str = ""
    start_s: float | None = None
    end_s: float | None = None
    utterance: int | None = None
    host: str | None = None
    lag_s: float | None = None
    error: OrchestratorError | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)
    language: str | None = None
    segments: tuple[Segment, ...] = ()

    @property
    def words(self) -> tuple[Word, ...]:
        return tuple(w for s in self.segments for w in s.words)


class _Core:
    """Request building and reply parsing shared by both clients."""

    def __init__(self, key: bytes, max_message_bytes: int, timeout_s: float) -> None:
        self.codec = Codec(key, max_message_bytes=max_message_bytes)
        self.codec_key = key
        self.max_message_bytes = max_message_bytes
        self.timeout_s = timeout_s
        self._prefix = os.urandom(4).hex()
        self._ids = itertools.count(1)

    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    def encode(self, msg: Message) -> list[bytes]:
        frames = self.codec.encode(msg)
        size = sum(map(len, frames))
        if size > self.max_message_bytes:
            raise BadRequestError(
                f"message of {size} bytes is over the {self.max_message_bytes} byte limit; "
                "send shorter audio or stream it",
                size=size,
            )
        return frames

    def transcribe_message(
        self,
        audio: bytes | bytearray | memoryview | np.ndarray,
        sample_rate: int,
        model: str,
        timeout_s: float | None,
        options: Mapping[str, Any],
        host: str | None = None,
    ) -> tuple[str, Message, float]:
        payload, fmt = audio_mod.encode_audio(audio, sample_rate)
        _check_options(options)
        timeout = check_timeout(timeout_s if timeout_s is not None else self.timeout_s)
        rid = self.new_id()
        header = {
            "id": rid,
            "model": model,
            "sample_rate": sample_rate,
            "format": str(fmt),
            "options": dict(options),
            "timeout_s": timeout,
        }
        if host is not None:
            header["host"] = host
        return rid, Message(Kind.TRANSCRIBE, header, [payload]), timeout

    def stream_open_message(
        self, model: str, sample_rate: int, fmt: str, options: Mapping[str, Any]
    ) -> tuple[str, Message]:
        options = dict(options)
        host = options.pop("host", None)
        audio_mod.check_sample_rate(sample_rate)
        _check_options(options)
        sid = self.new_id()
        header = {
            "id": sid,
            "model": model,
            "sample_rate": sample_rate,
            "format": fmt,
            "options": options,
        }
        if host is not None:
            header["host"] = host  # pinned: no failover to another host
        return sid, Message(Kind.STREAM_OPEN, header)

    def control_message(
        self, action: str, host: str, model: str | None = None
    ) -> tuple[str, Message]:
        rid = self.new_id()
        header: dict[str, Any] = {"id": rid, "action": action, "host": host}
        if model is not None:
            header["model"] = model
        return rid, Message(Kind.CONTROL, header)

    @staticmethod
    def control_reply(msg: Message) -> dict[str, Any]:
        if msg.kind is Kind.ERROR:
            raise error_from_wire(msg.header.get("error") or {})
        return {k: v for k, v in msg.header.items() if k != "id"}

    @staticmethod
    def chunk_payload(chunk: bytes | bytearray | memoryview | np.ndarray, fmt: str) -> bytes:
        if isinstance(chunk, np.ndarray):
            if fmt == "pcm16":
                return np.asarray(chunk, dtype="<i2").tobytes()
            return audio_mod.check_float_samples(np.asarray(chunk, dtype="<f4")).tobytes()
        width = BYTES_PER_SAMPLE[AudioFormat(fmt)]
        if len(chunk) % width:
            raise BadAudioError(f"chunk of {len(chunk)} bytes is not whole {fmt} samples")
        return bytes(chunk)

    def decode(self, frames: list[zmq.Frame]) -> Message | None:
        try:
            return self.codec.decode([f.buffer for f in frames])
        except ProtocolError:
            return None  # not for us or tampered with: never surfaces as a reply

    @staticmethod
    def result(msg: Message) -> TranscriptionResult:
        if msg.kind is Kind.ERROR:
            raise error_from_wire(msg.header.get("error") or {})
        header = msg.header
        body = header.get("result") or {}
        t = header.get("timings") or {}
        return TranscriptionResult(
            text=str(body.get("text", "")),
            segments=tuple(Segment.from_wire(s) for s in body.get("segments") or ()),
            language=body.get("language"),
            model=str(header.get("model", "")),
            host=str(header.get("host", "")),
            replica=str(header.get("replica", "")),
            timings=Timings(
                float(t.get("queued_s", 0)),
                float(t.get("compute_s", 0)),
                float(t.get("total_s", 0)),
                float(t.get("load_s", 0)),
            ),
            attempts=int(header.get("attempts", 1)),
            prompt_tokens=body.get("prompt_tokens"),
            generation_tokens=body.get("generation_tokens"),
            extra=body.get("extra") or {},
        )

    @staticmethod
    def event(msg: Message) -> StreamEvent:
        h = msg.header
        kind = "error" if msg.kind is Kind.ERROR else str(h.get("type", ""))
        err = error_from_wire(h["error"]) if h.get("error") else None
        return StreamEvent(
            type=kind,
            text=str(h.get("text", "")),
            start_s=h.get("start_s"),
            end_s=h.get("end_s"),
            utterance=h.get("utterance"),
            host=h.get("host"),
            lag_s=h.get("lag_s"),
            error=err,
            raw=h,
            language=h.get("language"),
            segments=tuple(Segment.from_wire(s) for s in h.get("segments") or ()),
        )


def check_timeout(timeout_s: object) -> float:
    """A request timeout must be a positive, finite number of seconds (0 is not "the default")."""
    try:
        value = float(timeout_s)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if not (0 < value < math.inf):
        raise BadRequestError(
            f"timeout must be a positive, finite number of seconds, got {timeout_s!r} "
            "(fix: e.g. timeout=30)"
        )
    return value


def _expire(fut: asyncio.Future[Message], limit_s: float) -> None:
    if not fut.done():
        fut.set_exception(
            DeadlineExceededError(f"no answer from the coordinator within {limit_s:.1f}s")
        )


def _check_options(options: Mapping[str, Any]) -> None:
    unknown = set(options) - KNOWN_OPTIONS
    if unknown:
        raise BadRequestError(
            f"unknown option(s) {sorted(unknown)}; known: {sorted(KNOWN_OPTIONS)}"
        )
    check_bool_options(options)


def _resolve(
    endpoint: str | None,
    key: bytes | None,
    connection_file: str | Path | None,
    max_bytes: int | None,
    curve_keys: str | Path | None = None,
) -> tuple[str, bytes, int]:
    """Endpoint, key and message limit: as given, else from the connection file.

    With ``curve_keys`` the client is on another machine, holding a copy of the file: it dials the
    file's ``curve_endpoint`` (its ``endpoint`` is the coordinator machine's own ipc socket).
    """
    if endpoint and key:
        return endpoint, key, max_bytes or DEFAULT_MAX_MESSAGE_BYTES
    remote = curve_keys is not None
    info = read_connection_file(connection_file, local=not remote)
    limit = max_bytes or int(info.get("max_message_bytes") or DEFAULT_MAX_MESSAGE_BYTES)
    if not endpoint:
        endpoint = _curve_endpoint(info, connection_file) if remote else str(info["endpoint"])
    return endpoint, key or bytes.fromhex(str(info["key"])), limit


#: Bind addresses that name every interface of the coordinator's machine, so none to dial.
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "*", "[::]", "::"})


def _curve_endpoint(info: Mapping[str, Any], connection_file: str | Path | None) -> str:
    """The Curve endpoint a remote client dials, from a copy of the coordinator's file."""
    found = info.get("curve_endpoint")
    where = connection_file or "the connection file"
    if not found:
        raise ConnectionFileError(
            f"{where} names no Curve endpoint: that coordinator serves this machine only "
            "(fix: give it a non-loopback client_endpoint with allow_remote = true, or pass the "
            "endpoint yourself)"
        )
    host = str(found).removeprefix("tcp://").rsplit(":", 1)[0]
    if host in _WILDCARD_HOSTS:
        raise ConnectionFileError(
            f"{where} has curve_endpoint {found}, a bind on every interface, not an address to "
            "dial (fix: pass the coordinator's address, e.g. --endpoint "
            f"tcp://COORDINATOR:{str(found).rsplit(':', 1)[-1]})"
        )
    return str(found)


class _ClientBase:
    """Connection set-up shared by both clients: a plain DEALER socket.

    Both clients drive a synchronous pyzmq socket: the blocking one directly, the asyncio one
    through a reader on the socket's wake-up fd. zmq.asyncio's futures, flag enums and
    per-call scheduling cost about as much CPU as everything else a request does.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        key: bytes | None = None,
        connection_file: str | Path | None = None,
        context: zmq.Context[Any] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_message_bytes: int | None = None,
        curve_keys: str | Path | None = None,
        curve_key_name: str = "client",
    ) -> None:
        """``curve_keys``: a folder with this client's ``NAME.key_secret`` and the coordinator's
        ``coordinator.key``, for a coordinator on another machine (CurveZMQ over TCP). If the
        coordinator refuses the handshake, calls raise ``UnauthorizedError`` at once."""
        endpoint, key, max_message_bytes = _resolve(
            endpoint, key, connection_file, max_message_bytes, curve_keys
        )
        self.endpoint = endpoint
        self._core = _Core(key, max_message_bytes, timeout_s)
        #: Kept for a twin on the same link (the blocking client's long-form path).
        self._curve = {"curve_keys": curve_keys, "curve_key_name": curve_key_name}
        self._own_ctx = context is None
        self._ctx: Any = self._context(context)
        self._sock: Any = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, SOCKET_HWM)
        self._sock.setsockopt(zmq.RCVHWM, SOCKET_HWM)
        #: Curve links only: a refused handshake is heard here, not as a timeout. Other clients
        #: (inproc, ipc, loopback) have no watch and pay nothing for it.
        self._link: HandshakeWatch | None = None
        if curve_keys is not None:
            folder = Path(curve_keys)
            keys = curve.load_keypair(folder, curve_key_name)
            curve.make_curve_client(
                self._sock,
                keys,
                curve.load_public_key(
                    folder / f"{curve.COORDINATOR_KEY_NAME}{curve.PUBLIC_SUFFIX}"
                ),
            )
            self._link = HandshakeWatch(self._sock, endpoint, Party("client", folder, keys))
        self._sock.connect(endpoint)

    @staticmethod
    def _context(shared: zmq.Context[Any] | None) -> Any:
        if shared is None:
            return zmq.Context()
        if isinstance(shared, zmq.asyncio.Context):  # same underlying context (inproc needs it)
            return zmq.Context.shadow(shared.underlying)
        return shared

    @classmethod
    def connect(cls, connection_file: str | Path | None = None, **kwargs: Any) -> Any:
        """Connect to a standalone coordinator through its connection file."""
        return cls(connection_file=connection_file, **kwargs)

    def close_socket(self) -> None:
        """Close the socket (the coordinator does this for its clients when it closes)."""
        if self._link is not None:
            self._link.close()
        if not self._sock.closed:
            self._sock.close(linger=0)


class AsyncClient(_ClientBase):
    """asyncio client; safe to share between tasks of one event loop (the one it first sends on).

    Replies are read by a reader callback on the socket's wake-up fd: each wake-up reads every
    waiting reply and hands it to its future or stream queue, so a burst costs one loop turn.
    Requests go out the same way: what the tasks of one loop turn send is queued and sent back to
    back at the turn's end (see :meth:`_flush`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Signed messages queued by ``_send``, sent by ``_flush`` in order.
        self._outgoing: deque[list[bytes]] = deque()
        self._waiting: dict[str, asyncio.Future[Message]] = {}
        #: Per waiting request: (loop time it fails at, its limit in seconds for the message).
        self._deadlines: dict[str, tuple[float, float]] = {}
        self._sweeping = False
        self._streams: dict[str, asyncio.Queue[Message]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int = self._sock.getsockopt(zmq.FD)
        self.closed = False

    def _attach(self) -> asyncio.AbstractEventLoop:
        """Start reading replies on the running loop (at the first send)."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            loop.add_reader(self._fd, self._read_ready)
            if self._link is not None:
                loop.add_reader(self._link.fd, self._read_link)
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("an AsyncClient serves the one event loop it first sent on")
        return loop

    def _detach(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self._fd)
            if self._link is not None:
                loop.remove_reader(self._link.fd)

    async def _send(self, msg: Message) -> None:
        """Queue ``msg`` for this loop turn's :meth:`_flush` (waiting while the coordinator's
        queue is full and ours holds ``MAX_OUTGOING``)."""
        loop = self._attach()
        frames = self._encoded(msg)
        if len(self._outgoing) >= MAX_OUTGOING:
            await self._room()
        self._push(frames, loop)

    def _encoded(self, msg: Message) -> list[bytes]:
        if self.closed:
            raise StreamClosedError("client is closed")
        frames = self._core.encode(msg)
        if self._link is not None:
            self._read_link()
            self._link.dial_again()
        return frames

    async def _room(self) -> None:
        """Wait until our queue has room again (the coordinator's was full)."""
        while len(self._outgoing) >= MAX_OUTGOING:
            await asyncio.sleep(SEND_RETRY_INTERVAL_S)
            if self.closed:
                raise StreamClosedError("client is closed")

    def _push(self, frames: list[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._outgoing.append(frames)
        if len(self._outgoing) == 1:
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Send every queued message, back to back, in order.

        Sends spaced by the work between them (a task resuming with its reply, then sending its
        next request) each find ZeroMQ's I/O thread asleep and pay a wake-up, about 20 us of CPU
        here; queued and sent together at the end of the loop turn, they share one.
        """
        outgoing = self._outgoing
        if self._sock.closed:  # aclose came between the queueing and this turn's end
            outgoing.clear()
            return
        try:
            while outgoing:
                send_frames(self._sock, outgoing[0])
                outgoing.popleft()
        except zmq.Again:  # the coordinator's queue is full: try again soon, as a send would
            if self._link is not None:  # or a refusal left no connection to queue on
                self._link.dial_again()
            if self._loop is not None:
                self._loop.call_later(SEND_RETRY_INTERVAL_S, self._flush)
            return
        except zmq.ZMQError:  # closed under us (the coordinator shut down): nobody to tell
            outgoing.clear()
            return
        # ZeroMQ's fd signals edges: a send may have taken in the news of waiting replies, and
        # the fd would not wake the loop for them.
        if has_message(self._sock):
            self._read_ready()

    def _read_ready(self) -> None:
        """Read every waiting reply (up to a bound) and deliver each to its waiter."""
        read = 0
        try:
            for frames in waiting_messages(self._sock, MAX_MESSAGES_PER_WAKE):
                read += 1
                self._deliver(frames)
        except zmq.ZMQError:  # closed under us (the coordinator shut down)
            return
        # More are waiting, and the fd will not say so again: come back after the others' turn.
        if read == MAX_MESSAGES_PER_WAKE and self._loop is not None:
            self._loop.call_soon(self._read_ready)

    def _read_link(self) -> None:
        """Curve: a refused handshake fails every request and stream waiting, at once.

        Streams end as the coordinator ends a failed one: an ``error`` event, then ``closed``.
        """
        assert self._link is not None
        refusal = self._link.fresh_refusal()
        if refusal is None:
            return
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(refusal.error())
        for sid, queue in self._streams.items():
            error = {"type": EventType.ERROR, "error": refusal.error().to_wire(), "final": True}
            for event in (error, {"type": EventType.CLOSED, "samples_in": 0}):
                queue.put_nowait(Message(Kind.STREAM_EVENT, {**event, "id": sid}))

    def _deliver(self, frames: list[zmq.Frame]) -> None:
        """Hand one reply to the request or stream waiting for it (others are dropped)."""
        msg = self._core.decode(frames)
        if msg is None:
            return
        rid = str(msg.header.get("id"))
        queue = self._streams.get(rid)
        if queue is not None:
            queue.put_nowait(msg)
            return
        fut = self._waiting.pop(rid, None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    async def _request(self, rid: str, msg: Message, timeout_s: float) -> Message:
        loop = self._attach()
        frames = self._encoded(msg)
        fut: asyncio.Future[Message] = loop.create_future()
        self._waiting[rid] = fut
        limit_s = timeout_s + REPLY_GRACE_S
        self._deadlines[rid] = (loop.time() + limit_s, limit_s)
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(DEADLINE_SWEEP_S, self._sweep)
        try:
            if len(self._outgoing) >= MAX_OUTGOING:
                await self._room()
            self._push(frames, loop)
            return await fut
        finally:
            del self._deadlines[rid]
            self._waiting.pop(rid, None)

    def _sweep(self) -> None:
        """Fail the requests past their deadline; come back while any is waiting."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._sweeping = False
            return
        now = loop.time()
        for rid, (deadline, limit_s) in list(self._deadlines.items()):
            fut = self._waiting.get(rid)
            if deadline <= now and fut is not None:
                _expire(fut, limit_s)
        if self._deadlines:
            loop.call_later(DEADLINE_SWEEP_S, self._sweep)
        else:
            self._sweeping = False

    async def transcribe(
        self,
        audio: bytes | bytearray | memoryview | np.ndarray,
        *,
        sample_rate: int,
        model: str,
        timeout: float | None = None,
        host: str | None = None,
        **options: Any,
    ) -> TranscriptionResult:
        """Transcribe one clip (PCM16 bytes, or an int16/float numpy array).

        ``options`` are the engine options (language, context, max_tokens, temperature);
        ``host`` pins the request to one host, with no fallback (for comparisons).
        """
        rid, msg, timeout_s = self._core.transcribe_message(
            audio, sample_rate, model, timeout, options, host
        )
        return self._core.result(await self._request(rid, msg, timeout_s))

    async def transcribe_file(
        self,
        source: AudioSource,
        *,
        model: str,
        timeout: float | None = None,
        host: str | None = None,
        piece_attempts: int = DEFAULT_PIECE_ATTEMPTS,
        **kwargs: Any,
    ) -> Transcript:
        """Transcribe a recording of any length (a path or a binary file object).

        Read streamed, converted once to 16 kHz PCM16, cut at pauses into pieces no longer than
        the engine's window (``plan=PiecePlan(max_piece_s=...)``), spread over every serving
        replica of the model and merged in order with file timestamps. A piece that fails
        transiently (deadline, crash, no replica serving) is tried again on another
        host, ``piece_attempts`` times in all (``transcript.retries`` counts the retries, its
        ``warnings`` name them). Also takes ``on_progress``, ``parallel``, ``pause_finder``,
        ``max_duration_s``, ``skip_silence``, ``retry_backoff_s`` and the engine options; see
        :func:`orchestrator.longform.runner.transcribe_file`.
        """
        return await longform.transcribe_file(
            self,
            source,
            model=model,
            timeout=timeout,
            host=host,
            piece_attempts=piece_attempts,
            **kwargs,
        )

    async def health(self, timeout: float = 5.0) -> dict[str, Any]:
        rid = self._core.new_id()
        reply = await self._request(rid, Message(Kind.HEALTH, {"id": rid}), timeout)
        return dict(reply.header["health"])

    async def control(self, action: str, host: str, timeout: float = 5.0) -> None:
        """Operator action on a host's replicas: "stop", "start" or "restart"."""
        rid, msg = self._core.control_message(action, host)
        self._core.control_reply(await self._request(rid, msg, timeout))

    async def load_model(
        self, model: str, *, host: str, timeout: float = MODEL_OP_TIMEOUT_S
    ) -> dict[str, Any]:
        """Load ``model`` on every replica of ``host`` now; each replica's outcome (load_s)."""
        rid, msg = self._core.control_message("load", host, model)
        return self._core.control_reply(await self._request(rid, msg, timeout))

    async def unload_model(
        self, model: str, *, host: str, timeout: float = MODEL_OP_TIMEOUT_S
    ) -> dict[str, Any]:
        """Unload ``model`` on every replica of ``host`` (its memory returned); the next request
        loads it again. Refused (BadRequestError) on a replica that is using it."""
        rid, msg = self._core.control_message("unload", host, model)
        return self._core.control_reply(await self._request(rid, msg, timeout))

    def stream(
        self, *, model: str, sample_rate: int, format: str = "pcm16", **options: Any
    ) -> AsyncStream:
        return AsyncStream(self, model, sample_rate, format, options)

    def close_socket(self) -> None:
        self._detach()
        super().close_socket()

    async def aclose(self) -> None:
        self.closed = True
        if self._outgoing and not self._sock.closed:
            self._flush()  # what was sent before closing goes out, as it did unqueued
        self.close_socket()
        if self._own_ctx:
            self._ctx.term()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncStream:
    """A live stream: ``send`` chunks, iterate events; closing flushes the last final."""

    def __init__(
        self,
        client: AsyncClient,
        model: str,
        sample_rate: int,
        fmt: str,
        options: Mapping[str, Any],
    ) -> None:
        self._client = client
        self._core = client._core
        self.sid, self._open_msg = self._core.stream_open_message(model, sample_rate, fmt, options)
        self.fmt = fmt
        self._seq = 0
        self._events: asyncio.Queue[Message] = asyncio.Queue()
        self.closed = False
        self.close_sent = False
        self.host: str | None = None

    async def open(self) -> AsyncStream:
        self._client._streams[self.sid] = self._events
        await self._client._send(self._open_msg)
        return self

    async def send(self, chunk: bytes | bytearray | memoryview | np.ndarray) -> None:
        if self.close_sent:
            raise StreamClosedError("stream is closed")
        payload = self._core.chunk_payload(chunk, self.fmt)
        await self._client._send(
            Message(Kind.STREAM_AUDIO, {"id": self.sid, "seq": self._seq}, [payload])
        )
        self._seq += 1

    async def close(self) -> None:
        """Ask for the final of the open utterance; events continue until ``closed``."""
        if not self.close_sent:
            self.close_sent = True
            await self._client._send(Message(Kind.STREAM_CLOSE, {"id": self.sid}))

    async def next_event(self, timeout: float | None = None) -> StreamEvent:
        msg = await asyncio.wait_for(self._events.get(), timeout)
        event = self._core.event(msg)
        if event.host:
            self.host = event.host
        if event.type == EventType.CLOSED:
            self.closed = True
            self._client._streams.pop(self.sid, None)
        return event

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StreamEvent]:
        while not self.closed:
            yield await self.next_event()

    async def __aenter__(self) -> AsyncStream:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Client(_ClientBase):
    """Blocking twin of AsyncClient, for scripts and threads (one call at a time per client)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stream_events: dict[str, deque[Message]] = {}
        if self._link is not None:
            self._sock.setsockopt(zmq.SNDTIMEO, int(LINK_CHECK_INTERVAL_S * 1000))
            # Built once: Socket.poll would build a Poller per call.
            self._link_poller = zmq.Poller()
            self._link_poller.register(self._sock, zmq.POLLIN)
            self._link_poller.register(self._link.monitor, zmq.POLLIN)

    def _send(self, msg: Message) -> None:
        frames = self._core.encode(msg)
        if self._link is None:
            send_frames(self._sock, frames, block=True)
        else:
            self._send_watching(frames)

    def _send_watching(self, frames: list[bytes]) -> None:
        """Curve: a refused handshake leaves no connection to queue on, so a blocking send
        would wait forever. Send in bounded waits, dialling again after a refusal; the
        handshake's outcome reaches the call in ``_wait``."""
        link = self._link
        assert link is not None
        link.poll()  # refusals heard now came before this call: nothing of it waited on them
        while True:
            link.dial_again()
            try:
                send_frames(self._sock, frames, block=True)  # SNDTIMEO bounds each wait
                return
            except zmq.Again:
                link.poll()

    def _wait(self, rid: str, timeout_s: float) -> Message:
        """Receive until the reply to ``rid``; stream events met on the way are kept."""
        limit = time.monotonic() + timeout_s
        while True:
            queued = self._stream_events.get(rid)
            if queued:
                return queued.popleft()
            remaining = limit - time.monotonic()
            try:
                if remaining <= 0:
                    raise zmq.Again
                if self._link is not None:
                    frames = self._receive_watching(remaining)
                else:
                    # A receive timeout rather than poll(): Socket.poll builds a Poller per call.
                    self._sock.setsockopt(zmq.RCVTIMEO, max(1, math.ceil(remaining * 1000)))
                    frames = recv_frames(self._sock, flags=0)
            except zmq.Again:
                raise DeadlineExceededError(
                    f"no answer from the coordinator within {timeout_s:.1f}s"
                ) from None
            msg = self._core.decode(frames)
            if msg is None:
                continue
            got = str(msg.header.get("id"))
            if got == rid:
                return msg
            if got in self._stream_events:
                self._stream_events[got].append(msg)

    def _receive_watching(self, remaining_s: float) -> list[zmq.Frame]:
        """Curve: the next reply, or the refused handshake's error, whichever comes first
        (zmq.Again after ``remaining_s``)."""
        link = self._link
        assert link is not None
        limit = time.monotonic() + remaining_s
        while True:
            refusal = link.fresh_refusal()
            if refusal is not None:
                raise refusal.error()
            try:
                return recv_frames(self._sock)
            except zmq.Again:
                pass
            left = limit - time.monotonic()
            if left <= 0:
                raise zmq.Again
            self._link_poller.poll(max(1, math.ceil(left * 1000)))

    def transcribe(
        self,
        audio: bytes | bytearray | memoryview | np.ndarray,
        *,
        sample_rate: int,
        model: str,
        timeout: float | None = None,
        host: str | None = None,
        **options: Any,
    ) -> TranscriptionResult:
        rid, msg, timeout_s = self._core.transcribe_message(
            audio, sample_rate, model, timeout, options, host
        )
        self._send(msg)
        return self._core.result(self._wait(rid, timeout_s + REPLY_GRACE_S))

    def transcribe_file(
        self,
        source: AudioSource,
        *,
        model: str,
        timeout: float | None = None,
        host: str | None = None,
        piece_attempts: int = DEFAULT_PIECE_ATTEMPTS,
        **kwargs: Any,
    ) -> Transcript:
        """Blocking twin of :meth:`AsyncClient.transcribe_file`.

        Pieces go out in parallel, which one blocking socket cannot wait on, so this runs the
        asynchronous path on a private event loop with a twin client on the same endpoint and
        ZeroMQ context (inproc endpoints of an embedded coordinator need that context). Call it
        from plain threads, not from inside a running event loop.
        """

        async def run() -> Transcript:
            twin = AsyncClient(
                self.endpoint,
                key=self._core.codec_key,
                context=self._ctx,
                timeout_s=self._core.timeout_s,
                max_message_bytes=self._core.max_message_bytes,
                **self._curve,
            )
            try:
                return await twin.transcribe_file(
                    source,
                    model=model,
                    timeout=timeout,
                    host=host,
                    piece_attempts=piece_attempts,
                    **kwargs,
                )
            finally:
                await twin.aclose()

        return asyncio.run(run())

    def health(self, timeout: float = 5.0) -> dict[str, Any]:
        rid = self._core.new_id()
        self._send(Message(Kind.HEALTH, {"id": rid}))
        return dict(self._wait(rid, timeout).header["health"])

    def control(self, action: str, host: str, timeout: float = 5.0) -> None:
        rid, msg = self._core.control_message(action, host)
        self._send(msg)
        self._core.control_reply(self._wait(rid, timeout))

    def load_model(
        self, model: str, *, host: str, timeout: float = MODEL_OP_TIMEOUT_S
    ) -> dict[str, Any]:
        rid, msg = self._core.control_message("load", host, model)
        self._send(msg)
        return self._core.control_reply(self._wait(rid, timeout + REPLY_GRACE_S))

    def unload_model(
        self, model: str, *, host: str, timeout: float = MODEL_OP_TIMEOUT_S
    ) -> dict[str, Any]:
        rid, msg = self._core.control_message("unload", host, model)
        self._send(msg)
        return self._core.control_reply(self._wait(rid, timeout + REPLY_GRACE_S))

    def stream(
        self, *, model: str, sample_rate: int, format: str = "pcm16", **options: Any
    ) -> SyncStream:
        return SyncStream(self, model, sample_rate, format, options)

    def close(self) -> None:
        self.close_socket()
        if self._own_ctx:
            self._ctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncStream:
    """Blocking twin of AsyncStream."""

    def __init__(
        self, client: Client, model: str, sample_rate: int, fmt: str, options: Mapping[str, Any]
    ) -> None:
        self._client = client
        self._core = client._core
        self.sid, self._open_msg = self._core.stream_open_message(model, sample_rate, fmt, options)
        self.fmt = fmt
        self._seq = 0
        self.closed = False
        self.close_sent = False

    def open(self) -> SyncStream:
        self._client._stream_events[self.sid] = deque()
        self._client._send(self._open_msg)
        return self

    def send(self, chunk: bytes | bytearray | memoryview | np.ndarray) -> None:
        if self.close_sent:
            raise StreamClosedError("stream is closed")
        payload = self._core.chunk_payload(chunk, self.fmt)
        self._client._send(
            Message(Kind.STREAM_AUDIO, {"id": self.sid, "seq": self._seq}, [payload])
        )
        self._seq += 1

    def close(self) -> None:
        if not self.close_sent:
            self.close_sent = True
            self._client._send(Message(Kind.STREAM_CLOSE, {"id": self.sid}))

    def next_event(self, timeout: float = DEFAULT_TIMEOUT_S) -> StreamEvent:
        event = self._core.event(self._client._wait(self.sid, timeout))
        if event.type == EventType.CLOSED:
            self.closed = True
            self._client._stream_events.pop(self.sid, None)
        return event

    def poll_events(self) -> list[StreamEvent]:
        """Events that arrived so far, without blocking."""
        out = []
        while not self.closed:
            try:
                out.append(self.next_event(timeout=0.0))
            except DeadlineExceededError:
                break
        return out

    def __iter__(self) -> Iterator[StreamEvent]:
        while not self.closed:
            yield self.next_event()

    def __enter__(self) -> SyncStream:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
