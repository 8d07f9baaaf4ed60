"""Audio validation and conversion: wire payloads, sample rates, resampling and WAV files.

The client calls :func:`encode_audio` before sending; the host runtime calls
:func:`decode_payload` and :func:`resample` after receiving, so every engine gets mono float32 in
[-1, 1] at its own rate. Bad audio is refused here, where the cause is known, with a
``BadAudioError`` that says what is wrong and what to do. Standard library + numpy only: the host
runtime imports this module inside envs we do not control.

Resampling is a polyphase windowed-sinc (Kaiser) filter at the rational ratio ``dst/src``. When
downsampling it is flat to 99% of the output's Nyquist frequency and alias-free (>= 80 dB) below
90% of it; the narrow band just under Nyquist may hold attenuated aliases, the price of a short
filter (speech has little energy there). When upsampling it leaves no images. A 60 s file at
44.1 or 48 kHz takes about half a second. :class:`Resampler` keeps state across chunks, so a
stream resampled chunk by chunk equals the whole stream resampled at once; :func:`resample` is
its one-shot form.
"""

from __future__ import annotations

import enum
import functools
import math
import operator
import struct
import wave
from pathlib import Path

import numpy as np

from orchestrator.errors import BadAudioError

MIN_SAMPLE_RATE_HZ = 8_000
MAX_SAMPLE_RATE_HZ = 192_000
#: Float samples up to this magnitude are clipped to [-1, 1] (filter ringing, a hot mix); beyond
#: it the data is not normalised audio (e.g. int16 values sent as floats) and is refused.
MAX_FLOAT_MAGNITUDE = 1.5
#: Downsampling filter: flat up to this fraction of the output's Nyquist frequency, attenuated by
#: RESAMPLE_STOPBAND_DB from the stopband fraction on. Aliases of the band between Nyquist and the
#: stopband fold onto the top 10% of the output band, so the output is alias-free below 90% of
#: Nyquist (7.2 kHz at 16 kHz) and keeps real content up to 99% (7.92 kHz).
DOWN_PASSBAND_FRACTION = 0.99
DOWN_STOPBAND_FRACTION = 1.1
#: Upsampling has no content above the input's Nyquist to keep, so its filter stops there and
#: leaves no images of the input band in the output.
UP_PASSBAND_FRACTION = 0.9
UP_STOPBAND_FRACTION = 1.0
RESAMPLE_STOPBAND_DB = 80.0
#: Outputs computed per vectorised block; bounds the temporary (block x taps) matrix.
_RESAMPLE_BLOCK_OUTPUTS = 16_384
_PCM16_SCALE = 32_768.0


class AudioFormat(enum.StrEnum):
    """Sample formats of an audio payload frame on the wire."""

    PCM16 = "pcm16"  # little-endian int16
    F32 = "f32"  # little-endian float32


def check_sample_rate(sample_rate: object) -> int:
    """The sample rate as an int, or BadAudioError if it is not a whole number in range."""
    if isinstance(sample_rate, bool):
        raise BadAudioError(f"sample rate must be an integer in Hz, got {sample_rate!r}")
    try:
        rate = operator.index(sample_rate)  # ints and numpy ints; refuses 16000.5 and "16000"
    except TypeError:
        raise BadAudioError(
            f"sample rate must be an integer in Hz, got {sample_rate!r}",
            sample_rate=repr(sample_rate),
        ) from None
    if not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
        raise BadAudioError(
            f"sample rate {rate} Hz is outside [{MIN_SAMPLE_RATE_HZ}, {MAX_SAMPLE_RATE_HZ}] Hz",
            sample_rate=rate,
        )
    return rate


def check_float_samples(samples: np.ndarray) -> np.ndarray:
    """Finite float samples as float32 clipped to [-1, 1]; garbage raises BadAudioError."""
    x = np.asarray(samples, dtype=np.float32)
    if x.size == 0:
        return x.copy()
    if not np.isfinite(x).all():
        raise BadAudioError("audio contains NaN or infinite samples")
    peak = float(np.abs(x).max())
    if peak > MAX_FLOAT_MAGNITUDE:
        raise BadAudioError(
            f"float audio must be normalised to [-1, 1], but its peak is {peak:.4g} "
            f"(int16 values sent as floats? divide by 32768)",
            peak=peak,
        )
    return np.clip(x, -1.0, 1.0)


def pcm16_to_float(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Little-endian int16 bytes as float32 in [-1, 1)."""
    data = memoryview(data).cast("B")  # lengths in bytes, whatever view the caller holds
    if len(data) % 2:
        raise BadAudioError(
            f"PCM16 payload has an odd length ({len(data)} bytes); samples are 2 bytes"
        )
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(_PCM16_SCALE)


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """Float audio in [-1, 1] as little-endian int16 bytes (the inverse of pcm16_to_float)."""
    x = check_float_samples(samples).astype(np.float64) * _PCM16_SCALE
    return np.clip(np.rint(x), -32_768, 32_767).astype("<i2").tobytes()


def decode_payload(
    data: bytes | bytearray | memoryview,
    fmt: AudioFormat | str,
    sample_rate: object,
    *,
    allow_empty: bool = False,
) -> np.ndarray:
    """A received payload as mono float32 in [-1, 1]; stream chunks may pass allow_empty."""
    check_sample_rate(sample_rate)
    data = memoryview(data).cast("B")
    try:
        fmt = AudioFormat(fmt)
    except ValueError:
        known = ", ".join(f.value for f in AudioFormat)
        raise BadAudioError(f"unknown sample format {fmt!r}; expected one of: {known}") from None
    if fmt is AudioFormat.PCM16:
        samples = pcm16_to_float(data)
    else:
        if len(data) % 4:
            raise BadAudioError(f"f32 payload length {len(data)} bytes is not a multiple of 4")
        samples = check_float_samples(np.frombuffer(data, dtype="<f4"))
    if samples.size == 0 and not allow_empty:
        raise BadAudioError("audio is empty")
    return samples


def encode_audio(
    audio: bytes | bytearray | memoryview | np.ndarray, sample_rate: object
) -> tuple[bytes, AudioFormat]:
    """The payload and format a client sends: bytes are PCM16, int16 arrays too, floats f32."""
    check_sample_rate(sample_rate)
    if isinstance(audio, bytes | bytearray | memoryview):
        pcm16_to_float(audio)  # validates the length before anything is sent
        payload, fmt = bytes(audio), AudioFormat.PCM16
    elif isinstance(audio, np.ndarray):
        x = _mono(audio)
        if x.dtype.kind == "i" and x.dtype.itemsize == 2:  # int16 of either byte order
            payload, fmt = x.astype("<i2").tobytes(), AudioFormat.PCM16
        elif np.issubdtype(x.dtype, np.floating):
            payload, fmt = (
                check_float_samples(x).astype("<f4").tobytes(),
                AudioFormat.F32,
            )
        else:
            raise BadAudioError(
                f"audio arrays must be int16 or float, got {x.dtype}; convert with "
                f"astype(np.int16) or scale to float in [-1, 1]"
            )
    else:
        raise BadAudioError(
            f"audio must be PCM16 bytes or a numpy array, got {type(audio).__name__}"
        )
    if not payload:
        raise BadAudioError("audio is empty")
    return payload, fmt


def _mono(audio: np.ndarray) -> np.ndarray:
    if audio.ndim == 2 and audio.shape[1] == 1:
        return audio[:, 0]
    if audio.ndim != 1:
        raise BadAudioError(
            f"audio must be mono, shape (n,) or (n, 1); got shape {audio.shape}. "
            f"Downmix first, e.g. audio.mean(axis=1) for (n, channels) audio"
        )
    return audio


# --- resampling -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)  # a few rates recur; odd ones make big tables
def _polyphase_taps(up: int, down: int) -> tuple[np.ndarray, int]:
    """Kaiser-windowed sinc split into ``up`` phases: (taps[phase, k] float32, half-length)."""
    lower_nyquist = 0.5 / max(up, down)  # in cycles per sample of the upsampled signal
    if up > down:
        passband, stopband = UP_PASSBAND_FRACTION, UP_STOPBAND_FRACTION
    else:
        passband, stopband = DOWN_PASSBAND_FRACTION, DOWN_STOPBAND_FRACTION
    passband, stopband = passband * lower_nyquist, stopband * lower_nyquist
    cutoff, width = (passband + stopband) / 2, stopband - passband
    atten = RESAMPLE_STOPBAND_DB
    beta = 0.1102 * (atten - 8.7)  # Kaiser's formulas for a given attenuation and width
    n_taps = math.ceil((atten - 7.95) / (2.285 * 2 * math.pi * width)) + 1
    half = math.ceil(n_taps / (2 * up))  # in input samples
    length = 2 * half * up + 1
    t = np.arange(length) - half * up
    h = 2 * cutoff * np.sinc(2 * cutoff * t) * np.kaiser(length, beta)
    padded = np.zeros((2 * half + 1) * up)
    padded[:length] = h
    # Output m sits at upsampled position m*down = b*up + p; input b+d is weighted by
    # h[half*up + p - d*up], i.e. row (2*half - (d+half)) of the (rows, up) view at column p.
    taps = padded.reshape(2 * half + 1, up)[::-1].T.copy()
    taps /= taps.sum(axis=1, keepdims=True)  # unit DC gain in every phase: no phase-rate ripple
    return taps.astype(np.float32), half


class Resampler:
    """Streaming rational resampler; feed chunks to ``process`` and end with ``flush``.

    The output of all chunks plus the flush equals ``resample`` of their concatenation: ceil(n *
    dst / src) samples, aligned so that output sample 0 is input sample 0.
    """

    def __init__(self, src_hz: int, dst_hz: int) -> None:
        rates = (src_hz, dst_hz)
        try:
            src_hz, dst_hz = (operator.index(r) for r in rates)
        except TypeError:
            src_hz = dst_hz = 0
        if min(src_hz, dst_hz) <= 0:
            raise BadAudioError(f"sample rates must be positive integers, got {rates!r}")
        g = math.gcd(src_hz, dst_hz)
        self.up, self.down = dst_hz // g, src_hz // g
        self._taps, self._half = _polyphase_taps(self.up, self.down)
        self._buf = np.zeros(self._half, dtype=np.float32)  # zeros stand for x[-half:0]
        self._buf_start = -self._half  # input index of _buf[0]
        self._n_in = 0
        self._next_out = 0

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Output samples whose filter window the input so far covers."""
        x = np.asarray(chunk, dtype=np.float32)
        self._buf = np.concatenate([self._buf, x])
        self._n_in += x.size
        # Output m needs input b + half, b = m*down // up: ready while b + half < n_in.
        ready = -(-(self._n_in - self._half) * self.up // self.down)
        return self._emit(max(ready, self._next_out))

    def flush(self) -> np.ndarray:
        """The remaining outputs, treating the input after the end as silence; ends the stream."""
        self._buf = np.concatenate([self._buf, np.zeros(self._half, dtype=np.float32)])
        return self._emit(-(-self._n_in * self.up // self.down))

    def _emit(self, stop: int) -> np.ndarray:
        if stop <= self._next_out:
            return np.zeros(0, dtype=np.float32)
        out = np.empty(stop - self._next_out, dtype=np.float32)
        width = self._taps.shape[1]
        windows = np.lib.stride_tricks.sliding_window_view(self._buf, width)
        for lo in range(self._next_out, stop, _RESAMPLE_BLOCK_OUTPUTS):
            m = np.arange(lo, min(lo + _RESAMPLE_BLOCK_OUTPUTS, stop), dtype=np.int64)
            base, phase = np.divmod(m * self.down, self.up)
            rows = windows[base - self._half - self._buf_start]
            if self.up == 1:  # integer decimation: one phase, a plain matrix-vector product
                y = rows @ self._taps[0]
            else:
                y = np.einsum("mk,mk->m", rows, self._taps[phase])
            out[lo - self._next_out : lo - self._next_out + m.size] = y
        self._next_out = stop
        keep_from = self._next_out * self.down // self.up - self._half  # first input still needed
        self._buf = self._buf[keep_from - self._buf_start :].copy()
        self._buf_start = keep_from
        return out


def resample(x: np.ndarray, src_hz: int, dst_hz: int) -> np.ndarray:
    """Band-limited resampling of mono float audio; returns the input itself when rates match."""
    if src_hz == dst_hz:
        return x
    resampler = Resampler(src_hz, dst_hz)
    return np.concatenate([resampler.process(x), resampler.flush()])


# --- WAV files --------------------------------------------------------------------------------

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
    pcm = float_to_pcm16(_mono(np.asarray(audio)))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
