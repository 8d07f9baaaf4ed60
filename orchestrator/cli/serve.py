"""``python -m orchestrator serve``: a standalone coordinator that runs until SIGINT or SIGTERM.

It starts every host of the config, writes the connection file (endpoint + client key, 0600)
that clients and ``python -m orchestrator health`` read, prints where it listens, optionally
serves Prometheus metrics, and on a signal stops every host (ask, SIGTERM, SIGKILL) before it
exits. :func:`start_and_settle` is shared with ``transcribe``, which embeds a coordinator.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any

from orchestrator.cli import logs
from orchestrator.coordinator.config import load_config
from orchestrator.coordinator.health import overall_status
from orchestrator.wire.errors import ConfigError

if TYPE_CHECKING:
    from orchestrator.cli.http_server import HttpServer
    from orchestrator.coordinator import Coordinator
    from orchestrator.coordinator.metrics import MetricsServer

log = logging.getLogger(logs.CLI_LOGGER)

EXIT_OK = 0
#: How long start-up waits for the broker thread to have spawned the hosts.
LOOP_START_TIMEOUT_S = 10.0
#: The main thread wakes this often to notice a signal (handlers run between waits).
SIGNAL_POLL_INTERVAL_S = 0.5
#: Start-up gives up after this many of the longest host ready timeout (first try plus restarts).
SETTLE_READY_TIMEOUTS = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the TOML config (hosts, models, limits)")
    parser.add_argument(
        "--endpoint",
        default=None,
        help="client endpoint: 'ipc' (a private socket, the default) or tcp://127.0.0.1:PORT",
    )
    parser.add_argument(
        "--http",
        default=None,
        metavar="HOST:PORT",
        help="also serve the OpenAI-compatible HTTP API here, e.g. 127.0.0.1:8000 (port 0: any "
        "free port, printed); a non-loopback host needs allow_remote = true",
    )
    parser.add_argument(
        "--api-keys-file",
        default=None,
        help="with --http: a file of API keys, one per line; calls then need 'Bearer KEY' "
        "(default: [http] api_keys_file)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on 127.0.0.1:PORT (0: any free port, printed)",
    )


class StopRequested:
    """SIGINT/SIGTERM set an event the main thread waits on; the first one is enough."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name = ""

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name
        self.event.set()

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self)


def run(args: argparse.Namespace) -> int:
    """Start, print where we listen, wait for a signal, stop every host."""
    from orchestrator.coordinator import Coordinator

    config = load_config(args.config)
    logs.setup_logging(
        args.log_level or logs.DEFAULT_LIBRARY_LEVEL,
        args.log_format or config.coordinator.log_format,
    )
    if args.http:  # a bad address is refused before any host starts
        _http_module().parse_address(args.http, config.coordinator.allow_remote)
    stop = StopRequested()
    stop.install()  # before the hosts start: a signal during start-up still stops them cleanly
    # A standalone coordinator always listens publicly: --endpoint, else the config's, else ipc.
    coord = Coordinator(
        config, client_endpoint=args.endpoint or config.coordinator.client_endpoint or "ipc"
    )
    port = (
        args.metrics_port
        if args.metrics_port is not None
        else (config.coordinator.metrics_port or None)
    )
    if port is not None:
        metrics_module().check_port_free(port)  # before any host loads a model
    metrics_server: MetricsServer | None = None
    #: "coordinator stopped" only after a start: a refused start says why and nothing else.
    started = False
    try:
        began = time.monotonic()
        replicas = sum(h.replicas for h in config.hosts.values())
        log.info("starting %d host replica(s) from %s", replicas, config.source)
        settled = start_and_settle(coord, stop.event, write_connection_file=True)
        started = True
        if not settled:
            log.info("%s received during start-up: stopping every host", stop.signal_name)
            return EXIT_OK
        log.info("hosts settled in %.1fs", time.monotonic() - began)
        if port is not None:
            metrics_server = start_metrics(coord, port)
        http = _http_server(coord, args) if args.http else None
        _print_listening(
            coord,
            coord.health(),
            metrics_server.url if metrics_server else None,
            http.url if http else None,
        )
        if http is not None:
            http.run()  # until SIGINT/SIGTERM, which uvicorn handles, then hands on to ours
        else:
            while not stop.event.wait(SIGNAL_POLL_INTERVAL_S):
                pass
        log.info("%s received: stopping every host", stop.signal_name or "signal")
    finally:
        if metrics_server is not None:
            metrics_server.close()
        coord.close()
        if started:
            print("coordinator stopped", flush=True)
    return EXIT_OK


def _http_module() -> ModuleType:
    """``orchestrator.cli.http_server``, or the fix when the http extra is missing."""
    try:
        from orchestrator.cli import http_server
    except ImportError as exc:
        raise ConfigError(
            f"--http needs the http extra ({exc}) (fix: pip install 'orchestrator[http]')"
        ) from None
    return http_server


def _http_server(coord: Coordinator, args: argparse.Namespace) -> HttpServer:
    """The HTTP face, its socket bound now so a busy port fails before anything is printed."""
    return _http_module().HttpServer.bind(coord, args.http, api_keys_file=args.api_keys_file)


def start_and_settle(
    coord: Coordinator, stop: threading.Event | None = None, *, write_connection_file: bool = False
) -> bool:
    """Start a coordinator and wait until every replica is ready, busy, failed or stopped.

    The no-op call returns only after the broker loop has spawned every host, so the settle wait
    after it cannot take the replicas' initial "stopped" for settled. Returns False if ``stop``
    was set first (Ctrl-C while models load).
    """
    coord.start(wait=False, write_connection_file=write_connection_file)
    coord.call(lambda broker: None, timeout_s=LOOP_START_TIMEOUT_S)
    ready_timeout_s = max(h.ready_timeout_s for h in coord.config.hosts.values())
    deadline = time.monotonic() + ready_timeout_s * SETTLE_READY_TIMEOUTS
    while True:
        try:
            coord.wait_settled(timeout_s=SIGNAL_POLL_INTERVAL_S)
            return True
        except TimeoutError:
            if stop is not None and stop.is_set():
                return False
            if time.monotonic() > deadline:
                raise


def metrics_module() -> ModuleType:
    """The metrics module, with a clear fix when the optional dependency is missing."""
    try:
        from orchestrator.coordinator import metrics
    except ImportError as exc:
        raise ConfigError(
            f"metrics need prometheus-client ({exc}) "
            "(fix: pip install 'orchestrator[metrics]', or drop --metrics-port / metrics_port)"
        ) from None
    return metrics


def start_metrics(coord: Coordinator, port: int) -> MetricsServer:
    """The metrics endpoint of a started coordinator."""
    return metrics_module().start_metrics(coord, port)


def _print_listening(
    coord: Coordinator,
    health: dict[str, Any],
    metrics_url: str | None,
    http_url: str | None = None,
) -> None:
    """Where clients connect; tests and scripts read these lines, so keep their prefixes."""
    print(f"endpoint: {coord.public_endpoint}")
    if coord.local_endpoint != coord.public_endpoint:
        print(f"local endpoint: {coord.local_endpoint} (this machine's tools, no Curve keys)")
    print(f"connection file: {coord.connection_file}")
    if http_url:
        print(f"http: {http_url}")
    if metrics_url:
        print(f"metrics: {metrics_url}")
    print("hosts: " + ", ".join(f"{r['name']} {r['state']}" for r in health["replicas"]))
    print(f"status: {overall_status(health)}", flush=True)
