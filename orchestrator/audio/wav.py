"""WAV files: read any common WAV as mono float32 (whole, or block by block), write mono PCM16.

Standard library + numpy. Other formats go through ``orchestrator.audio.decode``, which reads
WAVs with this module.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from orchestrator.audio.pcm import check_float_samples, check_sample_rate, float_to_pcm16, mono
from orchestrator.wire.errors import BadAudioError

_FORMAT_PCM, _FORMAT_IEEE_FLOAT, _FORMAT_EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
#: The KSDATAFORMAT_SUBTYPE GUID tail shared by the PCM and IEEE-float subformats.
_SUBFORMAT_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"

log = logging.getLogger("orchestrator.audio")


#: Frames per block when a WAV is read block by block: bounded memory whatever its length.
WAV_BLOCK_FRAMES = 1 << 16


@dataclasses.dataclass(frozen=True)
class WavLayout:
    """What a WAV's header says, and how much of its data the file really holds."""

    tag: int
    channels: int
    sample_rate: int
    bits: int
    block_align: int
    data_offset: int
    declared_bytes: int  # the data chunk's size field
    present_bytes: int  # what the file holds of it

    @property
    def frames(self) -> int:
        return self.present_bytes // self.block_align

    @property
    def declared_frames(self) -> int:
        return self.declared_bytes // self.block_align

    def header_problem(self, path: str | Path) -> str | None:
        """The warning for a data chunk that claims more than the file holds, else None."""
        if self.declared_bytes <= self.present_bytes:
            return None
        real_s = self.frames / self.sample_rate
        declared_s = self.declared_frames / self.sample_rate
        return (
            f"{path}: the WAV header declares {declared_s:.2f} s of audio but the file holds "
            f"{real_s:.2f} s ({declared_s - real_s:.2f} s missing: the file was cut short, or its "
            f"recorder never finished the header); using the {real_s:.2f} s present"
        )


def read_wav_layout(f: BinaryIO, path: str | Path) -> WavLayout:
    """Parse the RIFF chunks up to the data chunk, seeking past the rest.

    Parses them itself: the stdlib ``wave`` module of Python 3.11 refuses float and
    WAVE_FORMAT_EXTENSIBLE files, and one parser for every kind is simpler than two.
    """
    size = f.seek(0, 2)
    f.seek(0)
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise BadAudioError(f"{path}: not a RIFF/WAVE file")
    fmt_chunk, data = None, None
    pos = 12
    while pos + 8 <= size:
        f.seek(pos)
        chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
        if chunk_id == b"fmt ":
            fmt_chunk = f.read(min(chunk_size, 1024))
        elif chunk_id == b"data":
            data = (pos + 8, chunk_size)
            break
        pos += 8 + chunk_size + (chunk_size & 1)  # chunks are padded to an even size
    if fmt_chunk is None or len(fmt_chunk) < 16:
        raise BadAudioError(f"{path}: WAV file has no valid 'fmt ' chunk before its data")
    if data is None:
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
    if _decode_wav_samples(b"", tag, bits) is None:
        raise BadAudioError(
            f"{path}: unsupported WAV encoding (format tag 0x{tag:04x}, {bits} bits); "
            f"supported: PCM 8/16/24/32-bit, IEEE float 32/64-bit"
        )
    offset, declared = data
    layout = WavLayout(
        tag, channels, rate, bits, block_align, offset, declared, min(declared, size - offset)
    )
    if layout.frames == 0:
        declared_s = layout.declared_frames / rate
        cut = f" (its header declares {declared_s:.2f} s: the file was cut)" if declared else ""
        raise BadAudioError(f"{path}: WAV file contains no audio{cut}")
    return layout


def iter_wav_blocks(
    f: BinaryIO, layout: WavLayout, block_frames: int = WAV_BLOCK_FRAMES
) -> Iterator[np.ndarray]:
    """The data as mono float32 blocks (channels averaged), never the whole file at once."""
    f.seek(layout.data_offset)
    left = layout.frames
    while left > 0:
        n = min(block_frames, left)
        raw = f.read(n * layout.block_align)
        n = len(raw) // layout.block_align
        if n == 0:
            return  # the file shrank while we read it
        left -= n
        frames = _decode_wav_samples(raw[: n * layout.block_align], layout.tag, layout.bits)
        assert frames is not None  # the encoding was checked with the header
        yield check_float_samples(frames.reshape(-1, layout.channels).mean(axis=1))


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 audio and its rate from a PCM (8/16/24/32-bit) or float (32/64-bit) WAV.

    Multi-channel audio is downmixed by averaging the channels. A data chunk that claims more
    than the file holds is read as far as it goes, with a logged warning saying what is missing.
    """
    with open(path, "rb") as f:
        layout = read_wav_layout(f, path)
        problem = layout.header_problem(path)
        if problem:
            log.warning("%s", problem)
        return np.concatenate(list(iter_wav_blocks(f, layout))), layout.sample_rate


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
