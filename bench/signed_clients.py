"""Clients of the signed floor (``bench.signed``): the protocol's client-side work, nothing more.

Built like ours, not like the bare clients: :class:`SignedSyncClient` sends and receives until
the reply with its id, like :class:`orchestrator.Client`; :class:`SignedAsyncClient` reads replies
like :class:`orchestrator.AsyncClient`, from a reader callback on the socket's wake-up fd that
reads every waiting reply and resolves one future per request id, and like it sends what the
tasks of one loop turn queued back to back at the turn's end. Both use our frame helpers
(:mod:`orchestrator.wire.sockets`). So the floor gets every cheap call ours has, and the rows
"ours vs signed floor" compare like with like. What they leave out: validating audio and
options, deadlines, typed results.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Any

import zmq

from bench.bare import HWM
from bench.signed import decode
from orchestrator.wire.protocol import Codec, DropCounter, Kind, Message
from orchestrator.wire.sockets import recv_frames, send_frames, waiting_messages

#: Replies the asyncio client reads per wake-up before other callbacks of its loop get a turn.
MAX_MESSAGES_PER_WAKE = 1000
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


class SignedExchange:
    """A client's side of the protocol: TRANSCRIBE requests out, replies matched by their id."""

    def __init__(self, key: bytes, *, model: str, sample_rate: int, timeout_s: float) -> None:
        self.codec = Codec(key)
        self.drops = DropCounter()
        self._model, self._sample_rate, self._timeout_s = model, sample_rate, timeout_s
        self._prefix = os.urandom(4).hex()
        self._ids = itertools.count(1)

    def request(self, payload: bytes) -> tuple[str, list[bytes]]:
        """A new request id and the signed frames of its TRANSCRIBE message."""
        rid = f"{self._prefix}-{next(self._ids)}"
        header = {
            "id": rid,
            "model": self._model,
            "sample_rate": self._sample_rate,
            "format": "pcm16",
            "options": {},
            "timeout_s": self._timeout_s,
        }
        return rid, self.codec.encode(Message(Kind.TRANSCRIBE, header, [payload]))

    def reply(self, frames: list[zmq.Frame]) -> Message | None:
        """The reply, verified and decoded; None for frames the protocol refuses (dropped)."""
        return decode(self.codec, self.drops, frames)


def _dealer(ctx: zmq.Context[Any], endpoint: str) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    sock.connect(endpoint)
    return sock


class SignedSyncClient:
    """One request at a time: send, then receive until the reply with that id."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, exchange: SignedExchange) -> None:
        self.sock = _dealer(ctx, endpoint)
        self.exchange = exchange

    def round_trip(self, payload: bytes) -> Message:
        rid, frames = self.exchange.request(payload)
        send_frames(self.sock, frames, block=True)
        while True:
            reply = self.exchange.reply(recv_frames(self.sock, flags=0))
            if reply is not None and reply.header.get("id") == rid:
                return reply

    def close(self) -> None:
        self.sock.close()


class SignedAsyncClient:
    """Many requests in flight on one event loop, each awaiting the future its reply resolves."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, exchange: SignedExchange) -> None:
        self.sock = _dealer(ctx, endpoint)
        self.exchange = exchange
        self._waiting: dict[str, asyncio.Future[Message]] = {}
        self._outgoing: list[list[bytes]] = []
        self._fd: int = self.sock.getsockopt(zmq.FD)
        self._loop: asyncio.AbstractEventLoop | None = None

    def _read_ready(self) -> None:
        read = 0
        for frames in waiting_messages(self.sock, MAX_MESSAGES_PER_WAKE):
            read += 1
            reply = self.exchange.reply(frames)
            if reply is None:
                continue
            fut = self._waiting.pop(str(reply.header.get("id")), None)
            if fut is not None and not fut.done():
                fut.set_result(reply)
        # More are waiting, and the fd will not say so again: come back after the others' turn.
        if read == MAX_MESSAGES_PER_WAKE and self._loop is not None:
            self._loop.call_soon(self._read_ready)

    async def request(self, payload: bytes) -> Message:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._fd, self._read_ready)
        rid, frames = self.exchange.request(payload)
        fut = self._loop.create_future()
        self._waiting[rid] = fut
        self._outgoing.append(frames)
        if len(self._outgoing) == 1:
            self._loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        # Blocking: the bench keeps a few dozen requests in flight, far below the queue's HWM,
        # so the floor needs no retry-on-full machinery.
        for frames in outgoing:
            send_frames(self.sock, frames, block=True)
        # ZeroMQ's fd signals edges: the sends may have taken in the news of waiting replies,
        # and the fd would not wake the loop for them.
        if self.sock.getsockopt(_EVENTS) & _POLLIN:
            self._read_ready()

    async def aclose(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        self._loop = None
        self.sock.close()
