"""The bare-pyzmq baselines: the least any ZeroMQ design of ours could cost.

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
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections import deque
from typing import Any

import numpy as np
import zmq

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
    watch = _ParentWatch()
    while not watch.gone():
        if not sock.poll(PARENT_CHECK_INTERVAL_S * 1000):
            continue
        for _ in range(1000):
            try:
                frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            sock.send_multipart(frames, copy=False)


def broker_loop(frontend: zmq.Socket[Any], backend: zmq.Socket[Any], should_stop: Any) -> None:
    """Forward client messages to the (first) worker and worker messages back to their client."""
    poller = zmq.Poller()
    poller.register(frontend, zmq.POLLIN)
    poller.register(backend, zmq.POLLIN)
    worker: bytes | None = None
    waiting: deque[list[Any]] = deque()
    while not should_stop():
        events = dict(poller.poll(PARENT_CHECK_INTERVAL_S * 1000))
        if backend in events:
            for _ in range(1000):
                try:
                    frames = backend.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                if len(frames) == 2 and frames[1].bytes == WORKER_READY:
                    worker = frames[0].bytes
                    while waiting:
                        backend.send_multipart([worker, *waiting.popleft()], copy=False)
                    continue
                frontend.send_multipart(frames[1:], copy=False)
        if frontend in events:
            for _ in range(1000):
                try:
                    frames = frontend.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                if worker is None:
                    waiting.append(frames)
                else:
                    backend.send_multipart([worker, *frames], copy=False)


def run_broker(frontend_endpoint: str, backend_endpoint: str) -> None:
    ctx = zmq.Context()
    frontend = _socket(ctx, zmq.ROUTER)
    backend = _socket(ctx, zmq.ROUTER)
    frontend.bind(frontend_endpoint)
    backend.bind(backend_endpoint)
    _announce()
    broker_loop(frontend, backend, _ParentWatch().gone)


class ThreadBroker:
    """The bare broker on a thread of this process, its client side on inproc (embedded analogue)."""

    def __init__(
        self, ctx: zmq.Context[Any], frontend_endpoint: str, backend_endpoint: str
    ) -> None:
        self._stop = threading.Event()
        self._frontend = _socket(ctx, zmq.ROUTER)
        self._backend = _socket(ctx, zmq.ROUTER)
        self._frontend.bind(frontend_endpoint)
        self._backend.bind(backend_endpoint)
        self._thread = threading.Thread(
            target=broker_loop, args=(self._frontend, self._backend, self._stop.is_set), daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._frontend.close()
        self._backend.close()


def run_worker(endpoint: str, mode: str) -> None:
    """DEALER behind the broker: ``echo`` answers every message, ``sink`` records chunk arrivals."""
    ctx = zmq.Context()
    sock = _socket(ctx, zmq.DEALER)
    sock.connect(endpoint)
    sock.send(WORKER_READY)
    _announce()
    sent: list[int] = []
    arrived: list[int] = []
    watch = _ParentWatch()
    while not watch.gone():
        if not sock.poll(PARENT_CHECK_INTERVAL_S * 1000):
            continue
        for _ in range(1000):
            try:
                frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            if mode == "echo":
                sock.send_multipart(frames, copy=False)
            elif frames[1].bytes == CHUNK:
                arrived.append(time.monotonic_ns())
                sent.append(stamp_of(frames[2].buffer))
            elif frames[1].bytes == REPORT:
                record = np.array([sent, arrived], dtype=np.int64).tobytes()
                sock.send_multipart([frames[0], REPORT, record])
                sent, arrived = [], []


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
    worker.add_argument("--mode", choices=("echo", "sink"), default="echo")
    args = parser.parse_args(argv)
    if args.role == "echo":
        run_echo(args.endpoint, args.curve_keys)
    elif args.role == "broker":
        run_broker(args.frontend, args.backend)
    else:
        run_worker(args.endpoint, args.mode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
