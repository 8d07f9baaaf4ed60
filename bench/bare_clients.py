"""Clients of the bare baselines, built like ours so the comparison is fair.

``BareSyncClient`` sends and waits like :class:`orchestrator.Client`; ``BareAsyncClient`` has a
reader task that resolves one future per request id, like :class:`orchestrator.AsyncClient`.
Neither signs, encodes a header or validates audio: that is what the baseline leaves out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio

from bench.bare import HWM

#: Called on a client's socket before it connects (the Curve client keys, for one).
Configure = Callable[[zmq.Socket[Any]], None]


class BareSyncClient:
    def __init__(
        self, ctx: zmq.Context[Any], endpoint: str, configure: Configure | None = None
    ) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if configure is not None:
            configure(self.sock)
        self.sock.connect(endpoint)

    def round_trip(self, payload: bytes) -> bytes:
        self.sock.send(payload, copy=False)
        return self.sock.recv()

    def close(self) -> None:
        self.sock.close()


class BareAsyncClient:
    def __init__(
        self, ctx: zmq.Context[Any], endpoint: str, configure: Configure | None = None
    ) -> None:
        self._ctx = zmq.asyncio.Context.shadow(ctx.underlying)
        self.sock = self._ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, HWM)
        self.sock.setsockopt(zmq.RCVHWM, HWM)
        if configure is not None:
            configure(self.sock)
        self.sock.connect(endpoint)
        self._ids = itertools.count()
        self._waiting: dict[bytes, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        while True:
            frames = await self.sock.recv_multipart(copy=False)
            fut = self._waiting.pop(frames[0].bytes, None)
            if fut is not None and not fut.done():
                fut.set_result(frames[1:])

    async def request(self, payload: bytes) -> Any:
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())
        rid = next(self._ids).to_bytes(8, "little")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        await self.sock.send_multipart([rid, payload], copy=False)
        return await fut

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self.sock.close()
