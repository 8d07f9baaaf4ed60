"""EchoPanel's binary WebSocket audio frames: parse, validate and build them.

EchoPanel sends, per audio source, frames of ``[b"EP"][version:u8][source:u8][mode:u8][PCM16 LE
mono ...]``. The example WebSocket server parses each frame here, turns every source into its own
stream, and forwards only frames whose mode asks for server-side ASR. A malformed frame raises
:class:`FrameError` with a stable ``reason`` the server puts in its error event, so one bad frame
never ends the connection or disturbs the other sources.

Decisions: source 0 is the microphone and 1 the system audio (the order EchoPanel lists them in);
any other value is refused rather than guessed at. A frame with a header and no PCM is valid (it
carries no audio; a sender may use it to announce a source), so only a frame shorter than the
header is "short". Standard library + numpy only.
"""

from __future__ import annotations

import dataclasses
import enum
import struct

import numpy as np

from orchestrator.audio.pcm import pcm16_to_float
from orchestrator.wire.errors import BadRequestError

MAGIC = b"EP"
#: The frame version this module speaks.
PROTOCOL_VERSION = 1
_HEADER = struct.Struct("<2sBBB")
HEADER_SIZE = _HEADER.size


class Source(enum.IntEnum):
    """Where a frame's audio was captured; each source is transcribed as its own stream."""

    MICROPHONE = 0
    SYSTEM_AUDIO = 1


class Mode(enum.IntEnum):
    """Who transcribes the frame's audio."""

    SERVER_ASR = 0x00
    ON_DEVICE = 0x01  # the app transcribes it itself: not ours
    HYBRID = 0x02  # the server decides, falling back when the device cannot


class FrameError(BadRequestError):
    """A malformed EchoPanel frame; ``reason`` is a stable short string a program can branch on.

    Reasons: ``short``, ``bad_magic``, ``version``, ``source``, ``mode``, ``odd_pcm``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, reason=reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True, slots=True)
class EchoPanelFrame:
    """One validated frame: its header fields and its PCM16 little-endian mono payload."""

    version: int
    source: Source
    mode: Mode
    pcm: bytes

    @property
    def wants_server_asr(self) -> bool:
        return wants_server_asr(self.mode)

    def samples(self) -> np.ndarray:
        """The payload as float32 in [-1, 1)."""
        return pcm16_to_float(self.pcm)


def wants_server_asr(mode: Mode | int) -> bool:
    """True for the modes whose audio the server transcribes (server ASR and hybrid)."""
    return mode in (Mode.SERVER_ASR, Mode.HYBRID)


def parse_frame(data: bytes | bytearray | memoryview) -> EchoPanelFrame:
    """Validate every field of a received frame; raises FrameError naming what is wrong."""
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise FrameError(
            "short",
            f"EchoPanel frame of {len(data)} bytes is shorter than its {HEADER_SIZE}-byte header",
        )
    magic, version, source, mode = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FrameError("bad_magic", f"EchoPanel frame starts with {magic!r}, expected {MAGIC!r}")
    return EchoPanelFrame(version, *_check_fields(version, source, mode, data[HEADER_SIZE:]))


def build_frame(
    pcm: bytes,
    *,
    source: Source | int = Source.MICROPHONE,
    mode: Mode | int = Mode.SERVER_ASR,
    version: int = PROTOCOL_VERSION,
) -> bytes:
    """A frame EchoPanel would send (tests and the example client use it); fields are validated."""
    source, mode, pcm = _check_fields(version, source, mode, bytes(pcm))
    return _HEADER.pack(MAGIC, version, source, mode) + pcm


def _check_fields(version: int, source: int, mode: int, pcm: bytes) -> tuple[Source, Mode, bytes]:
    if version != PROTOCOL_VERSION:
        raise FrameError(
            "version",
            f"EchoPanel frame version {version} is not supported (we speak {PROTOCOL_VERSION})",
        )
    try:
        source = Source(source)
    except ValueError:
        known = ", ".join(f"{s.value} ({s.name.lower()})" for s in Source)
        raise FrameError("source", f"unknown EchoPanel source {source}; known: {known}") from None
    try:
        mode = Mode(mode)
    except ValueError:
        known = ", ".join(f"0x{m.value:02x} ({m.name.lower()})" for m in Mode)
        raise FrameError("mode", f"unknown EchoPanel mode 0x{mode:02x}; known: {known}") from None
    if len(pcm) % 2:
        raise FrameError(
            "odd_pcm",
            f"EchoPanel PCM payload has an odd length ({len(pcm)} bytes); samples are 2 bytes",
        )
    return source, mode, pcm
