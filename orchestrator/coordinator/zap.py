"""The ZAP handler: who may open a TCP connection to this coordinator (RFC 27, ZeroMQ's own).

libzmq asks the handler bound at ``inproc://zeromq.zap.01`` of a context about every handshake
on a socket with a ZAP domain. This one runs on the broker's thread (its socket sits in the
broker's poller), so its counters are plain state the health snapshot reads:

- ``CURVE``: the client's public key must be in the domain's allow-list (``hosts`` for hosts
  dialling in, ``clients`` for remote clients); the reply's User-Id is the key's name, which the
  broker reads back from every message of that connection.
- ``NULL`` (plaintext): only where plaintext was asked for, and only from a loopback address.
- anything else (PLAIN passwords, GSSAPI): refused.

The allow-lists are read again from their folders (at most once a second, when a handshake
asks), so ``keys authorize`` lets a key in and ``keys revoke`` keeps it out from its next
handshake on, without restarting the coordinator (a live connection stays up until it drops:
restart that host, or the client, to cut it).

Bind it before any Curve socket binds: with no handler, libzmq lets every client key in.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import zmq
import zmq.utils.z85

from orchestrator.wire.errors import ConfigError

log = logging.getLogger("orchestrator.coordinator.zap")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_VERSION = b"1.0"
#: Refused connections remembered (by address) for health, newest last.
RECENT_REFUSALS = 16
#: How often at most the allow-list folders are read again (on a handshake, not on a timer).
ALLOW_LIST_RELOAD_INTERVAL_S = 1.0

#: Domain -> public key (Z85 text, as in key files) -> the key's name.
AllowLists = Mapping[str, Mapping[bytes, str]]


class ZapHandler:
    """Answers ZAP requests from the allow-lists; counts what it accepted and refused."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        allow_lists: AllowLists,
        *,
        plaintext_domains: frozenset[str] = frozenset(),
        reload: Callable[[], AllowLists] | None = None,
    ) -> None:
        """``reload`` reads the allow-lists again (from their folders); None keeps them fixed."""
        self._allowed = _raw_keys(allow_lists)
        self._reload = reload
        self._loaded_at = time.monotonic()
        self._plaintext = plaintext_domains
        self.sock: zmq.Socket[Any] = ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(ZAP_ENDPOINT)
        self.accepted: collections.Counter[str] = collections.Counter()
        self.refused: collections.Counter[str] = collections.Counter()
        self.recent_refusals: collections.deque[dict[str, str]] = collections.deque(
            maxlen=RECENT_REFUSALS
        )

    def handle_pending(self) -> None:
        """Answer every waiting request (the broker calls this when the socket is readable)."""
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.sock.send_multipart(self.answer(frames))

    def answer(self, frames: list[bytes]) -> list[bytes]:
        """The reply frames for one request (pure apart from the counters: unit-tested)."""
        if len(frames) < 6 or frames[0] != ZAP_VERSION:
            request_id = frames[1] if len(frames) > 1 else b""
            return self._refuse(request_id, "?", "?", "malformed ZAP request", "malformed")
        _, request_id, domain_b, address_b, _identity, mechanism = frames[:6]
        credentials = frames[6:]
        domain, address = domain_b.decode(errors="replace"), address_b.decode(errors="replace")
        if mechanism == b"CURVE" and len(credentials) == 1:
            name = self._current_allow_lists().get(domain, {}).get(credentials[0])
            if name is None:
                key = (
                    zmq.utils.z85.encode(credentials[0]).decode()
                    if len(credentials[0]) == 32
                    else "?"
                )
                return self._refuse(
                    request_id, domain, address, f"unknown key {key}", "unknown_key"
                )
            return self._accept(request_id, domain, name)
        if mechanism == b"NULL":
            if domain in self._plaintext and _is_loopback(address):
                return self._accept(request_id, domain, "plaintext-loopback")
            return self._refuse(
                request_id, domain, address, "plaintext not allowed here", "plaintext"
            )
        return self._refuse(
            request_id, domain, address, f"mechanism {mechanism!r} not supported", "mechanism"
        )

    def _current_allow_lists(self) -> dict[str, dict[bytes, str]]:
        """The allow-lists, read again if the last read is over a second old. A folder that
        cannot be read keeps the lists as they were, with one warning naming the fix."""
        now = time.monotonic()
        if self._reload is not None and now - self._loaded_at >= ALLOW_LIST_RELOAD_INTERVAL_S:
            self._loaded_at = now
            try:
                self._allowed = _raw_keys(self._reload())
            except (ConfigError, OSError) as exc:
                log.warning("allow-lists not re-read, the previous ones stay: %s", exc)
        return self._allowed

    def _accept(self, request_id: bytes, domain: str, name: str) -> list[bytes]:
        self.accepted[domain] += 1
        return [ZAP_VERSION, request_id, b"200", b"OK", name.encode(), b""]

    def _refuse(
        self, request_id: bytes, domain: str, address: str, why: str, reason: str
    ) -> list[bytes]:
        self.refused[reason] += 1
        self.recent_refusals.append({"domain": domain, "address": address, "reason": why})
        log.warning("refused a %s connection from %s: %s", domain, address, why)
        return [ZAP_VERSION, request_id, b"400", why.encode()[:255], b"", b""]

    def stats(self) -> dict[str, Any]:
        """This handler's part of health: never a key, only names, counts and addresses."""
        return {
            "accepted": dict(self.accepted),
            "refused": dict(self.refused),
            "refused_total": sum(self.refused.values()),
            "recent_refusals": list(self.recent_refusals),
        }

    def close(self) -> None:
        self.sock.close(linger=0)


def _raw_keys(allow_lists: AllowLists) -> dict[str, dict[bytes, str]]:
    """Allow-lists keyed by the raw 32-byte keys ZAP hands over (key files hold Z85 text)."""
    return {
        domain: {zmq.utils.z85.decode(public): name for public, name in keys.items()}
        for domain, keys in allow_lists.items()
    }


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
