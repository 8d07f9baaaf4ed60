"""Long recordings for the long-form benchmark and tests: bursts of speech (or speech-like noise)
with pauses, written block by block so an hour-long file never sits in the writer's memory."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def burst_pattern(
    total_s: float, rate: int, *, seed: int = 0, talk_s: tuple[float, float] = (2.0, 9.0)
) -> Iterator[tuple[float, float]]:
    """(start_s, end_s) of each burst of 'speech'; pauses of 0.4-1.5 s between them."""
    rng = np.random.default_rng(seed)
    t = 0.3
    while t < total_s:
        length = float(rng.uniform(*talk_s))
        yield t, min(t + length, total_s)
        t += length + float(rng.uniform(0.4, 1.5))


def speech_like_block(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Noise shaped by a syllable-rate envelope: loud and never silent for long inside a burst."""
    t = np.arange(n) / rate
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6.3)) ** 2
    return (rng.normal(0, 0.15, n) * envelope).clip(-0.9, 0.9)


def write_long_wav(
    path: Path,
    total_s: float,
    *,
    rate: int = 16_000,
    channels: int = 1,
    seed: int = 0,
    floor: float = 0.0,
    block_s: float = 10.0,
    speech: np.ndarray | None = None,
) -> list[tuple[float, float]]:
    """A 16-bit WAV of ``total_s`` seconds with bursts at ``burst_pattern``, written block by block.

    ``speech`` (float samples at ``rate``) is looped into the bursts instead of shaped noise;
    ``floor`` adds background noise everywhere (so no stretch is digital silence).
    Returns the bursts.
    """
    rng = np.random.default_rng(seed)
    bursts = list(burst_pattern(total_s, rate, seed=seed))
    frames = int(total_s * rate)
    block = int(block_s * rate)
    with path.open("wb") as out:
        data_size = frames * channels * 2
        out.write(b"RIFF" + struct.pack("<I", 36 + data_size) + b"WAVE")
        out.write(
            b"fmt "
            + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16)
        )
        out.write(b"data" + struct.pack("<I", data_size))
        loop_pos = 0
        for start in range(0, frames, block):
            n = min(block, frames - start)
            samples = rng.normal(0, floor, n) if floor else np.zeros(n)
            t0, t1 = start / rate, (start + n) / rate
            for b0, b1 in bursts:
                if b1 <= t0 or b0 >= t1:
                    continue
                i0, i1 = max(0, int(b0 * rate) - start), min(n, int(b1 * rate) - start)
                if speech is None:
                    samples[i0:i1] += speech_like_block(i1 - i0, rate, rng)
                else:
                    idx = (loop_pos + np.arange(i1 - i0)) % speech.size
                    samples[i0:i1] += speech[idx]
                    loop_pos = int(idx[-1] + 1) if idx.size else loop_pos
            pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
            if channels > 1:
                pcm = np.repeat(pcm[:, None], channels, axis=1)
            out.write(pcm.tobytes())
    return bursts
