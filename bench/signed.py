"""The signed floor: the bare baselines plus exactly the work our protocol obliges every hop to do.

The protocol (``orchestrator.wire.protocol``) asks every receiver to verify an HMAC-SHA256 over
all frames, refuse replays and parse a JSON header, and every sender to write a JSON header and
sign the frames; a relay must give each request an id of its own on the hosts' side and sign
with the hosts' key there, the clients' key on the way back. This module does that and nothing
else, with the real :class:`~orchestrator.wire.protocol.Codec`, on the loops of ``bench.bare``
(hooks, not copies) with our processes' frame helpers and held sends
(``bench.bare.wire_calls``):

* the clients (``bench.signed_clients``) send a header with the fields our client's
  ``transcribe`` sends, encoded and signed with the 640-byte payload, and decode each reply for
  its id;
* :class:`SignedRelay` (broker): decode each client message (verify, replay check, JSON),
  remember (client identity, client id) under a new number, send it on with that number as its
  id under a fresh signature with the host key; on the reply, decode, put the client's id back,
  sign with the client key. Two codecs, like the coordinator's broker. No routing table, no
  deadlines, no typed bodies;
* :class:`SignedWorker`: decode each request, answer a RESULT whose header has the shape and
  size of the synthetic host's, encoded and signed. No audio decoding, no engine.

The keys are random per run and reach the child processes in environment variables set for that
child only (never on argv, where any user could read them): the broker gets both, the worker
only the host key. Run as ``python -m bench.signed broker FRONT BACK`` / ``worker ENDPOINT``
(:func:`bench.harness.signed_child`), or the broker on a thread with
``bench.bare.ThreadBroker(..., SignedRelay(keys), wire_calls())``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from bench.bare import Handler, SocketCalls, run_broker, run_worker, wire_calls
from orchestrator.wire.errors import ProtocolError
from orchestrator.wire.protocol import KEY_BYTES, Codec, DropCounter, Kind, Message, new_key

#: Environment variables that hand a child its signing keys (hex).
CLIENT_KEY_ENV = "ORC_BENCH_CLIENT_KEY"
HOST_KEY_ENV = "ORC_BENCH_HOST_KEY"

#: The answer's body: the shape and size of the synthetic engine's result for a 20 ms chunk
#: (its fingerprint text, one segment, the fingerprint again under ``extra``), built once.
RESULT_BODY: dict[str, Any] = {
    "text": "n=320 sum=-99212 sq=6.672316e+09 first=2592 last=-688",
    "segments": [
        {"start": 0.0, "end": 0.02, "text": "n=320 sum=-99212 sq=6.672316e+09 first=2592 last=-688"}
    ],
    "language": "en",
    "prompt_tokens": 0,
    "generation_tokens": 5,
    "extra": {
        "fingerprint": {"n": 320, "sum": -99212, "sq": 6672316194.0, "first": 2592, "last": -688}
    },
}


@dataclass(frozen=True)
class Keys:
    """One run's two signing keys: clients <-> broker, broker <-> worker."""

    client: bytes
    host: bytes

    @classmethod
    def new(cls) -> Keys:
        return cls(new_key(), new_key())

    def broker_env(self) -> dict[str, str]:
        return {CLIENT_KEY_ENV: self.client.hex(), HOST_KEY_ENV: self.host.hex()}

    def worker_env(self) -> dict[str, str]:
        """The worker's keys: the host key only, as a host never learns the client key."""
        return {HOST_KEY_ENV: self.host.hex()}


def key_from_env(name: str) -> bytes:
    """A key handed over in the environment, removed from it once read."""
    try:
        key = bytes.fromhex(os.environ.pop(name, ""))
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise SystemExit(
            f"{name} holds no {KEY_BYTES}-byte hex key "
            "(fix: start this role with bench.harness.signed_child)"
        )
    return key


def decode(codec: Codec, drops: DropCounter, frames: Sequence[zmq.Frame]) -> Message | None:
    """The message, or None for frames the protocol refuses (counted and dropped)."""
    try:
        return codec.decode([f.buffer for f in frames])
    except ProtocolError as exc:
        drops.add(exc)
        return None


class SignedRelay:
    """The broker's part of the protocol (see the module docstring); a ``bench.bare.Relay``."""

    def __init__(self, keys: Keys) -> None:
        self.client_codec = Codec(keys.client)
        self.host_codec = Codec(keys.host)
        self.drops = DropCounter()
        self._numbers = itertools.count(1)
        #: Per request number on the hosts' side: the client's identity and its own id.
        self._pending: dict[int, tuple[bytes, Any]] = {}

    def to_worker(self, frames: list[zmq.Frame]) -> Sequence[Any] | None:
        msg = decode(self.client_codec, self.drops, frames[1:])
        if msg is None:
            return None
        number = next(self._numbers)
        self._pending[number] = (frames[0].bytes, msg.header.get("id"))
        msg.header["id"] = number
        return self.host_codec.encode(msg)

    def to_client(self, frames: list[zmq.Frame]) -> Sequence[Any] | None:
        msg = decode(self.host_codec, self.drops, frames)
        if msg is None:
            return None
        entry = self._pending.pop(msg.header.get("id"), None)
        if entry is None:  # not a request of ours (or answered twice)
            return None
        client, msg.header["id"] = entry
        return [client, *self.client_codec.encode(msg)]


class SignedWorker:
    """The host's part of the protocol: each request decoded, answered by a signed RESULT."""

    def __init__(self, sock: zmq.Socket[Any], calls: SocketCalls, key: bytes) -> None:
        self.sock, self.calls = sock, calls
        self.codec = Codec(key)
        self.drops = DropCounter()

    def __call__(self, frames: list[zmq.Frame]) -> None:
        msg = decode(self.codec, self.drops, frames)
        if msg is None:
            return
        header = {
            "id": msg.header.get("id"),
            "result": RESULT_BODY,
            "host_queued_s": 0.0,
            "load_s": 0.0,
            "compute_s": 0.0,
        }
        self.calls.send(self.sock, self.codec.encode(Message(Kind.RESULT, header)))


def signed_worker(sock: zmq.Socket[Any], calls: SocketCalls) -> Handler:
    """The worker's handler, keyed from the environment (``python -m bench.signed worker``)."""
    return SignedWorker(sock, calls, key_from_env(HOST_KEY_ENV))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.signed", description=__doc__)
    sub = parser.add_subparsers(dest="role", required=True)
    broker = sub.add_parser("broker")
    broker.add_argument("frontend")
    broker.add_argument("backend")
    worker = sub.add_parser("worker")
    worker.add_argument("endpoint")
    args = parser.parse_args(argv)
    if args.role == "broker":
        keys = Keys(key_from_env(CLIENT_KEY_ENV), key_from_env(HOST_KEY_ENV))
        run_broker(args.frontend, args.backend, SignedRelay(keys), wire_calls())
    else:
        run_worker(args.endpoint, signed_worker, wire_calls())
    return 0


if __name__ == "__main__":
    sys.exit(main())
