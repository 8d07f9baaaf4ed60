"""Clients of the bare baselines, built like ours so the comparison is fair.

``BareSyncClient`` sends and waits like :class:`orchestrator.Client`; ``BareAsyncClient`` reads
replies like :class:`orchestrator.AsyncClient`: a reader callback on the socket's wake-up fd reads
every waiting reply and resolves one future per request id. Both use the frame helpers of
:mod:`orchestrator.wire.sockets`, as ours do, so only what goes into the frames differs.

What goes into the frames is an :class:`Exchange`: :class:`RawExchange` (an 8-byte id and the
payload) for the bare baselines, which neither sign, encode a header nor validate audio; the
signed floor (``bench.signed``) plugs the protocol's own work in here.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol

import zmq

from bench.bare import HWM
from orchestrator.wire.sockets import recv_frames, send_frames, waiting_messages

#: Called on a client's socket before it connects (the Curve client keys, for one).
Configure = Callable[[zmq.Socket[Any]], None]
#: Replies the asyncio client reads per wake-up before other callbacks of its loop get a turn.
MAX_MESSAGES_PER_WAKE = 1000
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


class Exchange(Protocol):
    """What a client sends for one request, and which request a reply answers."""

    def request(self, payload: bytes) -> tuple[Hashable, Sequence[Any]]:
        """A new request's id and the frames that carry it and ``payload``."""

    def reply_id(self, frames: list[zmq.Frame]) -> Hashable | None:
        """The id a reply answers, or None for frames that are not a reply (dropped)."""


class RawExchange:
    """The bare exchange: ``[8-byte id][payload]`` out, the same frames back."""

    def __init__(self) -> None:
        self._ids = itertools.count()

    def request(self, payload: bytes) -> tuple[Hashable, Sequence[Any]]:
        rid = next(self._ids).to_bytes(8, "little")
        return rid, [rid, payload]

    def reply_id(self, frames: list[zmq.Frame]) -> Hashable | None:
        return frames[0].bytes


def dealer(
    ctx: zmq.Context[Any], endpoint: str, configure: Configure | None = None
) -> zmq.Socket[Any]:
    """A DEALER connected to ``endpoint`` with our clients' socket options."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    if configure is not None:
        configure(sock)
    sock.connect(endpoint)
    return sock


class BareSyncClient:
    """Send, then receive until the reply to that request (one request at a time)."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        endpoint: str,
        configure: Configure | None = None,
        exchange: Exchange | None = None,
    ) -> None:
        self.sock = dealer(ctx, endpoint, configure)
        self.exchange = exchange or RawExchange()

    def round_trip(self, payload: bytes) -> list[zmq.Frame]:
        rid, frames = self.exchange.request(payload)
        send_frames(self.sock, frames, block=True)
        while True:
            reply = recv_frames(self.sock, flags=0)
            if self.exchange.reply_id(reply) == rid:
                return reply

    def close(self) -> None:
        self.sock.close()


class BareAsyncClient:
    """Many requests in flight on one event loop, each awaiting the future its reply resolves."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        endpoint: str,
        configure: Configure | None = None,
        exchange: Exchange | None = None,
    ) -> None:
        self.sock = dealer(ctx, endpoint, configure)
        self.exchange = exchange or RawExchange()
        self._waiting: dict[Hashable, asyncio.Future[list[zmq.Frame]]] = {}
        self._fd: int = self.sock.getsockopt(zmq.FD)
        self._loop: asyncio.AbstractEventLoop | None = None

    def _read_ready(self) -> None:
        read = 0
        for frames in waiting_messages(self.sock, MAX_MESSAGES_PER_WAKE):
            read += 1
            fut = self._waiting.pop(self.exchange.reply_id(frames), None)
            if fut is not None and not fut.done():
                fut.set_result(frames)
        # More are waiting, and the fd will not say so again: come back after the others' turn.
        if read == MAX_MESSAGES_PER_WAKE and self._loop is not None:
            self._loop.call_soon(self._read_ready)

    async def request(self, payload: bytes) -> list[zmq.Frame]:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._fd, self._read_ready)
        rid, frames = self.exchange.request(payload)
        fut = self._loop.create_future()
        self._waiting[rid] = fut
        # Blocking: the bench keeps a few dozen requests in flight, far below the queue's HWM,
        # so a baseline needs no retry-on-full machinery.
        send_frames(self.sock, frames, block=True)
        # ZeroMQ's fd signals edges: the send may have taken in the news of waiting replies,
        # and the fd would not wake the loop for them.
        if self.sock.getsockopt(_EVENTS) & _POLLIN:
            self._read_ready()
        return await fut

    async def aclose(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        self._loop = None
        self.sock.close()
