"""``serve --http HOST:PORT``: the HTTP face under uvicorn, on a socket bound before it starts.

Binding first means a busy port or a refused address ends ``serve`` with one line before any
"listening" line is printed, and port 0 gets a free port whose number is printed
(``http: http://127.0.0.1:PORT``) for scripts and tests to read.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket

import uvicorn

from orchestrator.coordinator import Coordinator
from orchestrator.http import create_app
from orchestrator.wire.errors import ConfigError

#: uvicorn's own logs: warnings and errors only; requests are not logged one by one.
UVICORN_LOG_LEVEL = "warning"
#: Connections the kernel queues before uvicorn accepts them (uvicorn's own default).
LISTEN_BACKLOG = 2048


def parse_address(value: str, allow_remote: bool) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6); loopback unless ``allow_remote``."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--http {value!r} is not HOST:PORT (fix: e.g. --http 127.0.0.1:8000)")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback and not allow_remote:
            raise ConfigError(
                f"--http {value!r} is not a loopback address (fix: bind 127.0.0.1, or set "
                "[coordinator] allow_remote = true knowingly, and set [http] api_keys_file)"
            )
    return host, int(port)


class HttpServer:
    """uvicorn serving the face of one coordinator on an already bound socket."""

    def __init__(self, server: uvicorn.Server, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"

    @classmethod
    def bind(
        cls, coordinator: Coordinator, address: str, *, api_keys_file: str | None = None
    ) -> HttpServer:
        config = coordinator.config
        host, port = parse_address(address, config.coordinator.allow_remote)
        settings = config.http
        if api_keys_file:
            settings = dataclasses.replace(settings, api_keys_file=api_keys_file)
        app = create_app(coordinator, settings)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it: without it, a kept-alive connection's response
        # (headers, then body: two writes) waits ~40 ms for the client's delayed ACK (Nagle).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((host, port))
            # Listening now: a client that read the printed address before uvicorn's start-up
            # finished waits in the backlog instead of being refused.
            sock.listen(LISTEN_BACKLOG)
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"--http {address}: cannot listen there ({exc.strerror}) "
                "(fix: choose a free port, or 0 for any)"
            ) from None
        server = uvicorn.Server(
            uvicorn.Config(app, log_level=UVICORN_LOG_LEVEL, lifespan="on", access_log=False)
        )
        return cls(server, sock)

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM (uvicorn's handlers), then close the socket."""
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.sock.close()
