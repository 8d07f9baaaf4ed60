"""Multipart send and receive without pyzmq's per-frame overhead: every process's hot path.

``send_multipart`` and ``recv_multipart`` combine ``IntFlag`` enums for every frame and ask
``getsockopt(RCVMORE)`` after each one received; for our 4-6 small frames a message that costs
more than the sends themselves (bench: about 20 us per 6-frame message against 8 us for these
loops). These helpers pass plain int flags and read ``frame.more`` instead, and call the compiled
socket's methods directly: ``zmq.Socket.send`` is a Python wrapper (for DRAFT routing ids and
groups) around them that costs more than the send (4-frame message: 2.4 us through it, 0.9 us
direct with small frames copied, as pyzmq copies them anyway). pyzmq only, so hosts may import it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import zmq
from zmq.backend import Socket as _CompiledSocket
from zmq.backend import zmq_poll

NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_MORE = int(zmq.SNDMORE)
_POLLIN = int(zmq.POLLIN)
#: Frames of at least this many bytes go zero-copy (pyzmq's own default threshold); smaller ones
#: are copied, which for them is cheaper than tracking a borrowed buffer.
ZERO_COPY_BYTES = 65_536
#: Sends a batch holds at most before sending them anyway: bounds what holding adds to the
#: first answer's latency (a few milliseconds of handling) under a flood.
MAX_HELD_SENDS = 64
_send = _CompiledSocket.send
_recv = _CompiledSocket.recv
_poll = zmq_poll


def recv_frames(sock: zmq.Socket[Any], flags: int = NOBLOCK) -> list[zmq.Frame]:
    """``recv_multipart(flags, copy=False)``: raises zmq.Again when nothing is waiting (NOBLOCK).

    A message arrives whole, so its later frames are already there: only the first may wait.
    """
    frame = _recv(sock, flags, False)
    frames = [frame]
    while frame.more:
        frame = _recv(sock, NOBLOCK, False)
        frames.append(frame)
    return frames


def send_frames(sock: zmq.Socket[Any], frames: Sequence[Any], *, block: bool = False) -> None:
    """``send_multipart(frames, flags=NOBLOCK, copy=False)``, frame by frame with int flags.

    Frames below :data:`ZERO_COPY_BYTES` are copied; large audio frames go zero-copy.
    ZeroMQ applies the high-water mark to the first frame (raising zmq.Again without ``block``);
    later frames of the message follow it.
    """
    more, last = (_MORE, 0) if block else (_MORE_NOBLOCK, NOBLOCK)
    for frame in frames[:-1]:
        _send(sock, frame, more, len(frame) < ZERO_COPY_BYTES)
    frame = frames[-1]
    _send(sock, frame, last, len(frame) < ZERO_COPY_BYTES)


def has_message(sock: zmq.Socket[Any]) -> bool:
    """Whether a message waits on ``sock`` (and news of it reached the socket: this processes
    its pending commands, as ZMQ_EVENTS does). A zero-timeout poll of the one socket: asking
    ZMQ_EVENTS through pyzmq costs a third more (it looks the option's type up by enum)."""
    return bool(_poll([(sock, _POLLIN)], 0))


def waiting_messages(sock: zmq.Socket[Any], limit: int) -> Iterator[list[zmq.Frame]]:
    """The messages waiting on ``sock`` (at most ``limit``), each read without blocking.

    After each one it asks whether another is waiting rather than ending on a failed receive:
    pyzmq raises that as a zmq.Again object, about three times the cost of asking, and under
    request/reply traffic most wake-ups find a single message.
    """
    for _ in range(limit):
        try:
            frames = recv_frames(sock)
        except zmq.Again:
            return
        yield frames
        try:
            if not has_message(sock):
                return
        except zmq.ZMQError:  # closed while its message was handled
            return


def poll_timeout_ms(seconds: float) -> int:
    """A poll's timeout for a timer ``seconds`` away, in whole milliseconds rounded up.

    Rounded down (as an int() of the float would be), a wait for a timer under a millisecond
    away returns at once, and the loop spins through empty polls until the timer is due.
    """
    return max(0, math.ceil(seconds * 1000))


T = TypeVar("T")


class HeldSends(Generic[T]):
    """Sends held while a batch of received messages is handled, then made back to back.

    A send spaced from the next by a message's handling finds ZeroMQ's I/O thread asleep and
    pays its wake-up (about 20 us of CPU on a 2-core VM), where back-to-back sends share one: the
    coordinator and hosts hold what a batch answers (:meth:`hold`) and send it at the batch's
    end (:meth:`release`), in order, at most ``limit`` at a time. Not holding (a message handled
    alone, or work finished outside a batch), :meth:`send` sends at once.
    """

    def __init__(self, send: Callable[[T], None], limit: int = MAX_HELD_SENDS) -> None:
        self._send = send
        self._limit = limit
        self._held: list[T] | None = None

    def hold(self) -> None:
        self._held = []

    def release(self) -> None:
        held, self._held = self._held, None
        for item in held or ():
            self._send(item)

    def send(self, item: T) -> None:
        held = self._held
        if held is None:
            self._send(item)
            return
        held.append(item)
        if len(held) >= self._limit:  # send what is held, and go on holding
            self.release()
            self.hold()
