"""Multipart send and receive without pyzmq's per-frame overhead: every process's hot path.

``send_multipart`` and ``recv_multipart`` combine ``IntFlag`` enums for every frame and ask
``getsockopt(RCVMORE)`` after each one received; for our 4-6 small frames a message that costs
more than the sends themselves (bench: about 20 us per 6-frame message against 8 us for these
loops). These helpers pass plain int flags and read ``frame.more`` instead. pyzmq only, so hosts
may import it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import zmq

NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_MORE = int(zmq.SNDMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def recv_frames(sock: zmq.Socket[Any], flags: int = NOBLOCK) -> list[zmq.Frame]:
    """``recv_multipart(flags, copy=False)``: raises zmq.Again when nothing is waiting (NOBLOCK).

    A message arrives whole, so its later frames are already there: only the first may wait.
    """
    frame = sock.recv(flags, copy=False)
    frames = [frame]
    while frame.more:
        frame = sock.recv(NOBLOCK, copy=False)
        frames.append(frame)
    return frames


def send_frames(sock: zmq.Socket[Any], frames: Sequence[Any], *, block: bool = False) -> None:
    """``send_multipart(frames, flags=NOBLOCK, copy=False)``, frame by frame with int flags.

    Frames below pyzmq's copy threshold are copied anyway; large audio frames go zero-copy.
    ZeroMQ applies the high-water mark to the first frame (raising zmq.Again without ``block``);
    later frames of the message follow it.
    """
    more, last = (_MORE, 0) if block else (_MORE_NOBLOCK, NOBLOCK)
    for frame in frames[:-1]:
        sock.send(frame, more, copy=False)
    sock.send(frames[-1], last, copy=False)


def waiting_messages(sock: zmq.Socket[Any], limit: int) -> Iterator[list[zmq.Frame]]:
    """The messages waiting on ``sock`` (at most ``limit``), each read without blocking.

    After each one it asks ZMQ_EVENTS whether another is waiting rather than ending on a failed
    receive: pyzmq raises that as a zmq.Again object, about three times the cost of asking, and
    under request/reply traffic most wake-ups find a single message.
    """
    for _ in range(limit):
        try:
            frames = recv_frames(sock)
        except zmq.Again:
            return
        yield frames
        try:
            if not sock.getsockopt(_EVENTS) & _POLLIN:
                return
        except zmq.ZMQError:  # closed while its message was handled
            return
