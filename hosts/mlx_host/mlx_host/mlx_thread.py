"""One long-lived thread on which every MLX call of the host runs.

Why a thread of its own, measured with mlx 0.32 / mlx-lm 0.30.5 on Linux:

* MLX streams belong to the thread that created them. mlx-lm creates its generation stream when
  ``mlx_lm.generate`` is first imported, so a model used from any other thread fails with
  ``RuntimeError: There is no Stream(cpu, 1) in current thread``. The host runtime calls
  ``transcribe`` from worker threads of its own choosing; funnelling every call through this one
  thread makes that choice irrelevant.
* When the thread that created those streams ends before the process does, the process sometimes
  aborts at exit (``terminate called without an active exception``, SIGABRT, about 1 run in 4).
  This thread is a daemon that never ends, so it is still alive when the process exits.

Used by :mod:`mlx_host.engine`; it also serialises MLX work, which ``mx.get_peak_memory()``
(process-wide) needs to mean "peak of this request".
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


class MlxThread:
    """Runs callables one at a time on a dedicated daemon thread and hands back their results."""

    def __init__(self, name: str = "mlx") -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], object], Future[object]]] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def call(self, fn: Callable[..., T], /, *args: object, **kwargs: object) -> T:
        """Run ``fn(*args, **kwargs)`` on the MLX thread, wait, return its result or raise its error."""
        job = functools.partial(fn, *args, **kwargs)
        if threading.current_thread() is self._thread:  # nested call: queueing would deadlock
            return job()
        future: Future[object] = Future()
        self._jobs.put((job, future))
        return future.result()  # type: ignore[return-value]

    def _serve(self) -> None:
        while True:
            job, future = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # handed to the caller, who re-raises it
                future.set_exception(exc)
