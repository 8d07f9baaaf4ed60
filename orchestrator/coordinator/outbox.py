"""The outbox: how the request and stream tables send, without holding the broker.

The broker owns the two ROUTER sockets and their codecs; the tables only need to send a message to
a client, send one to a host replica, and count an error they answered with. Tests hand the tables
a recording outbox of their own (anything with these three methods).

While the broker handles a batch of messages it holds what the tables send (:meth:`Outbox.hold`)
and sends it all at the batch's end (:meth:`Outbox.release`): a send spaced from the next by a
message's handling finds ZeroMQ's I/O thread asleep and pays a wake-up (about 20 us of CPU here),
where back-to-back sends share one. The order of messages is kept; one message alone (a
request at a time) goes out as soon as its handling ends, as before.
"""

from __future__ import annotations

import collections
import logging
from typing import Any, Protocol

import zmq

from orchestrator.coordinator.supervisor import Replica
from orchestrator.wire.errors import OrchestratorError
from orchestrator.wire.protocol import Codec, Kind, Message, error_message
from orchestrator.wire.sockets import send_frames

log = logging.getLogger("orchestrator.coordinator.broker")


class Sender(Protocol):
    """What a table needs to answer anyone."""

    def to_client(self, client: bytes, msg: Message) -> None: ...

    def to_host(self, rep: Replica, msg: Message) -> None: ...

    def count_error(self, code: str) -> None: ...


def reply_error(
    out: Sender, client: bytes, client_id: Any, err: OrchestratorError, **extra: Any
) -> None:
    """Answer a client with a typed error, and count it."""
    out.count_error(str(err.code))
    out.to_client(client, error_message(err, client_id, **extra))


class HostLink(Protocol):
    """The socket external replicas dialled in on (``coordinator.remote``), with its own key."""

    codec: Codec

    def send(self, rep: Replica, frames: list[bytes]) -> None: ...


class Outbox:
    """Signs and sends on the broker's sockets; counts the errors the tables answer with."""

    def __init__(
        self,
        clients: zmq.Socket[Any],
        client_codec: Codec,
        hosts: zmq.Socket[Any],
        host_codec: Codec,
    ) -> None:
        self._clients, self._client_codec = clients, client_codec
        self._hosts, self._host_codec = hosts, host_codec
        self.errors_by_code: collections.Counter[str] = collections.Counter()
        #: Where external replicas are reached; None when nothing may dial in.
        self.remote: HostLink | None = None
        #: Messages held while a batch is handled: (socket, frames, replica or None for a
        #: client, kind), in send order.
        self._held: list[tuple[zmq.Socket[Any], list[Any], Replica | None, Kind]] | None = None

    def hold(self) -> None:
        """Hold what is sent from now until :meth:`release` (the broker's batch)."""
        self._held = []

    def release(self) -> None:
        """Send every held message, in order, and stop holding."""
        held, self._held = self._held, None
        for sock, frames, rep, kind in held or ():
            self._send(sock, frames, rep, kind)

    def to_client(self, client: bytes, msg: Message) -> None:
        frames = [client, *self._client_codec.encode(msg)]
        if self._held is None:
            self._send(self._clients, frames, None, msg.kind)
        else:
            self._held.append((self._clients, frames, None, msg.kind))

    def to_host(self, rep: Replica, msg: Message) -> None:
        if rep.host.external:
            self._to_external(rep, msg)
            return
        frames = [rep.identity, *self._host_codec.encode(msg)]
        if self._held is None:
            self._send(self._hosts, frames, rep, msg.kind)
        else:
            self._held.append((self._hosts, frames, rep, msg.kind))

    @staticmethod
    def _send(sock: zmq.Socket[Any], frames: list[Any], rep: Replica | None, kind: Kind) -> None:
        try:
            send_frames(sock, frames)
        except zmq.Again:
            whom = "client" if rep is None else f"host {rep.name}"
            log.warning("%s queue full; dropped %s", whom, kind)

    def _to_external(self, rep: Replica, msg: Message) -> None:
        if rep.routing_id is None or self.remote is None:
            return  # no link: what it would have carried fails over when the link is dropped
        try:
            self.remote.send(rep, self.remote.codec.encode(msg))
        except zmq.Again:
            log.warning("host %s queue full; dropped %s", rep.name, msg.kind)

    def count_error(self, code: str) -> None:
        self.errors_by_code[code] += 1
