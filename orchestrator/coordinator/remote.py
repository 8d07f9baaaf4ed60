"""Hosts on other machines: the TCP + CurveZMQ socket they dial in on, and their registration.

An external host (``[hosts.X] external = true``) is started by its machine's process manager and
connects a DEALER to ``[remote] listen``. The handshake is CurveZMQ; the ZAP handler
(``coordinator.zap``) lets in only keys of the ``hosts/`` allow-list and names the key. The host
then says HELLO (its kind, pid, hostname); this module picks the replica slot it fills and answers
WELCOME with the run's signing key for that socket and the timings (``wire.dialin``). From there
on its messages go to the broker's ordinary host handler: the same health, routing, fallback,
failover and stream replay as a spawned replica. The supervisor owns its state (silent ->
unhealthy -> gone, back on the next dial-in).

Each connection gets a fresh routing id from ZeroMQ, and a replica is bound to the routing id it
registered on, so nothing a host sent on a connection the coordinator has left can count.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any

import zmq

from orchestrator.coordinator.config import Config, HostConfig
from orchestrator.coordinator.supervisor import Replica, Supervisor
from orchestrator.wire import curve
from orchestrator.wire.dialin import Welcome, refusal, registration_codec
from orchestrator.wire.errors import BadRequestError, OverloadedError, ProtocolError
from orchestrator.wire.protocol import MAX_HEADER_BYTES, Codec, DropCounter, Kind, Message

log = logging.getLogger("orchestrator.coordinator.remote")

SOCKET_HWM = 50_000
#: Read at most this many messages per turn (as the broker does for its own sockets).
MAX_MESSAGES_PER_TURN = 1000


class RemoteHosts:
    """The dial-in socket; the broker polls :attr:`sock` and calls :meth:`drain`."""

    def __init__(
        self,
        config: Config,
        ctx: zmq.Context[Any],
        supervisor: Supervisor,
        *,
        key: bytes,
        keys: curve.KeyPair | None,
        on_host: Callable[[bytes, Message], None],
        drops: DropCounter,
    ) -> None:
        self.config = config
        self.settings = config.coordinator
        self.supervisor = supervisor
        self.codec = Codec(key, max_message_bytes=self.settings.max_message_bytes)
        self._key = key
        self._hello_codec = registration_codec()
        self._on_host = on_host
        self.drops = drops
        self.registered: collections.Counter[str] = collections.Counter()
        self.refused: collections.Counter[str] = collections.Counter()
        #: replica name -> (key name, hostname, pid) of the process that last held it
        self._held_by: dict[str, tuple[str, str, int | None]] = {}
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        sock.setsockopt(zmq.SNDHWM, SOCKET_HWM)
        sock.setsockopt(zmq.RCVHWM, SOCKET_HWM)
        sock.setsockopt(zmq.MAXMSGSIZE, 4 * self.settings.max_message_bytes + 65_536)
        curve.set_link_timings(sock, link_timings(config))
        listen = config.remote.listen
        if keys is None:
            curve.make_plaintext_server(sock, listen, curve.HOSTS_DOMAIN)
        else:
            curve.make_curve_server(sock, keys, curve.HOSTS_DOMAIN)
        sock.bind(listen)
        self.sock = sock
        self.endpoint = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        log.info(
            "external hosts dial in at %s (%s)", self.endpoint, "curve" if keys else "plaintext"
        )

    def send(self, rep: Replica, frames: list[bytes]) -> None:
        """Frames already signed by :attr:`codec`, to an external replica's connection."""
        self.sock.send_multipart([rep.identity, *frames], zmq.NOBLOCK, copy=False)

    def drain(self) -> None:
        for _ in range(MAX_MESSAGES_PER_TURN):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) < 2:
                continue
            routing_id = frames[0].bytes
            body = [f.buffer for f in frames[1:]]
            try:
                msg = self.codec.decode(body)
            except ProtocolError as exc:
                if exc.details.get("reason") == "signature" and self._try_hello(frames, body):
                    continue
                self.drops.add(exc)
                continue
            self._on_host(routing_id, msg)

    def _try_hello(self, frames: list[zmq.Frame], body: list[memoryview]) -> bool:
        """A registration under the public key; nothing but HELLO is taken that way."""
        try:
            msg = self._hello_codec.decode(body)
        except ProtocolError:
            return False
        if msg.kind is not Kind.HELLO:
            return False
        self._on_hello(frames[0].bytes, frames[1], msg)
        return True

    def _on_hello(self, routing_id: bytes, frame: zmq.Frame, msg: Message) -> None:
        key_name = _property(frame, "User-Id") or "?"
        address = _property(frame, "Peer-Address") or "?"
        kind = str(msg.header.get("host", ""))
        hostname = str(msg.header.get("hostname", ""))[:255]
        pid = msg.header.get("pid") if isinstance(msg.header.get("pid"), int) else None
        host = self.config.hosts.get(kind)
        if host is None or not host.external:
            kinds = sorted(h.name for h in self.config.hosts.values() if h.external)
            self._refuse(
                routing_id,
                "unknown_kind",
                BadRequestError(
                    f"host kind {kind!r} is not an external host of this coordinator "
                    f"(fix: --host-kind one of {kinds}, or add [hosts.{kind}] external = true)"
                ),
            )
            return
        rep = self._slot(host, routing_id, (key_name, hostname, pid))
        if rep is None:
            self._refuse(
                routing_id,
                "no_free_slot",
                OverloadedError(
                    f"all {host.replicas} replica slot(s) of {host.name} are taken "
                    f"(fix: raise replicas under [hosts.{host.name}])"
                ),
            )
            return
        self._held_by[rep.name] = (key_name, hostname, pid)
        self.supervisor.register_external(rep, routing_id, key_name, f"{hostname} {address}", pid)
        self.registered[host.name] += 1
        welcome = Welcome(
            replica=rep.name,
            key=self._key,
            heartbeat_interval_s=self.settings.heartbeat_interval_s,
            orphan_timeout_s=self.settings.host_orphan_timeout_s,
            # As for spawned hosts: the coordinator re-frames requests with a few header bytes.
            max_message_bytes=self.settings.max_message_bytes + MAX_HEADER_BYTES,
            segmenter=self.config.segmenter,
            hello_interval_s=self.config.remote.hello_interval_s,
        )
        self._reply(routing_id, welcome.to_message())

    def _slot(
        self, host: HostConfig, routing_id: bytes, who: tuple[str, str, int | None]
    ) -> Replica | None:
        """Which replica a HELLO fills: the one this connection or process already holds (it
        reset and registers again), else a free one it held before, else a free one."""
        replicas = [r for r in self.supervisor.replicas if r.host.name == host.name]
        for rep in replicas:
            if rep.routing_id == routing_id or (
                rep.routing_id is not None and self._held_by.get(rep.name) == who
            ):
                return rep
        free = [r for r in replicas if r.routing_id is None]
        for rep in free:
            if self._held_by.get(rep.name, ("",) * 3)[:2] == who[:2]:
                return rep
        never_or_gone = [r for r in free if r.name not in self._held_by or r.state == "stopped"]
        return (never_or_gone or free or [None])[0]

    def _refuse(self, routing_id: bytes, reason: str, err: Any) -> None:
        self.refused[reason] += 1
        log.warning("refused a dial-in: %s", err.message)
        self._reply(routing_id, refusal(err))

    def _reply(self, routing_id: bytes, msg: Message) -> None:
        try:
            self.sock.send_multipart(
                [routing_id, *self._hello_codec.encode(msg)], zmq.NOBLOCK, copy=False
            )
        except zmq.Again:
            log.warning("dial-in reply dropped: the host's queue is full")

    def stats(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "registered": dict(self.registered),
            "refused": dict(self.refused),
        }

    def close(self) -> None:
        self.sock.close(linger=0)


def link_timings(config: Config) -> curve.LinkTimings:
    """ZeroMQ's keepalive on TCP links: pings at the heartbeat interval, a connection closed
    after as long a silence as the coordinator's own liveness check allows."""
    settings = config.coordinator
    return curve.LinkTimings(
        heartbeat_interval_s=settings.heartbeat_interval_s,
        heartbeat_timeout_s=settings.heartbeat_interval_s * settings.heartbeat_liveness,
    )


def _property(frame: zmq.Frame, name: str) -> str:
    try:
        return str(frame.get(name))
    except zmq.ZMQError:
        return ""
