"""Registration of a host that dials in from another machine: HELLO and WELCOME.

A spawned host gets its signing key on its stdin pipe. A host on another machine has no pipe, so
the key travels inside the CurveZMQ channel, after the coordinator's ZAP handler has checked the
host's public key against its allow-list::

    host -> coordinator   HELLO   {host: KIND, pid, hostname}
    coordinator -> host   WELCOME {replica, key, heartbeat_interval_s, orphan_timeout_s, ...}
                          or WELCOME {error: {...}} (unknown kind, every slot taken)

Both are framed by the ordinary codec under a fixed, public registration key: its HMAC proves
nothing, Curve (encryption and the client key the ZAP handler checked) is what protects them,
and the coordinator accepts nothing but HELLO under it. Everything after WELCOME is signed with
the key WELCOME carried, fresh for each coordinator run, never written to disk or logged.
Standard library only: hosts import this.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from orchestrator.wire.contract import SegmenterSettings
from orchestrator.wire.protocol import Codec, Kind, Message

#: Public on purpose (see the module docstring): framing for HELLO/WELCOME only.
REGISTRATION_KEY = b"orchestrator dial-in registration, protected by CurveZMQ"


def registration_codec(max_message_bytes: int = 64 * 1024) -> Codec:
    return Codec(REGISTRATION_KEY, max_message_bytes=max_message_bytes)


def hello(host_kind: str, pid: int, hostname: str) -> Message:
    return Message(Kind.HELLO, {"host": host_kind, "pid": pid, "hostname": hostname})


@dataclasses.dataclass(frozen=True)
class Welcome:
    """What a registered host needs from the coordinator: its name, the key, the timings."""

    replica: str
    key: bytes = dataclasses.field(repr=False)
    heartbeat_interval_s: float
    #: The host resets and dials in again after hearing nothing this long.
    orphan_timeout_s: float
    max_message_bytes: int
    segmenter: SegmenterSettings
    hello_interval_s: float

    def to_message(self) -> Message:
        header: dict[str, Any] = dataclasses.asdict(self)
        header["key"] = self.key.hex()
        return Message(Kind.WELCOME, header)

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> Welcome:
        return cls(
            replica=str(header["replica"]),
            key=bytes.fromhex(str(header["key"])),
            heartbeat_interval_s=float(header["heartbeat_interval_s"]),
            orphan_timeout_s=float(header["orphan_timeout_s"]),
            max_message_bytes=int(header["max_message_bytes"]),
            segmenter=SegmenterSettings(**header["segmenter"]),
            hello_interval_s=float(header["hello_interval_s"]),
        )


def refusal(error: Any) -> Message:
    """A WELCOME that says no, with a typed error naming the cause and the fix."""
    return Message(Kind.WELCOME, {"error": error.to_wire()})
