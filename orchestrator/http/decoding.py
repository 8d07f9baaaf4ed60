"""An uploaded file's audio, as the 16 kHz PCM16 the coordinator's requests carry.

PLACEHOLDER(w12-audio): until the audio front end (``orchestrator.audio.decode``: WAV, FLAC, OGG,
MP3, M4A, WebM with ``AudioInfo``) is merged, this reads WAV only, with ``orchestrator.audio.wav``.
After the merge, :func:`decode_upload` opens the file with ``open_audio`` and resamples its blocks
on the fly; nothing else in the HTTP face changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.audio.pcm import float_to_pcm16
from orchestrator.audio.resample import resample
from orchestrator.audio.wav import read_wav
from orchestrator.wire.contract import ENGINE_SAMPLE_RATE
from orchestrator.wire.errors import BadAudioError

#: Rate of the audio the face sends: what every engine receives, so hosts need not resample.
SEND_RATE_HZ = ENGINE_SAMPLE_RATE
#: What the face can decode now (named in the 400 for anything else).
SUPPORTED = "WAV"


@dataclass(frozen=True, slots=True)
class DecodedUpload:
    """An upload's audio: mono PCM16 little-endian at SEND_RATE_HZ."""

    pcm16: bytes
    duration_s: float


def decode_upload(path: Path, filename: str) -> DecodedUpload:
    """Decode the spooled upload at ``path``; errors name the client's ``filename``."""
    try:
        audio, rate = read_wav(path)
    except BadAudioError as exc:
        reason = exc.message.replace(str(path), "").lstrip(": ")
        raise BadAudioError(
            f"file {filename!r}: {reason}; send {SUPPORTED} audio", filename=filename
        ) from None
    if audio.size == 0:
        raise BadAudioError(f"file {filename!r} holds no audio", filename=filename)
    audio = resample(audio, rate, SEND_RATE_HZ)
    return DecodedUpload(float_to_pcm16(audio), audio.size / SEND_RATE_HZ)
