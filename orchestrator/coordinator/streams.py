"""Coordinator side of streaming: sticky stream-to-replica binding and failover without loss.

A stream is bound to one replica for its whole life unless that replica dies. Until a final
event confirms an utterance, the coordinator keeps every byte of audio the client sent since the
previous final. When the replica dies, the stream is re-opened on the next capable replica (the
model's fallback order) at the stream time of the first unconfirmed sample, that audio is
replayed, and the client gets a ``host_changed`` event: no audio lost, none transcribed twice.

While no replica can take a stream (all loading or restarting), the stream is parked: its audio
is buffered, not refused, and it attaches as soon as a replica is ready.

The broker calls the ``on_*`` methods here from its loop; messages go out through the outbox.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from orchestrator.coordinator.config import CoordinatorSettings, ModelRoute
from orchestrator.coordinator.outbox import Sender
from orchestrator.coordinator.router import Router
from orchestrator.coordinator.supervisor import Replica, Supervisor
from orchestrator.wire.bodies import (
    CLIENT_STREAM_KEY,
    HOST_STREAM_KEY,
    StreamChunk,
    StreamClose,
    StreamOpen,
)
from orchestrator.wire.errors import (
    BadAudioError,
    BadRequestError,
    HostCrashedError,
    NoHostAvailableError,
    OrchestratorError,
    OverloadedError,
    StreamClosedError,
    StreamSequenceError,
)
from orchestrator.wire.formats import BYTES_PER_SAMPLE, AudioFormat
from orchestrator.wire.messages import EventType
from orchestrator.wire.protocol import Kind, Message

log = logging.getLogger("orchestrator.coordinator.streams")


@dataclass(eq=False)
class Stream:
    """One client stream as the coordinator tracks it."""

    sid: str
    client: bytes
    cid: Any
    route: ModelRoute
    sample_rate: int
    fmt: str
    options: dict[str, Any]
    opened: float
    #: The hosts it may run on, in fallback order (one, with no fallback, when pinned).
    hosts: tuple[str, ...] = ()
    replica: Replica | None = None
    next_seq: int = 0
    host_seq: int = 0
    buffer: bytearray = field(default_factory=bytearray)
    buffer_start: int = 0  # stream sample index of buffer[0]
    samples_in: int = 0
    #: Audio in the finals forwarded to the client, in stream samples (across every host).
    samples_in_finals: int = 0
    #: Utterance number the next host starts counting from, so numbers go on across failovers.
    next_utterance: int = 0
    closing: bool = False
    parked_since: float | None = None
    last_activity: float = 0.0
    hosts_used: list[str] = field(default_factory=list)
    failovers: int = 0

    @property
    def width(self) -> int:
        return BYTES_PER_SAMPLE[AudioFormat(self.fmt)]


class StreamTable:
    """All open streams; the broker's loop drives it."""

    def __init__(
        self,
        settings: CoordinatorSettings,
        router: Router,
        supervisor: Supervisor,
        outbox: Sender,
    ) -> None:
        self.settings = settings
        self.router = router
        self.supervisor = supervisor
        self.out = outbox
        self.streams: dict[str, Stream] = {}
        self.by_client: dict[tuple[bytes, Any], Stream] = {}
        self._ids = itertools.count(1)
        self.opened_total = 0
        self.failovers = 0
        self.max_failover_s = 0.0
        self._lost_at: dict[str, float] = {}

    # ------------------------------------------------------------------ client side
    def on_client_open(self, client: bytes, msg: Message) -> None:
        cid = msg.header.get("id")  # refusals must name the stream even when its body is bad
        if (client, cid) in self.by_client:
            raise BadRequestError(f"stream {cid!r} is already open")  # it goes on: no "closed"
        try:
            self._open(client, StreamOpen.from_header(msg.header, CLIENT_STREAM_KEY))
        except OrchestratorError as err:
            # A refused stream ends as a failed one does, with ``closed`` after the error, so
            # the client's stream ends too instead of waiting for events forever.
            self.out.count_error(str(err.code))
            for event in (
                {"type": EventType.ERROR, "error": err.to_wire(), "final": True},
                {"type": EventType.CLOSED, "samples_in": 0},
            ):
                self.out.to_client(client, Message(Kind.STREAM_EVENT, {**event, "id": cid}))

    def _open(self, client: bytes, body: StreamOpen) -> None:
        if len(self.streams) >= self.settings.max_streams:
            raise OverloadedError(f"{self.settings.max_streams} streams already open")
        route = self.router.route(body.model)
        now = time.monotonic()
        stream = Stream(
            sid=f"s:{next(self._ids)}",
            client=client,
            cid=body.stream,
            route=route,
            sample_rate=body.sample_rate,
            fmt=body.format,
            options=body.options,
            opened=now,
            last_activity=now,
            hosts=self.router.hosts_for(route, body.host),
        )
        self.streams[stream.sid] = stream
        self.by_client[(client, stream.cid)] = stream
        try:
            self._attach(stream, exclude=set(), first=True)
        except OrchestratorError:
            self._remove(stream)
            raise
        self.opened_total += 1

    def on_client_audio(self, client: bytes, msg: Message) -> None:
        chunk_body = StreamChunk.from_header(msg.header, CLIENT_STREAM_KEY)
        stream = self._client_stream(client, chunk_body.stream)
        seq = chunk_body.seq
        if seq != stream.next_seq:
            raise StreamSequenceError(
                f"stream {stream.cid!r}: expected chunk {stream.next_seq}, got {seq!r}",
                expected=stream.next_seq,
                got=seq,
            )
        if stream.closing:
            raise StreamClosedError(f"stream {stream.cid!r} is closing")
        if len(msg.payloads) != 1 or len(msg.payloads[0]) % stream.width:
            raise BadAudioError(
                f"stream {stream.cid!r}: chunk must be one payload of whole {stream.fmt} samples"
            )
        chunk = msg.payloads[0]
        limit = int(self.settings.max_audio_s * stream.sample_rate) * stream.width
        if len(stream.buffer) + len(chunk) > limit:
            raise OverloadedError(
                f"stream {stream.cid!r}: {self.settings.max_audio_s:.0f}s of audio unconfirmed; "
                "the host is not keeping up"
            )
        stream.next_seq += 1
        stream.buffer += chunk
        stream.samples_in += len(chunk) // stream.width
        stream.last_activity = time.monotonic()
        if stream.replica is not None:
            self._send_audio(stream, chunk)

    def on_client_close(self, client: bytes, msg: Message) -> None:
        stream = self._client_stream(
            client, StreamClose.from_header(msg.header, CLIENT_STREAM_KEY).stream
        )
        stream.closing = True
        stream.last_activity = time.monotonic()
        if stream.replica is not None:
            self.out.to_host(
                stream.replica,
                Message(Kind.STREAM_CLOSE, StreamClose(stream.sid).to_header(HOST_STREAM_KEY)),
            )

    def _client_stream(self, client: bytes, cid: Any) -> Stream:
        stream = self.by_client.get((client, cid))
        if stream is None:
            raise StreamClosedError(f"no open stream {cid!r}")
        return stream

    def _emit(self, stream: Stream, event: dict[str, Any]) -> None:
        self.out.to_client(stream.client, Message(Kind.STREAM_EVENT, {**event, "id": stream.cid}))

    # ------------------------------------------------------------------ binding to replicas
    def _candidates(self, stream: Stream, exclude: set[str]) -> tuple[Replica | None, bool]:
        """The least-loaded replica with room for a stream, in fallback order, and whether
        waiting could help."""
        router = self.router
        coming = False
        for host in stream.hosts:
            ready = [
                r
                for r in router.takers(host, stream.route.name, exclude)
                if r.streams < r.host.max_streams
            ]
            if ready:
                return min(ready, key=lambda r: (r.streams, r.inflight)), True
            # The replica the stream just lost counts too: it restarts, and the stream can wait.
            coming = coming or router.coming(host)
        return None, coming

    def _attach(self, stream: Stream, exclude: set[str], first: bool = False) -> None:
        rep, coming = self._candidates(stream, exclude)
        previous = stream.hosts_used[-1] if stream.hosts_used else None
        if rep is None:
            if coming:
                if stream.parked_since is None:
                    stream.parked_since = time.monotonic()
                if first:
                    self._emit(stream, {"type": EventType.OPENED, "host": None, "parked": True})
                return
            err = self._refusal(stream, exclude)
            if first:
                raise err
            self._fail(stream, err)
            return
        stream.parked_since = None
        stream.replica = rep
        stream.host_seq = 0
        rep.streams += 1
        stream.hosts_used.append(rep.name)
        body = StreamOpen(
            stream.sid,
            stream.route.name,
            stream.sample_rate,
            stream.fmt,
            stream.options,
            start_sample=stream.buffer_start,
            first_utterance=stream.next_utterance,
        )
        self.out.to_host(rep, Message(Kind.STREAM_OPEN, body.to_header(HOST_STREAM_KEY)))
        # Replay what no final confirmed, in pieces: all of it may exceed one message's limit.
        piece = max(1, self.settings.max_message_bytes // 2 // stream.width) * stream.width
        for start in range(0, len(stream.buffer), piece):
            self._send_audio(stream, bytes(stream.buffer[start : start + piece]))
        if stream.closing:
            self.out.to_host(
                rep, Message(Kind.STREAM_CLOSE, StreamClose(stream.sid).to_header(HOST_STREAM_KEY))
            )
        if first or previous is None:
            self._emit(
                stream, {"type": EventType.OPENED, "host": rep.host.name, "replica": rep.name}
            )
        else:
            lost_at = self._lost_at.pop(stream.sid, None)
            if lost_at is not None:
                self.max_failover_s = max(self.max_failover_s, time.monotonic() - lost_at)
            self._emit(
                stream,
                {
                    "type": EventType.HOST_CHANGED,
                    "from": previous,
                    "host": rep.host.name,
                    "replica": rep.name,
                    "replayed_s": len(stream.buffer) / stream.width / stream.sample_rate,
                },
            )

    def _refusal(self, stream: Stream, exclude: set[str]) -> OrchestratorError:
        """Why no replica took the stream: every serving one is full (come back later), or none serves."""
        router = self.router
        serving = [
            r for host in stream.hosts for r in router.takers(host, stream.route.name, exclude)
        ]
        if serving:  # all of them at their host's max_streams, or _candidates would have taken one
            return OverloadedError(
                f"every replica serving {stream.route.name!r} has its max_streams open"
            )
        return NoHostAvailableError(f"no host can take a {stream.route.name!r} stream now")

    def _send_audio(self, stream: Stream, data: bytes) -> None:
        assert stream.replica is not None
        self.out.to_host(
            stream.replica,
            Message(
                Kind.STREAM_AUDIO,
                StreamChunk(stream.sid, stream.host_seq).to_header(HOST_STREAM_KEY),
                [data],
            ),
        )
        stream.host_seq += 1

    def _detach(self, stream: Stream) -> None:
        if stream.replica is not None:
            stream.replica.streams = max(0, stream.replica.streams - 1)
            stream.replica = None

    def _remove(self, stream: Stream) -> None:
        self._detach(stream)
        self.streams.pop(stream.sid, None)
        self.by_client.pop((stream.client, stream.cid), None)

    def _fail(self, stream: Stream, err: OrchestratorError) -> None:
        self.out.count_error(str(err.code))
        self._emit(stream, {"type": EventType.ERROR, "error": err.to_wire(), "final": True})
        self._emit(stream, {"type": EventType.CLOSED, "samples_in": stream.samples_in})
        self._remove(stream)

    # ------------------------------------------------------------------ host side
    def on_host_event(self, rep: Replica, msg: Message) -> None:
        header = msg.header
        stream = self.streams.get(str(header.get("sid") or header.get("id")))
        if stream is None or stream.replica is not rep:
            return  # a stream that moved away or ended: the old host's late words are void
        kind = header.get("type")
        event = {k: v for k, v in header.items() if k not in ("sid", "mid")}
        event["host"] = rep.host.name
        if kind == EventType.PROGRESS:
            self._confirm(stream, int(header.get("confirmed_sample", stream.buffer_start)))
            # The client learns how far audio is confirmed, so one feeding a file faster than
            # real time can stay within the unconfirmed-audio bound (max_audio_s).
            self._emit(
                stream, {"type": EventType.PROGRESS, "confirmed_sample": stream.buffer_start}
            )
            return
        if kind == EventType.FINAL:
            self._confirm(stream, int(header.get("end_sample", stream.buffer_start)))
            stream.samples_in_finals += int(header.get("n_samples", 0))
            stream.next_utterance = int(header.get("utterance", -1)) + 1
        if kind == EventType.CLOSED:
            # A host saw only the audio since it took the stream over; these are the stream's.
            event["samples_in"] = stream.samples_in
            event["samples_in_finals"] = stream.samples_in_finals
            event["samples_discarded"] = stream.samples_in - stream.samples_in_finals
        if msg.kind is Kind.ERROR or kind == EventType.ERROR:
            event.setdefault("error", header.get("error"))
            event["type"] = EventType.ERROR
        self._emit(stream, event)
        if kind == EventType.CLOSED:
            self._remove(stream)

    @staticmethod
    def _confirm(stream: Stream, sample: int) -> None:
        """The host no longer needs audio before ``sample``: drop it from the replay buffer."""
        drop = max(0, min(sample - stream.buffer_start, len(stream.buffer) // stream.width))
        del stream.buffer[: drop * stream.width]
        stream.buffer_start += drop

    def on_replica_ready(self, rep: Replica) -> None:
        for stream in list(self.streams.values()):
            if stream.replica is None and stream.parked_since is not None:
                self._attach(stream, exclude=set())

    def on_replica_lost(self, rep: Replica, reason: str) -> None:
        now = time.monotonic()
        for stream in list(self.streams.values()):
            if stream.replica is not rep:
                continue
            self._detach(stream)
            stream.failovers += 1
            self.failovers += 1
            self._lost_at[stream.sid] = now
            log.info("stream %s lost %s (%s); failing over", stream.sid, rep.name, reason)
            if self.supervisor.closing:
                self._fail(stream, HostCrashedError(f"host {rep.name} stopped: {reason}"))
            else:
                self._attach(stream, exclude={rep.name})

    def tick(self, now: float) -> None:
        timeout = self.settings.stream_failover_timeout_s
        idle = self.settings.stream_idle_timeout_s
        for stream in list(self.streams.values()):
            if stream.parked_since is not None and now - stream.parked_since > timeout:
                self._fail(
                    stream,
                    NoHostAvailableError(
                        f"no host became ready for the stream within {timeout:.0f}s"
                    ),
                )
            elif now - stream.last_activity > idle:
                self._fail(stream, StreamClosedError(f"stream idle for {idle:.0f}s"))

    def close_all(self, reason: str) -> None:
        for stream in list(self.streams.values()):
            self._fail(stream, HostCrashedError(reason))

    def stats(self) -> dict[str, Any]:
        return {
            "open": len(self.streams),
            "parked": sum(1 for s in self.streams.values() if s.parked_since is not None),
            "opened_total": self.opened_total,
            "failovers": self.failovers,
            "max_failover_s": round(self.max_failover_s, 4),
        }
