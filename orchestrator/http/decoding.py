"""An uploaded file's audio, as the 16 kHz PCM16 the coordinator's requests carry.

The audio front end (:func:`orchestrator.audio.decode.open_audio`: WAV, FLAC, OGG Opus/Vorbis,
MP3, M4A/AAC, WebM) reads the spooled upload block by block and resamples on the fly; here the
blocks become PCM16 at the rate every engine takes, so hosts need not resample. Errors name the
client's file name, never the server's temporary path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.audio.decode import SUPPORTED, read_pcm16
from orchestrator.wire.contract import ENGINE_SAMPLE_RATE
from orchestrator.wire.errors import BadAudioError

#: Rate of the audio the face sends: what every engine receives.
SEND_RATE_HZ = ENGINE_SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class DecodedUpload:
    """An upload's audio: mono PCM16 little-endian at SEND_RATE_HZ, and what was wrong with it."""

    pcm16: bytes
    duration_s: float
    warnings: tuple[str, ...] = ()


def decode_upload(path: Path, filename: str) -> DecodedUpload:
    """Decode the spooled upload at ``path``; errors name the client's ``filename``."""
    try:
        decoded = read_pcm16(path, SEND_RATE_HZ)
    except BadAudioError as exc:
        reason = exc.message.replace(str(path), "").lstrip(": ")
        raise BadAudioError(
            f"file {filename!r}: {reason} (send {SUPPORTED} audio)", filename=filename
        ) from None
    if not decoded.pcm16:
        raise BadAudioError(f"file {filename!r} holds no audio", filename=filename)
    warnings = tuple(w.replace(str(path), repr(filename)) for w in decoded.warnings)
    return DecodedUpload(decoded.pcm16, decoded.duration_s, warnings)
