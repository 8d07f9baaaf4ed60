"""The bare-pyzmq baselines: ZeroMQ with nothing of ours on top (no signing, no JSON, no tables).

Three roles, each a few lines of plain pyzmq with no signing, no JSON and no bookkeeping:

* ``echo``: a ROUTER that sends every message straight back (a DEALER client talks to it
  directly: two processes, one hop each way);
* ``broker``: a ROUTER for clients and a ROUTER for workers, forwarding both ways (the
  Majordomo shape our coordinator has, without anything else it does);
* ``worker``: a DEALER behind the broker that either echoes (``echo``) or, for the streaming
  baseline, records when each chunk arrived (``sink``; the sender's send time travels in the
  first 8 bytes of the chunk) and hands the record back on a ``report`` message.

Run as processes (``python -m bench.bare ROLE ...``, what the bench does for the standalone
comparison) or, for the broker, on a thread of the caller (:class:`ThreadBroker`, the analogue of
an embedded coordinator with an inproc client). Every process exits when its parent is gone.

The loops take hooks: a :class:`Relay` for the broker, a :data:`Handler` per message for the
others, and the :class:`SocketCalls` they read and send with. The bare roles use plain pyzmq
(:data:`PYZMQ`: ``recv_multipart``/``send_multipart``); the signed floor of ``bench.signed`` runs
these very loops with the protocol's work in the hooks and our processes' frame helpers
(:func:`wire_calls`, :mod:`orchestrator.wire.sockets`), the cheapest calls we know.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import zmq

from orchestrator.wire.sockets import HeldSends, send_frames, waiting_messages

#: How often a bare process looks up from its socket to check that its parent still lives.
PARENT_CHECK_INTERVAL_S = 0.5
#: First frame a worker sends so the broker knows its identity.
WORKER_READY = b"ready"
#: Frame kinds of the streaming baseline (client -> sink worker through the broker).
CHUNK = b"c"
REPORT = b"report"
#: Send-time prefix of a chunk: little-endian uint64 nanoseconds of CLOCK_MONOTONIC.
STAMP_BYTES = 8
HWM = 100_000
#: Messages read from one socket per wake-up, so one busy socket cannot starve the other.
MAX_MESSAGES_PER_WAKE = 1000

#: What a server loop does with each message it reads (identity frames first, as received).
Handler = Callable[[list[zmq.Frame]], None]


@dataclass(frozen=True)
class SocketCalls:
    """How a loop reads the messages waiting on a socket and sends one (blocking)."""

    drain: Callable[[zmq.Socket[Any]], Iterator[list[zmq.Frame]]]
    send: Callable[[zmq.Socket[Any], Sequence[Any]], None]


def _pyzmq_drain(sock: zmq.Socket[Any]) -> Iterator[list[zmq.Frame]]:
    for _ in range(MAX_MESSAGES_PER_WAKE):
        try:
            frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return
        yield frames


def _pyzmq_send(sock: zmq.Socket[Any], frames: Sequence[Any]) -> None:
    sock.send_multipart(frames, copy=False)


#: Plain pyzmq, as anyone would write it: the bare baselines.
PYZMQ = SocketCalls(_pyzmq_drain, _pyzmq_send)


def wire_calls() -> SocketCalls:
    """Our processes' frame helpers, for one loop: compiled-socket frame calls with int flags, no
    failed receive per wake-up, and what a batch of received messages answers held and sent
    back to back at the batch's end (:class:`~orchestrator.wire.sockets.HeldSends`)."""
    sends: HeldSends[tuple[zmq.Socket[Any], Sequence[Any]]] = HeldSends(
        lambda send: send_frames(send[0], send[1], block=True)
    )

    def drain(sock: zmq.Socket[Any]) -> Iterator[list[zmq.Frame]]:
        sends.hold()
        try:
            yield from waiting_messages(sock, MAX_MESSAGES_PER_WAKE)
        finally:
            sends.release()

    return SocketCalls(drain, lambda sock, frames: sends.send((sock, frames)))


def _socket(ctx: zmq.Context[Any], kind: int) -> zmq.Socket[Any]:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    return sock


def stamp_of(chunk: bytes | memoryview) -> int:
    """The send time (CLOCK_MONOTONIC ns) a benchmark client wrote into a chunk's first bytes."""
    return int.from_bytes(bytes(chunk[:STAMP_BYTES]), "little")


def stamp(chunk: bytearray) -> None:
    """Write the current CLOCK_MONOTONIC ns into the chunk's first 8 bytes (just before sending)."""
    chunk[:STAMP_BYTES] = time.monotonic_ns().to_bytes(STAMP_BYTES, "little")


class _ParentWatch:
    def __init__(self) -> None:
        self.parent = os.getppid()

    def gone(self) -> bool:
        return os.getppid() != self.parent


def serve(
    sock: zmq.Socket[Any], handle: Handler, should_stop: Callable[[], bool], calls: SocketCalls
) -> None:
    """Hand every message that arrives on ``sock`` to ``handle`` until ``should_stop()``."""
    while not should_stop():
        if not sock.poll(PARENT_CHECK_INTERVAL_S * 1000):
            continue
        for frames in calls.drain(sock):
            handle(frames)


def echoer(sock: zmq.Socket[Any], calls: SocketCalls) -> Handler:
    """A handler that sends every message straight back on ``sock``."""
    return lambda frames: calls.send(sock, frames)


def run_echo(endpoint: str, curve_keys: str | None = None) -> None:
    """ROUTER echo server: every message goes straight back to its sender. With ``curve_keys``
    (a folder holding coordinator.key_secret) it speaks CurveZMQ: the cost of the cipher alone."""
    ctx = zmq.Context()
    sock = _socket(ctx, zmq.ROUTER)
    if curve_keys:
        from orchestrator.wire import curve

        keys = curve.load_keypair(curve_keys, curve.COORDINATOR_KEY_NAME)
        curve.make_curve_server(sock, keys, curve.HOSTS_DOMAIN)
    sock.bind(endpoint)
    _announce()
    serve(sock, echoer(sock, PYZMQ), _ParentWatch().gone, PYZMQ)


class Relay(Protocol):
    """What the broker does to a message on its way through (the broker only moves frames)."""

    def to_worker(self, frames: list[zmq.Frame]) -> Sequence[Any] | None:
        """A client's message (its identity first) as sent to the worker (after the worker's
        identity), or None to drop it."""

    def to_client(self, frames: list[zmq.Frame]) -> Sequence[Any] | None:
        """A worker's message (its identity removed) as sent to the client ROUTER (the client's
        identity first), or None to drop it."""


class Forward:
    """The bare relay: frames pass unchanged, the client's identity riding along to the worker."""

    def to_worker(self, frames: list[zmq.Frame]) -> Sequence[Any] | None:
        return frames

    def to_client(self, frames: list[zmq.Frame]) -> Sequence[Any] | None:
        return frames


def broker_loop(
    frontend: zmq.Socket[Any],
    backend: zmq.Socket[Any],
    should_stop: Callable[[], bool],
    relay: Relay | None = None,
    calls: SocketCalls = PYZMQ,
) -> None:
    """Relay client messages to the (first) worker and worker messages back to their client."""
    relay = relay or Forward()
    drain, send = calls.drain, calls.send
    poller = zmq.Poller()
    poller.register(frontend, zmq.POLLIN)
    poller.register(backend, zmq.POLLIN)
    worker: bytes | None = None
    waiting: deque[list[zmq.Frame]] = deque()

    def to_worker(frames: list[zmq.Frame]) -> None:
        out = relay.to_worker(frames)
        if out is not None:
            send(backend, [worker, *out])

    while not should_stop():
        events = dict(poller.poll(PARENT_CHECK_INTERVAL_S * 1000))
        if backend in events:
            for frames in drain(backend):
                if len(frames) == 2 and frames[1].bytes == WORKER_READY:
                    worker = frames[0].bytes
                    while waiting:
                        to_worker(waiting.popleft())
                    continue
                out = relay.to_client(frames[1:])
                if out is not None:
                    send(frontend, out)
        if frontend in events:
            for frames in drain(frontend):
                if worker is None:
                    waiting.append(frames)
                else:
                    to_worker(frames)


def run_broker(
    frontend_endpoint: str,
    backend_endpoint: str,
    relay: Relay | None = None,
    calls: SocketCalls = PYZMQ,
) -> None:
    ctx = zmq.Context()
    frontend = _socket(ctx, zmq.ROUTER)
    backend = _socket(ctx, zmq.ROUTER)
    frontend.bind(frontend_endpoint)
    backend.bind(backend_endpoint)
    _announce()
    broker_loop(frontend, backend, _ParentWatch().gone, relay, calls)


class ThreadBroker:
    """A broker on a thread of this process, its client side on inproc (embedded analogue)."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        frontend_endpoint: str,
        backend_endpoint: str,
        relay: Relay | None = None,
        calls: SocketCalls = PYZMQ,
    ) -> None:
        self._stop = threading.Event()
        self._frontend = _socket(ctx, zmq.ROUTER)
        self._backend = _socket(ctx, zmq.ROUTER)
        self._frontend.bind(frontend_endpoint)
        self._backend.bind(backend_endpoint)
        self._thread = threading.Thread(
            target=broker_loop,
            args=(self._frontend, self._backend, self._stop.is_set, relay, calls),
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._frontend.close()
        self._backend.close()


class _Sink:
    """Records when each chunk arrived and hands the record back on a ``report`` message."""

    def __init__(self, sock: zmq.Socket[Any], calls: SocketCalls) -> None:
        self.sock, self.calls = sock, calls
        self.sent: list[int] = []
        self.arrived: list[int] = []

    def __call__(self, frames: list[zmq.Frame]) -> None:
        if frames[1].bytes == CHUNK:
            self.arrived.append(time.monotonic_ns())
            self.sent.append(stamp_of(frames[2].buffer))
        elif frames[1].bytes == REPORT:
            record = np.array([self.sent, self.arrived], dtype=np.int64).tobytes()
            self.calls.send(self.sock, [frames[0], REPORT, record])
            self.sent, self.arrived = [], []


#: Makes a worker's handler for its socket and the calls it sends with.
MakeHandler = Callable[[zmq.Socket[Any], SocketCalls], Handler]
#: Worker behaviours by name.
WORKER_MODES: dict[str, MakeHandler] = {"echo": echoer, "sink": _Sink}


def run_worker(endpoint: str, make_handler: MakeHandler, calls: SocketCalls = PYZMQ) -> None:
    """DEALER behind the broker, announced with ``ready``; each message goes to the handler."""
    ctx = zmq.Context()
    sock = _socket(ctx, zmq.DEALER)
    sock.connect(endpoint)
    sock.send(WORKER_READY)
    _announce()
    serve(sock, make_handler(sock, calls), _ParentWatch().gone, calls)


def _announce() -> None:
    """The parent waits for this line: the socket is bound or connected."""
    print("ready", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__)
    sub = parser.add_subparsers(dest="role", required=True)
    echo = sub.add_parser("echo")
    echo.add_argument("endpoint")
    echo.add_argument("--curve-keys", help="serve CurveZMQ with this folder's coordinator keys")
    broker = sub.add_parser("broker")
    broker.add_argument("frontend")
    broker.add_argument("backend")
    worker = sub.add_parser("worker")
    worker.add_argument("endpoint")
    worker.add_argument("--mode", choices=tuple(WORKER_MODES), default="echo")
    args = parser.parse_args(argv)
    if args.role == "echo":
        run_echo(args.endpoint, args.curve_keys)
    elif args.role == "broker":
        run_broker(args.frontend, args.backend)
    else:
        run_worker(args.endpoint, WORKER_MODES[args.mode])
    return 0


if __name__ == "__main__":
    sys.exit(main())
