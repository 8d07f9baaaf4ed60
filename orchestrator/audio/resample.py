"""Band-limited resampling of mono float audio through soxr, one-shot or chunk by chunk.

soxr at libsoxr's "HQ" quality is flat to 91% of the lower Nyquist frequency (7.3 kHz at 16 kHz),
puts an 8.4 kHz tone 130 dB down when 44.1/48 kHz speech comes down to 16 kHz, and is 20-70x
faster than the numpy polyphase filter it replaced (``nox -s bench -- --only resample``).
:class:`Resampler` keeps one soxr stream's state, so audio resampled in chunks equals the whole
of it resampled at once (:func:`resample`); both give ``round(n * dst / src)`` samples with
output sample 0 aligned on input sample 0.

soxr is a dependency of the orchestrator package, so it is in every host env with numpy: the host
runtime resamples requests and streams with it, the client converts files with it.
"""

from __future__ import annotations

import operator

import numpy as np
import soxr

from orchestrator.wire.errors import BadAudioError

#: libsoxr's quality recipe: "HQ" (20-bit) is beyond any 16-bit speech source.
RESAMPLE_QUALITY = "HQ"


def _check_rates(src_hz: object, dst_hz: object) -> tuple[int, int]:
    try:
        src, dst = operator.index(src_hz), operator.index(dst_hz)  # type: ignore[arg-type]
    except TypeError:
        src = dst = 0
    if min(src, dst) <= 0:
        raise BadAudioError(f"sample rates must be positive integers, got {(src_hz, dst_hz)!r}")
    return src, dst


class Resampler:
    """Streaming resampler of one mono stream; feed chunks to ``process``, end with ``flush``."""

    def __init__(self, src_hz: int, dst_hz: int) -> None:
        self.src_hz, self.dst_hz = _check_rates(src_hz, dst_hz)
        self._stream = soxr.ResampleStream(
            self.src_hz, self.dst_hz, 1, dtype="float32", quality=RESAMPLE_QUALITY
        )

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """The output soxr can give for the input so far (it holds back its filter's delay)."""
        return self._stream.resample_chunk(np.ascontiguousarray(chunk, dtype=np.float32))

    def flush(self) -> np.ndarray:
        """The held-back output, treating the input after the end as silence; ends the stream."""
        return self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


def resample(x: np.ndarray, src_hz: int, dst_hz: int) -> np.ndarray:
    """Band-limited resampling of mono float audio; returns the input itself when rates match."""
    src, dst = _check_rates(src_hz, dst_hz)
    if src == dst:
        return x
    y = soxr.resample(np.ascontiguousarray(x, dtype=np.float32), src, dst, quality=RESAMPLE_QUALITY)
    return np.asarray(y, dtype=np.float32)
