"""The broker: the coordinator's event loop, its two ROUTER sockets and one-shot requests.

Clients connect DEALERs to the client ROUTER (inproc when embedded, ipc or loopback tcp when
standalone); hosts connect DEALERs to the host ROUTER. The loop (ZeroMQ Guide's Majordomo
broker, reshaped) does only cheap work: decode, route, forward, count. Models compute in the
hosts; process management is the supervisor's; streams are the stream table's.

One thread runs :meth:`Broker.run`. Other threads talk to it only through :meth:`call`.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from orchestrator.call_queue import CallQueue
from orchestrator.coordinator.config import Config, ModelRoute
from orchestrator.coordinator.health import snapshot
from orchestrator.coordinator.router import Router, Verdict
from orchestrator.coordinator.streams import BYTES_PER_SAMPLE, StreamTable
from orchestrator.coordinator.supervisor import SERVING, HostState, Replica, Supervisor
from orchestrator.wire.errors import (
    BadAudioError,
    BadRequestError,
    DeadlineExceededError,
    HostCrashedError,
    InternalError,
    OrchestratorError,
    OverloadedError,
    ProtocolError,
    error_from_wire,
)
from orchestrator.wire.protocol import Codec, DropCounter, Kind, Message, error_message

log = logging.getLogger("orchestrator.coordinator.broker")

#: A one-shot request is tried on at most this many replicas (the first, plus one retry).
MAX_ATTEMPTS = 2
#: High-water marks: ZeroMQ queues silently up to them, so they are set, not left at 1000.
SOCKET_HWM = 50_000
#: Socket flags as plain ints: pyzmq's send_multipart/recv_multipart combine IntFlag enums for
#: every frame (and recv_multipart asks getsockopt(RCVMORE) per frame), which cost more than the
#: sends themselves here (bench: about 20 us per 6-frame message against 8 us for this loop).
_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)


def _send_frames(sock: zmq.Socket[Any], frames: list[bytes]) -> None:
    """``send_multipart(frames, flags=NOBLOCK, copy=False)``, frame by frame with int flags.

    ZeroMQ applies the high-water mark to the first frame; later frames of the message follow it.
    """
    for frame in frames[:-1]:
        sock.send(frame, _MORE_NOBLOCK, copy=False)
    sock.send(frames[-1], _NOBLOCK, copy=False)


def _recv_frames(sock: zmq.Socket[Any]) -> list[zmq.Frame]:
    """``recv_multipart(flags=NOBLOCK, copy=False)``: raises zmq.Again when nothing is waiting."""
    frame = sock.recv(_NOBLOCK, copy=False)
    frames = [frame]
    while frame.more:  # a message arrives whole, so its later frames are already here
        frame = sock.recv(_NOBLOCK, copy=False)
        frames.append(frame)
    return frames


@dataclass(eq=False)
class Request:
    """A one-shot transcribe request from the moment it arrives until it is answered."""

    rid: str
    client: bytes
    client_id: str
    route: ModelRoute
    header: dict[str, Any]
    payloads: list[bytes]
    received: float
    deadline: float
    tried: set[str] = field(default_factory=set)
    replica: Replica | None = None
    dispatched_at: float = 0.0
    answered: bool = False
    #: What the last host said when it could not serve this request (reported if none can).
    last_error: OrchestratorError | None = None


@dataclass
class BrokerStats:
    requests: int = 0
    results: int = 0
    errors_by_code: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    recycled_stuck: int = 0

    def count_error(self, code: str) -> None:
        self.errors_by_code[code] = self.errors_by_code.get(code, 0) + 1


class Broker:
    """Sockets, dispatch and request bookkeeping for one coordinator."""

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
        self.clients = self._router_socket(client_endpoints)
        self.hosts = self._router_socket([host_endpoint])
        self.supervisor = Supervisor(
            config, endpoint=host_endpoint, key=host_key, send_shutdown=self._send_shutdown
        )
        self.supervisor.listeners.append(self._on_state_change)
        self.router = Router(config, self.supervisor.replicas)
        self.streams = StreamTable(self)
        self.requests: dict[str, Request] = {}
        self.pending: deque[Request] = deque()
        self.stats = BrokerStats()
        self.started = time.monotonic()
        self._ids = itertools.count(1)
        self.calls = CallQueue()
        self.running = False
        self.spawned = threading.Event()  # set once every replica's first spawn was attempted
        self.on_tick: list[Callable[[], None]] = []
        #: Run once per answered one-shot request: fn(model, host or None, outcome, timings),
        #: outcome "ok" or an error code (metrics hang latency histograms here).
        self.on_request_done: list[Callable[[str, str | None, str, dict[str, float]], None]] = []

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
            sock.bind(endpoint)
        return sock

    # ------------------------------------------------------------------ cross-thread calls
    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the broker thread soon (thread-safe)."""
        self.calls.put(fn)

    def _request_done(self, req: Request, outcome: str, timings: dict[str, float]) -> None:
        host = req.replica.host.name if req.replica is not None else None
        for fn in self.on_request_done:
            try:
                fn(req.route.name, host, outcome, timings)
            except Exception:
                log.exception("on_request_done hook failed")

    # ------------------------------------------------------------------ sending
    def send_client(self, client: bytes, msg: Message) -> None:
        try:
            _send_frames(self.clients, [client, *self.client_codec.encode(msg)])
        except zmq.Again:
            log.warning("client queue full; dropped %s", msg.kind)

    def send_host(self, rep: Replica, msg: Message) -> None:
        try:
            _send_frames(self.hosts, [rep.identity, *self.host_codec.encode(msg)])
        except zmq.Again:
            log.warning("host %s queue full; dropped %s", rep.name, msg.kind)

    def reply_error(
        self, client: bytes, client_id: Any, err: OrchestratorError, **extra: Any
    ) -> None:
        self.stats.count_error(str(err.code))
        self.send_client(client, error_message(err, client_id, **extra))

    def _send_shutdown(self, rep: Replica) -> None:
        self.send_host(rep, Message(Kind.SHUTDOWN, {}))

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
        tick_s = self.settings.tick_interval_s
        beat_s = self.settings.heartbeat_interval_s
        next_tick = next_beat = time.monotonic()
        while not should_stop():
            events = dict(poller.poll(tick_s * 1000))
            if self.hosts in events:
                self._drain(self.hosts, self.host_codec, self.host_drops, self._on_host)
            if self.clients in events:
                self._drain(self.clients, self.client_codec, self.client_drops, self._on_client)
            if self.calls.fd in events:
                self.calls.run_pending()
            now = time.monotonic()
            if now >= next_beat:
                self._heartbeat_hosts()
                next_beat = now + beat_s
            if now >= next_tick:
                self.supervisor.tick()
                self._check_deadlines(now)
                self.streams.tick(now)
                for fn in self.on_tick:
                    fn()
                next_tick = now + tick_s
        self.calls.run_pending()

    def shutdown(self) -> None:
        """Stop every host (ask, SIGTERM, SIGKILL), fail what is still open, close sockets."""
        self.supervisor.stop_all()
        for req in list(self.requests.values()):
            if not req.answered:
                self.reply_error(
                    req.client, req.client_id, HostCrashedError("coordinator shut down")
                )
        self.streams.close_all("coordinator shut down")
        self.clients.close(linger=100)
        self.hosts.close(linger=0)
        self.calls.close()

    def _drain(
        self,
        sock: zmq.Socket[Any],
        codec: Codec,
        drops: DropCounter,
        handler: Callable[[bytes, Message], None],
    ) -> None:
        for _ in range(1000):  # bounded so one busy socket cannot starve the other
            try:
                frames = _recv_frames(sock)
            except zmq.Again:
                return
            identity = frames[0].bytes
            try:
                msg = codec.decode([f.buffer for f in frames[1:]])
            except ProtocolError as exc:
                drops.add(exc)
                log.debug("dropped frames from %r: %s", identity[:32], exc)
                continue
            try:
                handler(identity, msg)
            except OrchestratorError as exc:
                if sock is self.clients:
                    self.reply_error(identity, msg.header.get("id"), exc)
            except Exception:
                log.exception("handler failed on %s", msg.kind)
                if sock is self.clients:
                    self.reply_error(identity, msg.header.get("id"), InternalError("broker error"))

    def _heartbeat_hosts(self) -> None:
        for rep in self.supervisor.replicas:
            if rep.proc is not None and rep.stop_target is None:
                self.send_host(rep, Message(Kind.HEARTBEAT, {}))

    # ------------------------------------------------------------------ from clients
    def _on_client(self, client: bytes, msg: Message) -> None:
        if isinstance(msg.header.get("id"), list | dict):  # ids key tables: they must be hashable
            raise BadRequestError("a message id must be a string or a number")
        kind = msg.kind
        if kind is Kind.TRANSCRIBE:
            self._on_transcribe(client, msg)
        elif kind is Kind.STREAM_OPEN:
            self.streams.on_client_open(client, msg)
        elif kind is Kind.STREAM_AUDIO:
            self.streams.on_client_audio(client, msg)
        elif kind is Kind.STREAM_CLOSE:
            self.streams.on_client_close(client, msg)
        elif kind is Kind.HEALTH:
            self.send_client(
                client,
                Message(Kind.HEALTH_REPLY, {"id": msg.header.get("id"), "health": snapshot(self)}),
            )
        elif kind is Kind.CONTROL:
            self._on_control(client, msg)
        elif kind is Kind.HEARTBEAT:
            pass
        else:
            raise BadRequestError(f"clients may not send {kind}")

    def _on_control(self, client: bytes, msg: Message) -> None:
        """Operator actions: stop or start a host's replicas (also how tests fail a host)."""
        action, host = msg.header.get("action"), msg.header.get("host")
        replicas = self.router.replicas_of(str(host))
        if not replicas or action not in ("stop", "start", "restart"):
            raise BadRequestError(
                f"control needs action stop|start|restart and a known host, got {action} {host}"
            )
        for rep in replicas:
            if action == "stop":
                self.supervisor.stop(rep)
            elif action == "start":
                self.supervisor.start(rep)
            else:
                self.supervisor.recycle(rep, "restart requested")
        self.send_client(
            client, Message(Kind.CONTROL_REPLY, {"id": msg.header.get("id"), "ok": True})
        )

    def _on_transcribe(self, client: bytes, msg: Message) -> None:
        header = msg.header
        now = time.monotonic()
        client_id = header.get("id")
        route = self.router.route(str(header.get("model", "")))
        self._check_audio_length(header, msg.payloads)
        try:
            timeout = float(header.get("timeout_s") or self.settings.request_timeout_s)
        except (TypeError, ValueError):
            timeout = math.nan
        if not math.isfinite(timeout):  # NaN or infinity would never expire
            raise BadRequestError(
                f"timeout_s must be a number of seconds, got {header.get('timeout_s')!r}"
            )
        req = Request(
            rid=str(next(self._ids)),
            client=client,
            client_id=client_id,
            route=route,
            header=header,
            payloads=msg.payloads,
            received=now,
            deadline=now + timeout,
        )
        self.stats.requests += 1
        self._place(req)

    def _check_audio_length(self, header: dict[str, Any], payloads: list[bytes]) -> None:
        """Refuse a clip over ``max_audio_s`` here, before any host spends time on it.

        Only a well-formed format and rate are measured; anything else reaches the host's audio
        checks, which name the precise fault.
        """
        width = BYTES_PER_SAMPLE.get(str(header.get("format", "pcm16")))
        rate = header.get("sample_rate")
        if width is None or not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
            return
        seconds = sum(len(p) for p in payloads) / width / rate
        limit = self.settings.max_audio_s
        if seconds > limit:
            raise BadAudioError(
                f"{seconds:.1f}s of audio is over the {limit:g}s limit of one request; stream it instead",
                seconds=round(seconds, 3),
                max_audio_s=limit,
            )

    def _place(self, req: Request, *, retry: bool = False) -> None:
        """Dispatch now, queue, or answer with the typed reason (the last host's, if one failed).

        The queue bound refuses new work; a retry is work already admitted, so it may wait.
        """
        try:
            choice = self.router.choose(
                req.route, exclude=req.tried, only_host=req.header.get("host")
            )
        except OrchestratorError as exc:
            self._answer_error(req, req.last_error or exc)
            return
        if choice.verdict is Verdict.DISPATCH:
            assert choice.replica is not None
            self._dispatch(req, choice.replica)
        elif len(self.pending) >= self.settings.max_queue and not retry:
            self._answer_error(
                req,
                OverloadedError(
                    f"queue full ({self.settings.max_queue} waiting)", model=req.route.name
                ),
            )
        else:
            self.pending.append(req)

    def _dispatch(self, req: Request, rep: Replica) -> None:
        now = time.monotonic()
        req.replica, req.dispatched_at = rep, now
        req.tried.add(rep.name)
        self.requests[req.rid] = req
        rep.inflight += 1
        header = {**req.header, "id": req.rid, "model": req.route.name}
        header["timeout_s"] = max(0.0, req.deadline - now)
        self.send_host(rep, Message(Kind.TRANSCRIBE, header, req.payloads))
        self.supervisor.update_load(rep)

    def _answer_error(self, req: Request, err: OrchestratorError) -> None:
        if not req.answered:
            req.answered = True
            self.reply_error(req.client, req.client_id, err, model=req.route.name)
            total = time.monotonic() - req.received
            self._request_done(
                req, str(err.code), {"queued_s": total, "compute_s": 0.0, "total_s": total}
            )

    def _drain_pending(self) -> None:
        """Offer queued requests to replicas that have room again, oldest first."""
        if not self.pending:
            return
        waiting, self.pending = self.pending, deque()
        # Within one pass capacity only shrinks (dispatches take slots, queueing frees none), so
        # once a request of some (model, pinned host, hosts tried) has to wait, every later one
        # of the same kind would too: requeue those without asking the router again. Without
        # this, each reply re-routed the whole queue (O(queue) per reply under pipelining).
        blocked: set[tuple[str, Any, frozenset[str]]] = set()
        while waiting:
            req = waiting.popleft()
            kind = (req.route.name, req.header.get("host"), frozenset(req.tried))
            if kind in blocked:
                self.pending.append(req)
                continue
            self._place(req)
            if self.pending and self.pending[-1] is req:
                blocked.add(kind)

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
            self._drain_pending()
        elif (
            kind in (Kind.RESULT, Kind.ERROR)
            and "id" in msg.header
            and msg.header["id"] is not None
        ):
            self._on_reply(rep, msg)
        elif kind is Kind.STREAM_EVENT:
            self.streams.on_host_event(rep, msg)
        elif kind is Kind.ERROR:
            rep.last_reason = str(msg.header.get("error", {}).get("message", "host error"))
            log.warning("host %s reported: %s", rep.name, rep.last_reason)

    def _on_reply(self, rep: Replica, msg: Message) -> None:
        if str(msg.header["id"]).startswith("s:"):
            self.streams.on_host_event(rep, msg)
            return
        req = self.requests.pop(str(msg.header["id"]), None)
        if req is None or req.replica is not rep:
            return
        rep.inflight -= 1
        now = time.monotonic()
        if msg.kind is Kind.RESULT:
            rep.served += 1
            self.stats.results += 1
            if not req.answered:
                req.answered = True
                header = msg.header
                timings = {
                    "queued_s": req.dispatched_at
                    - req.received
                    + float(header.get("host_queued_s", 0.0)),
                    "compute_s": float(header.get("compute_s", 0.0)),
                    "total_s": now - req.received,
                }
                self._request_done(req, "ok", timings)
                self.send_client(
                    req.client,
                    Message(
                        Kind.RESULT,
                        {
                            "id": req.client_id,
                            "result": header.get("result"),
                            "model": req.route.name,
                            "host": rep.host.name,
                            "replica": rep.name,
                            "timings": timings,
                            "attempts": len(req.tried),
                        },
                    ),
                )
        else:
            rep.errors += 1
            error = msg.header.get("error") or {}
            code = str(error.get("code"))
            if code in ("model_unavailable", "unknown_model") and not req.answered:
                # That host cannot serve it after all: try the next one, keeping its reason.
                req.last_error = error_from_wire(error)
                self._place(req)
            elif not req.answered:
                req.answered = True
                self.stats.count_error(code)
                total = now - req.received
                self._request_done(
                    req, code, {"queued_s": total, "compute_s": 0.0, "total_s": total}
                )
                self.send_client(
                    req.client, Message(Kind.ERROR, {**msg.header, "id": req.client_id})
                )
        self.supervisor.update_load(rep)
        self._drain_pending()

    # ------------------------------------------------------------------ time and failure
    def _check_deadlines(self, now: float) -> None:
        if self.pending and any(r.deadline <= now for r in self.pending):
            keep: deque[Request] = deque()
            for req in self.pending:
                if req.deadline <= now:
                    self._answer_error(req, DeadlineExceededError("deadline passed while queued"))
                else:
                    keep.append(req)
            self.pending = keep
        grace = self.settings.stuck_request_grace_s
        for req in list(self.requests.values()):
            if req.deadline > now:
                continue
            if not req.answered:
                self._answer_error(
                    req,
                    DeadlineExceededError(
                        f"no answer from {req.replica.name if req.replica else 'any host'} within the deadline"
                    ),
                )
            elif now - req.deadline > grace and req.replica is not None:
                rep = req.replica
                self.requests.pop(req.rid, None)
                self.stats.recycled_stuck += 1
                self.supervisor.recycle(
                    rep, f"request stuck {now - req.deadline:.1f}s past its deadline"
                )

    def _on_state_change(self, rep: Replica, old: HostState, new: HostState, reason: str) -> None:
        if new in SERVING or new is HostState.UNHEALTHY:
            if new in SERVING and old not in SERVING:
                self.call(self._drain_pending)
            return
        if new is HostState.STARTING:
            return
        # The replica's process is gone (or going): its work must go elsewhere or be answered.
        lost = [r for r in self.requests.values() if r.replica is rep]
        rep.inflight = 0
        for req in lost:
            self.requests.pop(req.rid, None)
            if req.answered:
                continue
            if len(req.tried) < MAX_ATTEMPTS and not self.supervisor.closing:
                self.stats.retries += 1
                req.replica = None
                req.last_error = HostCrashedError(f"host {rep.name} died ({reason}); no other host")
                self._place(req, retry=True)
            else:
                self._answer_error(req, HostCrashedError(f"host {rep.name} died: {reason}"))
        self.streams.on_replica_lost(rep, reason)
