"""WAV files: read any common WAV as mono float32, write mono PCM16 (standard library + numpy)."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np

from orchestrator.audio.pcm import check_float_samples, check_sample_rate, float_to_pcm16, mono
from orchestrator.wire.errors import BadAudioError

_FORMAT_PCM, _FORMAT_IEEE_FLOAT, _FORMAT_EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
#: The KSDATAFORMAT_SUBTYPE GUID tail shared by the PCM and IEEE-float subformats.
_SUBFORMAT_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 audio and its rate from a PCM (8/16/24/32-bit) or float (32/64-bit) WAV.

    Parses the RIFF chunks itself: the stdlib ``wave`` module of Python 3.11 refuses float and
    WAVE_FORMAT_EXTENSIBLE files, and one parser for every kind is simpler than two.
    Multi-channel audio is downmixed by averaging the channels.
    """
    data = Path(path).read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise BadAudioError(f"{path}: not a RIFF/WAVE file")
    fmt_chunk, samples = None, None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8 : pos + 8 + size]  # a truncated or streaming-size chunk is clamped
        if chunk_id == b"fmt ":
            fmt_chunk = body
        elif chunk_id == b"data":
            samples = body
            break
        pos += 8 + size + (size & 1)  # chunks are padded to an even size
    if fmt_chunk is None or len(fmt_chunk) < 16:
        raise BadAudioError(f"{path}: WAV file has no valid 'fmt ' chunk before its data")
    if samples is None:
        raise BadAudioError(f"{path}: WAV file has no 'data' chunk")
    tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", fmt_chunk)
    if tag == _FORMAT_EXTENSIBLE:
        if len(fmt_chunk) < 40 or fmt_chunk[26:40] != _SUBFORMAT_TAIL:
            raise BadAudioError(f"{path}: WAVE_FORMAT_EXTENSIBLE with an unsupported subformat")
        tag = struct.unpack_from("<H", fmt_chunk, 24)[0]
    if channels < 1 or rate < 1 or block_align != channels * bits // 8 or bits % 8:
        raise BadAudioError(
            f"{path}: inconsistent WAV header ({channels} channels, {rate} Hz, {bits} bits, "
            f"block align {block_align})"
        )
    frames = _decode_wav_samples(samples[: len(samples) // block_align * block_align], tag, bits)
    if frames is None:
        raise BadAudioError(
            f"{path}: unsupported WAV encoding (format tag 0x{tag:04x}, {bits} bits); "
            f"supported: PCM 8/16/24/32-bit, IEEE float 32/64-bit"
        )
    if frames.size == 0:
        raise BadAudioError(f"{path}: WAV file contains no audio")
    mono = frames.reshape(-1, channels).mean(axis=1, dtype=np.float64)
    return check_float_samples(mono), rate


def _decode_wav_samples(raw: bytes, tag: int, bits: int) -> np.ndarray | None:
    """Interleaved samples as float64 in [-1, 1], or None for an encoding we do not read."""
    if tag == _FORMAT_PCM and bits == 8:  # 8-bit WAV is unsigned, centred on 128
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    if tag == _FORMAT_PCM and bits in (16, 32):
        return np.frombuffer(raw, dtype=f"<i{bits // 8}") / float(2 ** (bits - 1))
    if tag == _FORMAT_PCM and bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        return ((value << 8) >> 8) / float(2**23)  # shift up and back to sign-extend
    if tag == _FORMAT_IEEE_FLOAT and bits in (32, 64):
        return np.frombuffer(raw, dtype=f"<f{bits // 8}").astype(np.float64)
    return None


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono float audio in [-1, 1] as a 16-bit PCM WAV."""
    rate = check_sample_rate(sample_rate)
    pcm = float_to_pcm16(mono(np.asarray(audio)))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
