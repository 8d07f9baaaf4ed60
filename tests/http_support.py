"""uvicorn serving an app in a thread of the test process, for tests of real HTTP servers.

The socket is bound before the server starts (port 0: the kernel picks a free port, so none is
picked and then raced for), and the server runs its lifespan like a deployed one.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

SERVER_START_TIMEOUT_S = 60.0
SERVER_STOP_TIMEOUT_S = 30.0


class UvicornThread:
    """One app on 127.0.0.1:<free port>; ``start`` waits until it serves, ``stop`` joins it."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as serve --http does
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="uvicorn"
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not self.server.started:
            assert self.thread.is_alive(), "the server stopped during start-up (see its log)"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=SERVER_STOP_TIMEOUT_S)
        self.sock.close()
        assert not self.thread.is_alive()

    def __enter__(self) -> UvicornThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
