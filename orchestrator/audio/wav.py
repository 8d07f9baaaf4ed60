"""WAV files: read any common WAV as mono float32 (whole or streamed), write mono PCM16.

Standard library + numpy. The RIFF chunks are parsed here rather than by the stdlib ``wave``
module, which in Python 3.11 refuses float and WAVE_FORMAT_EXTENSIBLE files; one parser for every
kind is simpler than two. :func:`open_wav` reads the header only and then decodes block by
block, so an hour-long file costs a block of memory, not a gigabyte.
"""

from __future__ import annotations

import io
import os
import struct
import wave
from pathlib import Path
from typing import IO, Any

import numpy as np

from orchestrator.audio.pcm import check_float_samples, check_sample_rate, float_to_pcm16, mono
from orchestrator.audio.stream import AudioInfo
from orchestrator.wire.errors import BadAudioError

_FORMAT_PCM, _FORMAT_IEEE_FLOAT, _FORMAT_EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
#: The KSDATAFORMAT_SUBTYPE GUID tail shared by the PCM and IEEE-float subformats.
_SUBFORMAT_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
#: A 'data' size a streaming writer leaves when it does not know the length yet.
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)
#: Chunks before 'data' (LIST, bext, ...) larger than this are skipped by seeking, not read.
_MAX_CHUNK_READ = 1 << 20

Source = str | os.PathLike[str] | IO[bytes]


class WavStream:
    """An open WAV file: ``info`` from its header, then mono float32 blocks from ``read``."""

    def __init__(self, source: Source) -> None:
        if isinstance(source, str | os.PathLike):
            self.name = os.fspath(source)
            self._file: IO[bytes] = open(source, "rb")  # noqa: SIM115 - closed by close()
            self._owned = True
        else:
            self.name = str(getattr(source, "name", "<file object>"))
            self._file, self._owned = source, False
        try:
            self._tag, self._bits, self._block_align, self._remaining, self.info = (
                self._read_header()
            )
        except BaseException:
            self.close()
            raise

    def _read_header(self) -> tuple[int, int, int, int | None, AudioInfo]:
        f, name = self._file, self.name
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise BadAudioError(f"{name}: not a RIFF/WAVE file (fix: convert it to WAV)")
        fmt_chunk = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                raise BadAudioError(f"{name}: WAV file has no 'data' chunk")
            chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"data":
                break
            if chunk_id == b"fmt " and size <= _MAX_CHUNK_READ:
                fmt_chunk = f.read(size)
                if size & 1:
                    f.read(1)  # chunks are padded to an even size
            else:
                _skip(f, size + (size & 1))
        if fmt_chunk is None or len(fmt_chunk) < 16:
            raise BadAudioError(f"{name}: WAV file has no valid 'fmt ' chunk before its data")
        tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", fmt_chunk)
        if tag == _FORMAT_EXTENSIBLE:
            if len(fmt_chunk) < 40 or fmt_chunk[26:40] != _SUBFORMAT_TAIL:
                raise BadAudioError(f"{name}: WAVE_FORMAT_EXTENSIBLE with an unsupported subformat")
            tag = struct.unpack_from("<H", fmt_chunk, 24)[0]
        if channels < 1 or rate < 1 or block_align != channels * bits // 8 or bits % 8:
            raise BadAudioError(
                f"{name}: inconsistent WAV header ({channels} channels, {rate} Hz, {bits} bits, "
                f"block align {block_align})"
            )
        if _decoder(tag, bits) is None:
            raise BadAudioError(
                f"{name}: unsupported WAV encoding (format tag 0x{tag:04x}, {bits} bits); "
                f"supported: PCM 8/16/24/32-bit, IEEE float 32/64-bit"
            )
        remaining = None if size in _UNKNOWN_SIZES else size
        frames = _frames_left(f, remaining, block_align)
        if frames == 0:
            raise BadAudioError(f"{name}: WAV file contains no audio")
        encoding = f"{'float' if tag == _FORMAT_IEEE_FLOAT else 'PCM'} {bits}-bit"
        return tag, bits, block_align, remaining, AudioInfo(rate, channels, frames, encoding)

    def read(self, frames: int) -> np.ndarray:
        """Up to ``frames`` mono float32 samples (empty at the end); channels are averaged."""
        want = frames * self._block_align
        if self._remaining is not None:
            want = min(want, self._remaining)
        raw = self._file.read(want) if want > 0 else b""
        raw = raw[: len(raw) // self._block_align * self._block_align]  # a truncated tail
        if self._remaining is not None:
            self._remaining -= len(raw)
        if not raw:
            return np.zeros(0, dtype=np.float32)
        decode = _decoder(self._tag, self._bits)
        assert decode is not None  # checked in the header
        samples = decode(raw)
        channels = self.info.channels
        if channels > 1:
            samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float64)
        return check_float_samples(samples)

    def close(self) -> None:
        if self._owned:
            self._file.close()

    def __enter__(self) -> WavStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_wav(source: Source) -> WavStream:
    """Open a WAV file (path or binary file object) for streamed reading; header checked now."""
    return WavStream(source)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 audio and its rate from a PCM (8/16/24/32-bit) or float (32/64-bit) WAV."""
    with open_wav(path) as stream:
        blocks = []
        while (block := stream.read(1 << 20)).size:
            blocks.append(block)
        return np.concatenate(blocks), stream.info.sample_rate


def _skip(f: IO[bytes], size: int) -> None:
    try:
        f.seek(size, io.SEEK_CUR)
    except (OSError, io.UnsupportedOperation):  # a pipe: read past it
        while size > 0:
            got = f.read(min(size, _MAX_CHUNK_READ))
            if not got:
                return
            size -= len(got)


def _frames_left(f: IO[bytes], declared: int | None, block_align: int) -> int | None:
    """Frames of the data chunk: its declared size clamped to what the file holds."""
    try:
        here = f.tell()
        end = f.seek(0, io.SEEK_END)
        f.seek(here)
    except (OSError, io.UnsupportedOperation):
        return None if declared is None else declared // block_align
    available = end - here
    size = available if declared is None else min(declared, available)
    return size // block_align


def _decoder(tag: int, bits: int) -> Any:
    """A function from raw interleaved bytes to float64 in [-1, 1], or None if unsupported."""
    if tag == _FORMAT_PCM and bits == 8:  # 8-bit WAV is unsigned, centred on 128
        return lambda raw: (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    if tag == _FORMAT_PCM and bits in (16, 32):
        return lambda raw: np.frombuffer(raw, dtype=f"<i{bits // 8}") / float(2 ** (bits - 1))
    if tag == _FORMAT_PCM and bits == 24:
        return _decode_pcm24
    if tag == _FORMAT_IEEE_FLOAT and bits in (32, 64):
        return lambda raw: np.frombuffer(raw, dtype=f"<f{bits // 8}").astype(np.float64)
    return None


def _decode_pcm24(raw: bytes) -> np.ndarray:
    b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
    value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    return ((value << 8) >> 8) / float(2**23)  # shift up and back to sign-extend


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono float audio in [-1, 1] as a 16-bit PCM WAV."""
    rate = check_sample_rate(sample_rate)
    pcm = float_to_pcm16(mono(np.asarray(audio)))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
