"""The outbox: how the request and stream tables send, without holding the broker.

The broker owns the two ROUTER sockets and their codecs; the tables only need to send a message to
a client, send one to a host replica, and count an error they answered with. Tests hand the tables
a recording outbox of their own (anything with these three methods).

While the broker handles a batch of messages it holds what the tables send (:meth:`Outbox.hold`)
and sends it at the batch's end (:meth:`Outbox.release`), in order: see
:class:`~orchestrator.wire.sockets.HeldSends`.
"""

from __future__ import annotations

import collections
import logging
from typing import Any, Protocol

import zmq

from orchestrator.coordinator.supervisor import Replica
from orchestrator.wire.errors import OrchestratorError
from orchestrator.wire.protocol import Codec, Kind, Message, error_message
from orchestrator.wire.sockets import HeldSends, send_frames

log = logging.getLogger("orchestrator.coordinator.broker")

#: One send of the outbox: the socket, the frames, the replica (None: a client), the kind.
_Send = tuple[zmq.Socket[Any], list[Any], Replica | None, Kind]


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
        #: (socket, frames, replica or None for a client, kind) to send, held during a batch.
        self._sends: HeldSends[_Send] = HeldSends(self._send)
        self.hold, self.release = self._sends.hold, self._sends.release

    def to_client(self, client: bytes, msg: Message) -> None:
        frames = [client, *self._client_codec.encode(msg)]
        self._sends.send((self._clients, frames, None, msg.kind))

    def to_host(self, rep: Replica, msg: Message) -> None:
        if rep.host.external:
            self._to_external(rep, msg)
            return
        frames = [rep.identity, *self._host_codec.encode(msg)]
        self._sends.send((self._hosts, frames, rep, msg.kind))

    @staticmethod
    def _send(send: _Send) -> None:
        sock, frames, rep, kind = send
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
