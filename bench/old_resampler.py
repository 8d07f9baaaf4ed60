"""The resampler the project used before soxr, kept only as the ``resample`` bench's baseline.

A polyphase windowed-sinc (Kaiser) filter at the rational ratio ``dst/src``, numpy only, copied
unchanged from ``orchestrator/audio/resample.py`` as it was before soxr replaced it. Its filter
claimed 80 dB of stopband from 1.1x the output's Nyquist frequency, so the band just above
Nyquist (an 8.4 kHz tone going to 16 kHz) folds back barely attenuated.
"""

from __future__ import annotations

import functools
import math
import operator

import numpy as np

from orchestrator.wire.errors import BadAudioError

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
