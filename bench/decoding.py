"""Client-side decoding throughput per format (``orchestrator.audio.decode``).

60 s of stereo speech (the VAD fixture, repeated) at 44.1 kHz is written in every format with
soundfile/PyAV, then decoded block by block and converted to 16 kHz (what ``transcribe`` does).
Baseline, same run: the WAV read whole with ``read_wav`` and resampled in one shot (the path
``transcribe`` took before it read anything but WAV).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from bench import vadeval
from bench.audio_files import FORMATS, write_audio
from bench.profiles import Profile
from bench.report import Figure
from orchestrator.audio.decode import open_audio
from orchestrator.audio.resample import resample
from orchestrator.audio.wav import read_wav

GROUP = "decode"
DURATION_S = 60
RATE = 44_100
OUT_HZ = 16_000


def _best(rounds: int, work) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - t0)
    return best


def _decode(path: Path) -> int:
    with open_audio(path) as audio:
        return sum(block.size for block in audio.blocks(sample_rate=OUT_HZ))


def run(profile: Profile) -> list[Figure]:
    speech = vadeval.load_fixture().speech
    mono = resample(np.resize(speech, DURATION_S * 16_000), 16_000, RATE) * 0.5
    stereo = np.stack([mono, 0.5 * mono], axis=1)
    rounds = max(profile.rounds, 2)
    figures = []
    with tempfile.TemporaryDirectory(prefix="orc-bench-decode-") as tmp:
        paths = {fmt: write_audio(Path(tmp) / "speech", stereo, RATE, fmt) for fmt in FORMATS}

        def baseline() -> None:
            audio, rate = read_wav(paths["wav"])
            resample(audio, rate, OUT_HZ)

        base = _best(rounds, baseline)
        for fmt, path in paths.items():
            seconds = _best(rounds, lambda path=path: _decode(path))
            figures.append(
                Figure(
                    GROUP,
                    f"{fmt}: {DURATION_S} s to 16 kHz ({DURATION_S / seconds:,.0f}x real time, "
                    f"{path.stat().st_size / 2**20:.1f} MiB)",
                    "s",
                    seconds,
                    base,
                    "WAV read whole + one-shot resample",
                )
            )
    return figures
