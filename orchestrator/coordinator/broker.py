"""The broker: the coordinator's event loop and its two ROUTER sockets.

Clients connect DEALERs to the client ROUTER (inproc when embedded, ipc or loopback tcp when
standalone); hosts connect DEALERs to the host ROUTER. The loop (ZeroMQ Guide's Majordomo
broker, reshaped) does only cheap work: decode, hand each message to the table that owns it,
answer health and control. One-shot requests are the request table's, streams the stream
table's, processes the supervisor's; the tables answer through the outbox.

One thread runs :meth:`Broker.run`. Other threads talk to it only through :meth:`call`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from orchestrator.call_queue import CallQueue
from orchestrator.coordinator.config import Config, resolve_config_path
from orchestrator.coordinator.health import snapshot
from orchestrator.coordinator.model_ops import MODEL_ACTIONS, ModelOpTable
from orchestrator.coordinator.outbox import Outbox, reply_error
from orchestrator.coordinator.remote import RemoteHosts
from orchestrator.coordinator.requests import RequestTable
from orchestrator.coordinator.router import Router
from orchestrator.coordinator.streams import StreamTable
from orchestrator.coordinator.supervisor import SERVING, HostState, Replica, Supervisor
from orchestrator.coordinator.zap import ZapHandler
from orchestrator.wire import curve
from orchestrator.wire.bodies import Control, HealthRequest
from orchestrator.wire.errors import (
    BadRequestError,
    ConfigError,
    InternalError,
    OrchestratorError,
    ProtocolError,
)
from orchestrator.wire.protocol import Codec, DropCounter, Kind, Message, new_key
from orchestrator.wire.sockets import poll_timeout_ms, waiting_messages

log = logging.getLogger("orchestrator.coordinator.broker")

#: High-water marks: ZeroMQ queues silently up to them, so they are set, not left at 1000.
SOCKET_HWM = 50_000
#: Messages read from one socket per turn, so one busy socket cannot starve the other.
MAX_MESSAGES_PER_TURN = 1000
#: JSON values that cannot key a table (a tuple: ``list | dict`` builds a union at every check).
_UNHASHABLE = (list, dict)
#: What an operator may ask of a host's replicas (``python -m orchestrator host ACTION NAME``).
CONTROL_ACTIONS = ("stop", "start", "restart")


class Broker:
    """The loop, the sockets and the tables of one coordinator."""

    def __init__(
        self,
        config: Config,
        ctx: zmq.Context[Any],
        *,
        client_endpoints: list[str],
        host_endpoint: str,
        client_key: bytes,
        host_key: bytes,
    ) -> None:
        self.config = config
        self.settings = config.coordinator
        self.ctx = ctx
        self.client_codec = Codec(client_key, max_message_bytes=self.settings.max_message_bytes)
        self.host_codec = Codec(host_key, max_message_bytes=self.settings.max_message_bytes)
        self.client_drops = DropCounter()
        self.host_drops = DropCounter()
        # The ZAP handler first: a Curve socket bound before it would let every key in.
        self.curve_keys, self.zap = self._security()
        self.clients = self._router_socket(client_endpoints)
        self.hosts = self._router_socket([host_endpoint])
        self.outbox = Outbox(self.clients, self.client_codec, self.hosts, self.host_codec)
        self.supervisor = Supervisor(
            config, endpoint=host_endpoint, key=host_key, send_shutdown=self._send_shutdown
        )
        self.supervisor.listeners.append(self._on_state_change)
        self.remote: RemoteHosts | None = None
        if config.remote.listen:
            self.remote = RemoteHosts(
                config,
                ctx,
                self.supervisor,
                key=new_key(),  # its own key: a remote host never learns the local hosts' key
                keys=self.curve_keys,
                on_host=self._on_host,
                drops=self.host_drops,
            )
            self.outbox.remote = self.remote
        self.router = Router(config, self.supervisor.replicas)
        tables = (self.settings, self.router, self.supervisor, self.outbox)
        self.requests = RequestTable(*tables)
        self.streams = StreamTable(*tables)
        self.model_ops = ModelOpTable(self.settings, self.router, self.outbox)
        self.started = time.monotonic()
        self.calls = CallQueue()
        self.running = False
        self.spawned = threading.Event()  # set once every replica's first spawn was attempted

    def _security(self) -> tuple[curve.KeyPair | None, ZapHandler | None]:
        """The coordinator's Curve keys and ZAP handler, when anything listens on TCP."""
        remote = self.config.remote
        if not remote.listen and not remote.keys_dir:
            return None, None
        plaintext = frozenset({curve.HOSTS_DOMAIN}) if remote.plaintext else frozenset()
        if not remote.keys_dir:
            return None, ZapHandler(self.ctx, {}, plaintext_domains=plaintext)
        folder = resolve_config_path(self.config, remote.keys_dir)
        keys = curve.load_keypair(folder, curve.COORDINATOR_KEY_NAME)

        def allow_lists() -> dict[str, dict[bytes, str]]:
            return {
                curve.HOSTS_DOMAIN: curve.load_allow_list(folder / curve.HOSTS_DIR),
                curve.CLIENTS_DOMAIN: curve.load_allow_list(folder / curve.CLIENTS_DIR),
            }

        handler = ZapHandler(
            self.ctx, allow_lists(), plaintext_domains=plaintext, reload=allow_lists
        )
        return keys, handler

    def _router_socket(self, endpoints: list[str]) -> zmq.Socket[Any]:
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        sock.setsockopt(zmq.SNDHWM, SOCKET_HWM)
        sock.setsockopt(zmq.RCVHWM, SOCKET_HWM)
        # A backstop below our own size check: ZeroMQ refuses absurd frames before we buffer them.
        # (generous, so an ordinary oversize message still reaches our check and is counted).
        sock.setsockopt(zmq.MAXMSGSIZE, 4 * self.settings.max_message_bytes + 65_536)
        for endpoint in endpoints:
            if curve.speaks_curve(endpoint):
                # Options apply to later binds only: inproc and ipc stay as they were.
                if self.curve_keys is None:
                    raise ConfigError(
                        f"{self.config.source}: client endpoint {endpoint} is not loopback and "
                        "[remote] keys_dir is empty (fix: set keys_dir so remote clients use Curve)"
                    )
                curve.make_curve_server(sock, self.curve_keys, curve.CLIENTS_DOMAIN)
            sock.bind(endpoint)
        return sock

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the broker thread soon (thread-safe)."""
        self.calls.put(fn)

    def health(self) -> dict[str, Any]:
        """The health snapshot (broker thread): each table reports its own part."""
        return snapshot(
            config=self.config,
            replicas=self.supervisor.replicas,
            started=self.started,
            requests=self.requests.stats(),
            streams=self.streams.stats(),
            errors_by_code=dict(self.outbox.errors_by_code),
            dropped={
                "clients": dict(self.client_drops.by_reason),
                "hosts": dict(self.host_drops.by_reason),
            },
            remote=self._remote_stats(),
        )

    def _remote_stats(self) -> dict[str, Any] | None:
        """Dial-ins and TCP handshakes: who registered, and who was refused and why."""
        if self.zap is None and self.remote is None:
            return None
        stats: dict[str, Any] = self.remote.stats() if self.remote is not None else {}
        if self.zap is not None:
            stats["handshakes"] = self.zap.stats()
        return stats

    def _send_shutdown(self, rep: Replica) -> None:
        self.outbox.to_host(rep, Message(Kind.SHUTDOWN, {}))

    # ------------------------------------------------------------------ the loop
    def run(self, should_stop: Callable[[], bool]) -> None:
        self.running = True
        try:
            self.supervisor.start_all()
        finally:
            self.spawned.set()
        poller = zmq.Poller()
        poller.register(self.clients, zmq.POLLIN)
        poller.register(self.hosts, zmq.POLLIN)
        poller.register(self.calls.fd, zmq.POLLIN)
        if self.zap is not None:
            poller.register(self.zap.sock, zmq.POLLIN)
        if self.remote is not None:
            poller.register(self.remote.sock, zmq.POLLIN)
        tick_s = self.settings.tick_interval_s
        beat_s = self.settings.heartbeat_interval_s
        # Idle, the loop ticks with the heartbeats: nothing due in the tables needs more, and
        # every wake-up costs CPU (and a laptop's battery) even when it finds nothing to do.
        idle_tick_s = max(tick_s, beat_s)
        next_tick = next_beat = time.monotonic()
        while not should_stop():
            events = dict(
                poller.poll(poll_timeout_ms(min(next_tick, next_beat) - time.monotonic()))
            )
            if self.hosts in events:
                self._drain(self.hosts, self.host_codec, self.host_drops, self._on_host)
            if self.clients in events:
                self._drain(self.clients, self.client_codec, self.client_drops, self._on_client)
            if self.calls.fd in events:
                self.calls.run_pending()
            if self.zap is not None and self.zap.sock in events:
                self.zap.handle_pending()
            if self.remote is not None and self.remote.sock in events:
                self.remote.drain()
            now = time.monotonic()
            if now >= next_beat:
                self._heartbeat_hosts()
                next_beat = now + beat_s
            timing = self._timing()
            if timing:  # work that came in while the loop ticked slowly: tick soon
                next_tick = min(next_tick, now + tick_s)
            if now >= next_tick:
                self.supervisor.tick()
                self.requests.tick(now)
                self.streams.tick(now)
                self.model_ops.tick(now)
                next_tick = now + (tick_s if timing else idle_tick_s)
        self.calls.run_pending()

    def _timing(self) -> bool:
        """Whether something here has a deadline or a next step (a request, a stream, a model
        operation, a replica between states): the tables then tick every ``tick_interval_s``."""
        requests = self.requests
        if requests.inflight or requests.pending or self.streams.streams or self.model_ops.ops:
            return True
        return not self.supervisor.settled()

    def shutdown(self) -> None:
        """Stop every host (ask, SIGTERM, SIGKILL), fail what is still open, close sockets."""
        self.supervisor.stop_all()
        self.requests.close_all("coordinator shut down")
        self.streams.close_all("coordinator shut down")
        self.model_ops.close_all("coordinator shut down")
        self.clients.close(linger=100)
        self.hosts.close(linger=0)
        if self.remote is not None:
            self.remote.close()
        if self.zap is not None:
            self.zap.close()
        self.calls.close()

    def _drain(
        self,
        sock: zmq.Socket[Any],
        codec: Codec,
        drops: DropCounter,
        handler: Callable[[bytes, Message], None],
    ) -> None:
        self.outbox.hold()  # what the batch answers goes out at its end (see Outbox)
        try:
            for frames in waiting_messages(sock, MAX_MESSAGES_PER_TURN):
                self._handle(sock, frames, codec, drops, handler)
        finally:
            self.outbox.release()

    def _handle(
        self,
        sock: zmq.Socket[Any],
        frames: list[zmq.Frame],
        codec: Codec,
        drops: DropCounter,
        handler: Callable[[bytes, Message], None],
    ) -> None:
        """Decode one message and hand it to ``handler``; a client's bad message is answered."""
        identity = frames[0].bytes
        try:
            msg = codec.decode([f.buffer for f in frames[1:]])
        except ProtocolError as exc:
            drops.add(exc)
            log.debug("dropped frames from %r: %s", identity[:32], exc)
            return
        try:
            handler(identity, msg)
        except OrchestratorError as exc:
            if sock is self.clients:
                reply_error(self.outbox, identity, msg.header.get("id"), exc)
        except Exception:
            log.exception("handler failed on %s", msg.kind)
            if sock is self.clients:
                err = InternalError("broker error")
                reply_error(self.outbox, identity, msg.header.get("id"), err)

    def _heartbeat_hosts(self) -> None:
        for rep in self.supervisor.replicas:
            if rep.routing_id is not None or (rep.proc is not None and rep.stop_target is None):
                self.outbox.to_host(rep, Message(Kind.HEARTBEAT, {}))

    # ------------------------------------------------------------------ from clients
    def _on_client(self, client: bytes, msg: Message) -> None:
        if isinstance(msg.header.get("id"), _UNHASHABLE):  # ids key tables: must be hashable
            raise BadRequestError("a message id must be a string or a number")
        kind = msg.kind
        if kind is Kind.TRANSCRIBE:
            self.requests.on_client_request(client, msg)
        elif kind is Kind.STREAM_OPEN:
            self.streams.on_client_open(client, msg)
        elif kind is Kind.STREAM_AUDIO:
            self.streams.on_client_audio(client, msg)
        elif kind is Kind.STREAM_CLOSE:
            self.streams.on_client_close(client, msg)
        elif kind is Kind.HEALTH:
            reply = {"id": HealthRequest.from_header(msg.header).id, "health": self.health()}
            self.outbox.to_client(client, Message(Kind.HEALTH_REPLY, reply))
        elif kind is Kind.CONTROL:
            self._on_control(client, msg)
        elif kind is Kind.HEARTBEAT:
            pass
        else:
            raise BadRequestError(f"clients may not send {kind}")

    def _on_control(self, client: bytes, msg: Message) -> None:
        """Operator actions: stop, start or restart a host's replicas (also how tests fail a
        host), or load or unload a model on them (answered by the model-op table).

        On an external host, ``stop`` asks each replica to drain and leave, ``restart`` drops its
        link (it dials in afresh) and ``start`` is its own machine's business.
        """
        body = Control.from_header(msg.header)
        action, host = body.action, body.host
        replicas = self.router.replicas_of(host)
        if action not in CONTROL_ACTIONS and action not in MODEL_ACTIONS:
            raise BadRequestError(
                f"unknown control action {action!r} "
                f"(fix: one of {', '.join((*CONTROL_ACTIONS, *MODEL_ACTIONS))})"
            )
        if not replicas:
            raise BadRequestError(
                f"no host named {host!r} (fix: one of {', '.join(sorted(self.config.hosts))})"
            )
        if action in MODEL_ACTIONS:
            self.model_ops.on_client_control(client, body)
            return
        if action == "start" and replicas[0].host.external:
            raise BadRequestError(
                f"{host} is external: its machine's process manager starts it "
                "(fix: systemctl start / launchctl kickstart / kubectl scale on that machine)"
            )
        for rep in replicas:
            if action == "stop":
                self.supervisor.stop(rep)
            elif action == "start":
                self.supervisor.start(rep)
            else:
                self.supervisor.restart(rep, "restart requested by an operator")
        reply = {"id": body.id, "ok": True}
        self.outbox.to_client(client, Message(Kind.CONTROL_REPLY, reply))

    # ------------------------------------------------------------------ from hosts
    def _on_host(self, identity: bytes, msg: Message) -> None:
        rep = self.supervisor.by_identity(identity)
        if rep is None:  # a predecessor generation or a stranger with the key: ignored, counted
            self.host_drops.by_reason["identity"] += 1
            return
        kind = msg.kind
        if kind is Kind.HEARTBEAT:
            self.supervisor.on_heartbeat(rep, msg.header)
        elif kind is Kind.READY:
            self.supervisor.on_ready(rep, msg.header)
            self.streams.on_replica_ready(rep)
            self.requests.drain_pending()
        elif kind is Kind.CONTROL_REPLY or (kind is Kind.ERROR and msg.header.get("control")):
            self.model_ops.on_host_reply(rep, msg)
        elif kind is Kind.STREAM_EVENT or (kind is Kind.ERROR and msg.header.get("sid")):
            self.streams.on_host_event(rep, msg)
        elif kind in (Kind.RESULT, Kind.ERROR) and msg.header.get("id") is not None:
            self.requests.on_host_reply(rep, msg)
        elif kind is Kind.ERROR:
            rep.last_reason = str(msg.header.get("error", {}).get("message", "host error"))
            log.warning("host %s reported: %s", rep.name, rep.last_reason)

    def _on_state_change(self, rep: Replica, old: HostState, new: HostState, reason: str) -> None:
        if new is HostState.UNHEALTHY and rep.host.external and rep.routing_id is None:
            # An external replica whose link is gone (silent, replaced or recycled) answers
            # nothing more: its work goes elsewhere now, not after a drain that cannot finish.
            self._replica_lost(rep, reason)
            return
        if new in SERVING or new is HostState.UNHEALTHY:
            if new in SERVING and old not in SERVING:
                self.call(self.requests.drain_pending)
            return
        if new is HostState.STARTING:
            return
        # The replica's process is gone (or going): its work must go elsewhere or be answered.
        self._replica_lost(rep, reason)

    def _replica_lost(self, rep: Replica, reason: str) -> None:
        self.requests.on_replica_lost(rep, reason)
        self.streams.on_replica_lost(rep, reason)
        self.model_ops.on_replica_lost(rep, reason)
