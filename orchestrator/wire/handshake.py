"""Did the coordinator take our Curve keys? A dialling socket's handshakes, as its monitor sees them.

A CurveZMQ handshake the coordinator refuses fails without a word at the socket itself: what was
queued for it is dropped, and only a socket monitor hears why. Remote clients
(``orchestrator.client``) and dial-in hosts (``orchestrator.host.dialin``) both watch their link
with :class:`HandshakeWatch`, which turns monitor events into a :class:`Refusal` whose one-line
message names the endpoint, the cause and the fix.

How libzmq 4.3 reports a failed handshake to the dialling side, and what it does next:

- ``HANDSHAKE_FAILED_AUTH`` (ZAP status 400): the coordinator's allow-list lacks our public key.
  libzmq never dials that connection again: the dialler must (:meth:`HandshakeWatch.dial_again`).
- ``HANDSHAKE_FAILED_PROTOCOL``: the endpoint speaks another security mechanism (plaintext), or
  garbled the handshake. Not dialled again either.
- ``HANDSHAKE_FAILED_NO_DETAIL``: the coordinator hung up mid-handshake, which is what it does
  when it cannot open our HELLO: we sealed it for a public key that is not its own (a wrong
  ``coordinator.key``). libzmq keeps dialling, and every attempt ends the same way. A plaintext
  endpoint that hangs up before we read its greeting looks alike (else it is the mismatch
  above), and so, once, does a coordinator dying mid-handshake: only a second one in a row is a
  refusal.

A successful handshake clears the refusal. pyzmq and the standard library only: hosts import it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from orchestrator.wire.curve import COORDINATOR_KEY_NAME, PUBLIC_SUFFIX, KeyPair
from orchestrator.wire.errors import UnauthorizedError

#: What the watch listens for (the rest of the monitor's chatter is never queued).
WATCHED_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_DISCONNECTED
)
#: Handshakes hung up in a row before a wrong coordinator key is the verdict (see the docstring).
DROPS_BEFORE_REFUSED = 2


class Cause(enum.StrEnum):
    """Why the coordinator would not finish a handshake (``details["cause"]`` of the error)."""

    KEY_REFUSED = "key_refused"
    COORDINATOR_KEY = "coordinator_key"
    PROTOCOL = "protocol"


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """One refused handshake: the cause, and the one line that tells a person what to do."""

    cause: Cause
    endpoint: str
    message: str
    #: The monitor's value: ZAP status, ZMTP protocol error code, or errno.
    value: int

    def error(self) -> UnauthorizedError:
        """A fresh exception each time: one instance raised in several places would pile up
        tracebacks."""
        return UnauthorizedError(
            self.message, endpoint=self.endpoint, cause=str(self.cause), value=self.value
        )


@dataclasses.dataclass(frozen=True, slots=True)
class LinkEvent:
    """One monitor event; ``refusal`` is set when it was a refused handshake."""

    kind: int
    refusal: Refusal | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Party:
    """Who is dialling, for the messages: ``client`` or ``host``, and its key files."""

    role: str
    keys_dir: Path | None = None
    keys: KeyPair | None = None

    def refusal_message(self, cause: Cause, endpoint: str, value: int) -> str:
        folder = str(self.keys_dir) if self.keys_dir is not None else "KEYS"
        coordinator_key = f"{folder}/{COORDINATOR_KEY_NAME}{PUBLIC_SUFFIX}"
        if cause is Cause.KEY_REFUSED:
            name = self.keys.name if self.keys is not None else self.role
            public = f" {self.keys.public.decode()}" if self.keys is not None else ""
            return (
                f"{endpoint}: the coordinator refused this {self.role}'s Curve key{public} "
                f"(fix: on the coordinator, python -m orchestrator keys authorize KEYS_DIR "
                f"{folder}/{name}{PUBLIC_SUFFIX} --as {self.role}; its next try gets in)"
            )
        if cause is Cause.COORDINATOR_KEY:
            return (
                f"{endpoint}: the Curve handshake failed: the coordinator hung up, as it does "
                f"when {coordinator_key} is not its public key (fix: copy the coordinator's "
                f"coordinator.key into {folder}, shown by keys list KEYS_DIR on the coordinator, "
                "and dial the address it serves with Curve)"
            )
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            return (
                f"{endpoint}: the Curve handshake failed: this endpoint does not speak Curve "
                "(fix: dial the address the coordinator serves with Curve, or go without Curve "
                "keys to a loopback one)"
            )
        return (
            f"{endpoint}: the Curve handshake failed (ZMTP protocol error {value:#x}) "
            f"(fix: check that {coordinator_key} is this coordinator's public key)"
        )


class HandshakeWatch:
    """The monitor of one dialling socket, reduced to: is the coordinator refusing us?

    Made before the socket connects, so the first handshake is heard. ``poll`` never blocks;
    an asyncio caller reads it when ``fd`` is readable (ZeroMQ's edge-style wake-up: read until
    empty, as ``poll`` does).
    """

    def __init__(self, sock: zmq.Socket[Any], endpoint: str, party: Party) -> None:
        self.sock = sock
        self.endpoint = endpoint
        self.party = party
        self.monitor: zmq.Socket[Any] = sock.get_monitor_socket(WATCHED_EVENTS)
        self.fd: int = self.monitor.getsockopt(zmq.FD)
        #: The last refusal, until a handshake succeeds.
        self.refusal: Refusal | None = None
        self._drops_in_a_row = 0
        self._given_up = False  # libzmq will not dial this connection again by itself

    def poll(self) -> list[LinkEvent]:
        """Every event waiting, oldest first; updates ``refusal``."""
        events = []
        while True:
            try:
                frames = self.monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return events
            except zmq.ZMQError:  # closed under us: nothing more to hear
                return events
            event = parse_monitor_message(frames)
            events.append(self._on_event(event["event"], event["value"]))

    def fresh_refusal(self) -> Refusal | None:
        """The newest refusal among the events waiting (None if none was refused)."""
        refused = [e.refusal for e in self.poll() if e.refusal is not None]
        return refused[-1] if refused else None

    def _on_event(self, kind: int, value: int) -> LinkEvent:
        cause = None
        if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.refusal, self._drops_in_a_row = None, 0
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            cause, self._given_up = Cause.KEY_REFUSED, True
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            cause, self._given_up = Cause.PROTOCOL, True
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            self._drops_in_a_row += 1
            if self._drops_in_a_row >= DROPS_BEFORE_REFUSED:
                cause = Cause.COORDINATOR_KEY
        if cause is None:
            return LinkEvent(kind)
        message = self.party.refusal_message(cause, self.endpoint, value)
        self.refusal = Refusal(cause, self.endpoint, message, value)
        return LinkEvent(kind, self.refusal)

    def dial_again(self) -> bool:
        """Dial a connection libzmq gave up on after a refusal (a key authorized meanwhile gets
        in); True if it did. Once per refusal: the next attempt waits for the next refusal."""
        if not self._given_up:
            return False
        self._given_up = False
        with contextlib.suppress(zmq.ZMQError):  # already forgotten by libzmq: connect anew
            self.sock.disconnect(self.endpoint)
        self.sock.connect(self.endpoint)
        return True

    def close(self) -> None:
        """Stop monitoring (before the socket closes, or the context's term waits for it)."""
        if not self.monitor.closed:
            if not self.sock.closed:
                self.sock.disable_monitor()
            self.monitor.close(linger=0)
