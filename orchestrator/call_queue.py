"""A thread-safe queue of calls run by one event loop, with a pipe that wakes the loop's poller.

Both process loops need it: the coordinator's broker (calls from the server's threads) and the
host runtime (finished engine work from worker threads). Other threads :meth:`CallQueue.put`; the
loop polls :attr:`CallQueue.fd` with its sockets and runs :meth:`CallQueue.run_pending` when it is
readable. Standard library only (host side too).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
from collections.abc import Callable

log = logging.getLogger("orchestrator.calls")

#: Wake-up bytes read per drain; any number of them means "look at the queue".
_WAKE_READ_BYTES = 65_536


class CallQueue:
    """Calls for one loop thread; ``put`` from anywhere, ``run_pending`` on the loop."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    @property
    def fd(self) -> int:
        """The file descriptor to poll: readable when calls are waiting."""
        return self._wake_r

    @property
    def closed(self) -> bool:
        return self._wake_w < 0

    def put(self, fn: Callable[[], None]) -> None:
        """Queue ``fn`` and wake the loop (thread-safe)."""
        if self.closed:
            raise RuntimeError("call queue is closed")
        self._calls.put(fn)
        with contextlib.suppress(BlockingIOError):  # a full pipe already wakes the loop
            os.write(self._wake_w, b"x")

    def run_pending(self) -> None:
        """Run every queued call on this thread; one failing call does not stop the others."""
        if not self.closed:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, _WAKE_READ_BYTES)
        while True:
            try:
                fn = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                fn()
            except Exception:
                log.exception("queued call failed")

    def close(self) -> None:
        if not self.closed:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1
