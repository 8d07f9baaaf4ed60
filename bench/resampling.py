"""Resampling: soxr (``orchestrator.audio.resample``) beside the numpy polyphase resampler it
replaced (``bench/old_resampler.py``), both run here on the same audio.

* one-shot, 60 s of noise-like audio, 44.1 -> 16 kHz and 48 -> 16 kHz;
* streaming, 60 s at 44.1 kHz in 20 ms chunks (what a host does per stream);
* alias leak: an 8.4 kHz tone at 44.1 kHz (5% past 16 kHz's Nyquist) in the 16 kHz output, dB
  relative to the tone (target <= -60 dB).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from bench import old_resampler
from bench.profiles import Profile
from bench.report import Figure, Target
from orchestrator.audio import resample as ours

GROUP = "resample"
DURATION_S = 60
OUT_HZ = 16_000
LEAK_TONE_HZ = 8_400
MAX_LEAK_DB = -60.0


def _best_of(rounds: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - t0)
    return best


def _streamed(module: object, x: np.ndarray, src: int) -> np.ndarray:
    resampler = module.Resampler(src, OUT_HZ)  # type: ignore[attr-defined]
    step = src // 50
    parts = [resampler.process(x[i : i + step]) for i in range(0, x.size, step)]
    return np.concatenate([*parts, resampler.flush()])


def leak_db(resample: Callable[[np.ndarray, int, int], np.ndarray], src: int) -> float:
    t = np.arange(2 * src) / src
    tone = (0.5 * np.sin(2 * np.pi * LEAK_TONE_HZ * t)).astype(np.float32)
    y = resample(tone, src, OUT_HZ)[2_000:-2_000]  # past the filters' start-up and tail
    return float(
        20 * np.log10(max(np.sqrt(np.mean(y.astype(np.float64) ** 2)), 1e-12) / (0.5 / np.sqrt(2)))
    )


def run(profile: Profile) -> list[Figure]:
    rng = np.random.default_rng(0)
    rounds = max(profile.rounds, 2)
    figures = []
    for src in (44_100, 48_000):
        x = rng.uniform(-0.5, 0.5, DURATION_S * src).astype(np.float32)
        figures.append(
            Figure(
                GROUP,
                f"one-shot {DURATION_S} s, {src / 1000:g} -> 16 kHz",
                "s",
                _best_of(rounds, lambda x=x, src=src: ours.resample(x, src, OUT_HZ)),
                _best_of(rounds, lambda x=x, src=src: old_resampler.resample(x, src, OUT_HZ)),
                "numpy polyphase (before soxr)",
            )
        )
    src = 44_100
    x = rng.uniform(-0.5, 0.5, DURATION_S * src).astype(np.float32)
    figures.append(
        Figure(
            GROUP,
            f"streaming {DURATION_S} s in 20 ms chunks, 44.1 -> 16 kHz",
            "s",
            _best_of(rounds, lambda: _streamed(ours, x, src)),
            _best_of(rounds, lambda: _streamed(old_resampler, x, src)),
            "numpy polyphase (before soxr)",
        )
    )
    for src in (44_100, 48_000):
        figures.append(
            Figure(
                GROUP,
                f"8.4 kHz tone leak, {src / 1000:g} -> 16 kHz",
                "dB",
                leak_db(ours.resample, src),
                leak_db(old_resampler.resample, src),
                "numpy polyphase (before soxr)",
                Target("value", "<=", MAX_LEAK_DB),
            )
        )
    return figures
