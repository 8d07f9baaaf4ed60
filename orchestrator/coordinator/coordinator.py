"""The coordinator: one object that brings the broker, supervisor and hosts up and down.

Embedded in a server process::

    async with Coordinator.from_config("orchestrator.toml") as coord:
        client = coord.client()
        result = await client.transcribe(pcm16, sample_rate=16000, model="qwen3-asr")

or standalone (``python -m orchestrator serve``), where clients in other processes connect over
ipc or loopback tcp using the connection file it writes. Same code either way: the broker runs
on a thread of its own, so a busy server event loop never delays heartbeats or routing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import shutil
import threading
import time
import weakref
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import zmq

from orchestrator.coordinator import runtime_dir
from orchestrator.coordinator.broker import Broker
from orchestrator.coordinator.config import Config, load_config
from orchestrator.coordinator.supervisor import SERVING, HostState
from orchestrator.models import resolve_config
from orchestrator.wire import curve
from orchestrator.wire.errors import ConfigError, EnvError
from orchestrator.wire.protocol import new_key

if TYPE_CHECKING:
    from orchestrator.client import AsyncClient, Client

log = logging.getLogger("orchestrator.coordinator")

#: States in which start-up stops waiting for a replica.
_SETTLED = SERVING | {HostState.FAILED, HostState.STOPPED}


class Coordinator:
    """Starts hosts, routes requests to them and stops them; see the module docstring."""

    def __init__(self, config: Config, *, client_endpoint: str | None = None) -> None:
        self.config = config
        self.settings = config.coordinator
        # Embedded coordinators listen on inproc only; a public endpoint is opt-in (serve uses one).
        self._client_endpoint = client_endpoint
        self.ctx: zmq.Context[Any] | None = None
        self.broker: Broker | None = None
        self.run_dir: Path | None = None
        self.client_key = new_key()
        self._host_key = new_key()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.inproc_endpoint = f"inproc://orchestrator-{id(self):x}"
        self.public_endpoint: str | None = None
        self.connection_file: Path | None = None
        #: The held lock on the connection file's folder (see runtime_dir.claim_connection_file).
        self._claim: IO[str] | None = None
        # Clients made here share our ZeroMQ context: close them with us, or term() would hang.
        self._clients: weakref.WeakSet[Any] = weakref.WeakSet()

    @classmethod
    def from_config(cls, path: str | Path, **kwargs: Any) -> Coordinator:
        return cls(load_config(path), **kwargs)

    # ------------------------------------------------------------------ lifecycle
    def start(self, *, wait: bool = True, write_connection_file: bool = False) -> Coordinator:
        """Check envs, bind sockets, spawn every host; optionally wait until each is settled."""
        self._check_envs()
        # Bundled refs (bundled:whisper-tiny.en:hf) become prepared local folders: hosts see paths.
        self.config = resolve_config(self.config)
        try:
            self._start(write_connection_file)
            if wait:
                self.wait_settled()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self, write_connection_file: bool) -> None:
        base = runtime_dir.private_dir(
            Path(self.settings.runtime_dir)
            if self.settings.runtime_dir
            else runtime_dir.default_base()
        )
        if write_connection_file and self._client_endpoint is not None:
            # Refuse before any socket or host exists if another live coordinator owns the file.
            self._claim = runtime_dir.claim_connection_file(base)
        self.run_dir = runtime_dir.run_dir(base)
        if self._client_endpoint is not None:
            self.public_endpoint = self._public_endpoint(self._client_endpoint)
        self.ctx = zmq.Context()
        host_endpoint = f"ipc://{self.run_dir}/hosts.sock"
        endpoints = [self.inproc_endpoint]
        if self.public_endpoint is not None:
            if curve.speaks_curve(self.public_endpoint):
                endpoints.append(self._local_ipc_endpoint)  # before the Curve bind: plain, private
            endpoints.append(self.public_endpoint)
        self.broker = Broker(
            self.config,
            self.ctx,
            client_endpoints=endpoints,
            host_endpoint=host_endpoint,
            client_key=self.client_key,
            host_key=self._host_key,
        )
        if (
            self.public_endpoint
            and self.public_endpoint.startswith("tcp://")
            and self.public_endpoint.endswith(":0")
        ):
            self.public_endpoint = self.broker.clients.getsockopt(zmq.LAST_ENDPOINT).decode()
        if write_connection_file and self.public_endpoint:
            # In the per-user base folder, where clients look by default (claimed above).
            self.connection_file = runtime_dir.write_connection_file(base, self.connection_info())
        self._thread = threading.Thread(target=self._run, name="orchestrator-broker", daemon=True)
        self._thread.start()

    @property
    def _local_ipc_endpoint(self) -> str:
        return f"ipc://{self.run_dir}/clients.sock"

    @property
    def local_endpoint(self) -> str | None:
        """Where this machine's own tools connect, written in the connection file: the public
        endpoint, or the ipc one bound beside it when the public one speaks Curve (local tools
        hold no Curve keys, and need none on a socket only this user can open)."""
        if self.public_endpoint is not None and curve.speaks_curve(self.public_endpoint):
            return self._local_ipc_endpoint
        return self.public_endpoint

    def _public_endpoint(self, endpoint: str) -> str:
        assert self.run_dir is not None
        if not endpoint or endpoint == "ipc":
            return self._local_ipc_endpoint
        if curve.speaks_curve(endpoint) and not self.settings.allow_remote:
            raise ConfigError(
                f"{self.config.source}: coordinator.client_endpoint {endpoint!r} is not loopback "
                "(fix: bind tcp://127.0.0.1:PORT, or set allow_remote = true knowingly)"
            )
        return endpoint

    def _check_envs(self) -> None:
        from orchestrator.envs import checks as envs

        for host in self.config.hosts.values():
            if not host.env:
                continue
            key = f"{self.config.source}: hosts.{host.name}.env"
            try:
                envs.check_env(host.env, Path(self.config.root))
            except ConfigError as exc:  # not a host project at all: point at the config key
                raise ConfigError(f"{key}: {exc} (fix: name one of those)") from None
            except EnvError as exc:  # missing or stale: the same class, now naming file and key
                raise type(exc)(f"{key}: {exc.reason}", host=exc.host, fix=exc.fix) from None

    def _run(self) -> None:
        assert self.broker is not None
        try:
            self.broker.run(self._stop.is_set)
        except Exception:
            log.exception("broker loop crashed")
        finally:
            self.broker.shutdown()

    def wait_settled(self, timeout_s: float | None = None) -> None:
        """Block until every replica is ready, busy, failed or stopped."""
        assert self.broker is not None
        limit = timeout_s or max(h.ready_timeout_s for h in self.config.hosts.values()) * 3 + 10
        deadline = time.monotonic() + limit
        self.broker.spawned.wait(limit)
        while time.monotonic() < deadline:
            if all(r.state in _SETTLED for r in self.broker.supervisor.replicas):
                return
            if self._thread is not None and not self._thread.is_alive():
                raise RuntimeError("coordinator loop stopped during start-up")
            time.sleep(0.05)
        raise TimeoutError(f"hosts not settled after {limit:.0f}s")

    def close(self) -> None:
        """Stop every host (ask, SIGTERM, SIGKILL), reap them, close sockets. Idempotent."""
        if self._thread is not None:
            self._stop.set()
            if self.broker is not None:
                # Wake the loop; a loop that crashed has shut its broker down already.
                with contextlib.suppress(RuntimeError):
                    self.broker.call(lambda: None)
            self._thread.join()
            self._thread = None
        elif self.broker is not None:
            self.broker.shutdown()  # started but its thread never ran
        self.broker = None
        for client in list(self._clients):
            client.close_socket()
        if self.ctx is not None:
            self.ctx.destroy(linger=0)
            self.ctx = None
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None
        if self.connection_file is not None:
            self.connection_file.unlink(missing_ok=True)
            self.connection_file = None
        if self._claim is not None:
            self._claim.close()  # releases the flock: the next coordinator may claim the folder
            self._claim = None

    def __enter__(self) -> Coordinator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Coordinator:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    # ------------------------------------------------------------------ clients
    def connection_info(self) -> dict[str, Any]:
        """Endpoint and client key for clients in other processes (keep it private)."""
        info: dict[str, Any] = {
            "endpoint": self.local_endpoint,
            "key": self.client_key.hex(),
            **runtime_dir.owner_record(),
            "max_message_bytes": self.settings.max_message_bytes,
        }
        if self.public_endpoint != self.local_endpoint:
            info["curve_endpoint"] = self.public_endpoint  # for remote clients, with their keys
        return info

    def client(self, **kwargs: Any) -> AsyncClient:
        """An asyncio client over inproc (same process, no copies over the kernel)."""
        from orchestrator.client import AsyncClient

        assert self.ctx is not None, "start the coordinator first"
        kwargs.setdefault("max_message_bytes", self.settings.max_message_bytes)
        client = AsyncClient(self.inproc_endpoint, key=self.client_key, context=self.ctx, **kwargs)
        self._clients.add(client)
        return client

    def sync_client(self, **kwargs: Any) -> Client:
        from orchestrator.client import Client

        assert self.ctx is not None, "start the coordinator first"
        kwargs.setdefault("max_message_bytes", self.settings.max_message_bytes)
        client = Client(self.inproc_endpoint, key=self.client_key, context=self.ctx, **kwargs)
        self._clients.add(client)
        return client

    # ------------------------------------------------------------------ introspection
    def health(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """The health snapshot, taken on the broker thread."""
        return self.call(lambda broker: broker.health(), timeout_s)

    def call(self, fn: Any, timeout_s: float = 5.0) -> Any:
        """Run ``fn(broker)`` on the broker thread and return its result (tests, admin)."""
        if self.broker is None or self._thread is None:
            raise RuntimeError("coordinator is not running")
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()
        broker = self.broker

        def run() -> None:
            try:
                done.set_result(fn(broker))
            except Exception as exc:
                done.set_exception(exc)

        broker.call(run)
        return done.result(timeout_s)
