"""PCM payloads: sample-rate checks, float/int16 conversion, wire payload encode and decode.

The client calls :func:`encode_audio` before sending; the host runtime calls
:func:`decode_payload` after receiving, so every engine gets mono float32 in [-1, 1]. Bad audio is
refused here, where the cause is known, with a ``BadAudioError`` that says what is wrong and what
to do. Standard library + numpy only: the host runtime imports this inside envs we do not control.
"""

from __future__ import annotations

import numpy as np

from orchestrator.wire.errors import BadAudioError
from orchestrator.wire.formats import (  # noqa: F401  (re-exported: the audio API)
    FORMATS_BY_NAME,
    MAX_SAMPLE_RATE_HZ,
    MIN_SAMPLE_RATE_HZ,
    AudioFormat,
    check_sample_rate,
)

#: Float samples up to this magnitude are clipped to [-1, 1] (filter ringing, a hot mix); beyond
#: it the data is not normalised audio (e.g. int16 values sent as floats) and is refused.
MAX_FLOAT_MAGNITUDE = 1.5
_PCM16_SCALE = 32_768.0
_PCM16_STEP = np.float32(1.0 / _PCM16_SCALE)
_INT16_LE = np.dtype("<i2")


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


def check_pcm16_length(data: bytes | bytearray | memoryview) -> memoryview:
    """The bytes as a byte view, refused if they are not whole PCM16 samples."""
    data = memoryview(data).cast("B")  # lengths in bytes, whatever view the caller holds
    if len(data) % 2:
        raise BadAudioError(
            f"PCM16 payload has an odd length ({len(data)} bytes); samples are 2 bytes"
        )
    return data


def pcm16_to_float(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Little-endian int16 bytes as float32 in [-1, 1)."""
    samples = np.frombuffer(check_pcm16_length(data), _INT16_LE).astype(np.float32)
    # A cast, then a float32 multiply in place (exact: the scale is a power of two). One ufunc
    # over matching types: a mixed-type multiply (int16 by float32 into float32) resolves its
    # loop on every call, which costs most when a lone request finds numpy's code cold.
    np.multiply(samples, _PCM16_STEP, out=samples)
    return samples


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
    # An AudioFormat is a str too.
    found = FORMATS_BY_NAME.get(fmt) if isinstance(fmt, str) else None
    if found is None:
        known = ", ".join(FORMATS_BY_NAME)
        raise BadAudioError(f"unknown sample format {fmt!r}; expected one of: {known}")
    if found is AudioFormat.PCM16:
        samples = pcm16_to_float(data)  # checks whole samples on a byte view
    else:
        data = memoryview(data).cast("B")  # lengths in bytes, whatever view the caller holds
        if len(data) % 4:
            raise BadAudioError(f"f32 payload length {len(data)} bytes is not a multiple of 4")
        samples = check_float_samples(np.frombuffer(data, dtype="<f4"))
    if samples.size == 0 and not allow_empty:
        raise BadAudioError("audio is empty")
    return samples


#: What a client may send as PCM16 bytes (a tuple: a union would be built at every check).
_BYTES_LIKE = (bytes, bytearray, memoryview)


def encode_audio(
    audio: bytes | bytearray | memoryview | np.ndarray, sample_rate: object
) -> tuple[bytes, AudioFormat]:
    """The payload and format a client sends: bytes are PCM16, int16 arrays too, floats f32."""
    check_sample_rate(sample_rate)
    if isinstance(audio, _BYTES_LIKE):
        check_pcm16_length(audio)  # whole samples, before anything is sent (no conversion)
        payload, fmt = bytes(audio), AudioFormat.PCM16
    elif isinstance(audio, np.ndarray):
        x = mono(audio)
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


def mono(audio: np.ndarray) -> np.ndarray:
    if audio.ndim == 2 and audio.shape[1] == 1:
        return audio[:, 0]
    if audio.ndim != 1:
        raise BadAudioError(
            f"audio must be mono, shape (n,) or (n, 1); got shape {audio.shape}. "
            f"Downmix first, e.g. audio.mean(axis=1) for (n, channels) audio"
        )
    return audio
