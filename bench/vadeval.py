"""VAD evaluation shared by ``tests/test_vad.py`` and the ``vad`` bench group.

Real speech (``fixtures/vad/speech.wav``: six espeak-ng sentences, 1.2 s pauses, true spans in
``speech.json``) is mixed with noise at 20 dB SNR (white, brown, or babble from
``fixtures/vad/babble.wav``; SNR against the active speech level) and pushed through the real
:class:`~orchestrator.host.segmenter.StreamSegmenter` in 20 ms chunks, as a host does. Scored:

* false speech frames: of the frames farther than ``GUARD_S`` from every sentence (the pauses'
  inner parts, the lead-in and the tail), the percentage the detector called speech. The guard
  leaves a detector its hangover and onset slack; anything later is noise taken for speech.
* utterances finalised: a sentence is finalised when a final whose speech overlaps it ends at or
  after the sentence's true end; its finalisation delay is that final's cut (the stream position
  the segmenter had reached when it emitted it) minus the true end. A final only at the end of the
  stream (flush) does not count: live, the panel would still be waiting.
* spurious finals: finals whose speech overlaps no sentence.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from orchestrator.audio.wav import read_wav
from orchestrator.host.segmenter import (
    DecodeFinal,
    EnergyVoiceDetector,
    FinalReason,
    StreamSegmenter,
    VoiceDetector,
)
from orchestrator.host.vad import VadFactory
from orchestrator.wire.contract import SegmenterSettings

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vad"
RATE = 16_000
CHUNK = RATE // 50  # 20 ms, as EchoPanel sends
SNR_DB = 20.0
CONDITIONS = ("clean", "white 20 dB", "brown 20 dB", "babble 20 dB")
#: Frames this close to a sentence's true span are neither counted false nor required silent.
GUARD_S = 0.25
#: The target for the default VAD, in every condition.
MAX_FALSE_FRAMES_PCT = 2.0
MAX_FINAL_DELAY_S = 1.0
#: Noise floor margin of the energy detector's noisy-room variant.
ENERGY_FLOOR_MARGIN_DB = 6.0


@dataclasses.dataclass(frozen=True)
class Fixture:
    speech: np.ndarray
    babble: np.ndarray
    spans: tuple[tuple[int, int], ...]  # each sentence's true [start, end) in samples


@functools.lru_cache(maxsize=1)
def load_fixture() -> Fixture:
    speech, rate = read_wav(FIXTURES / "speech.wav")
    babble, babble_rate = read_wav(FIXTURES / "babble.wav")
    assert rate == babble_rate == RATE and speech.size == babble.size
    doc = json.loads((FIXTURES / "speech.json").read_text())
    spans = tuple((int(u["start"]), int(u["end"])) for u in doc["utterances"])
    return Fixture(speech, babble, spans)


def active_rms(fixture: Fixture) -> float:
    active = np.concatenate([fixture.speech[a:b] for a, b in fixture.spans])
    return float(np.sqrt(np.mean(active.astype(np.float64) ** 2)))


def condition_audio(condition: str, seed: int = 0) -> np.ndarray:
    """The speech fixture under one of ``CONDITIONS``; noise at SNR_DB below active speech."""
    fx = load_fixture()
    if condition == "clean":
        return fx.speech.copy()
    rng = np.random.default_rng(seed)
    kind = condition.split()[0]
    if kind == "white":
        noise = rng.standard_normal(fx.speech.size)
    elif kind == "brown":
        # Integrated white noise, leaky so it does not wander off: -6 dB/octave, rumble-heavy.
        white = rng.standard_normal(fx.speech.size)
        noise = np.empty_like(white)
        acc = 0.0
        for i, w in enumerate(white):  # a few hundred thousand steps; fixture-sized only
            acc = 0.998 * acc + w
            noise[i] = acc
        noise -= noise.mean()
    elif kind == "babble":
        # Each seed starts the babble elsewhere, so a result is not one lucky alignment.
        shift = 0 if seed == 0 else int(rng.integers(0, fx.babble.size))
        noise = np.roll(fx.babble.astype(np.float64), shift)
    else:
        raise ValueError(f"unknown condition {condition!r}; known: {CONDITIONS}")
    noise *= active_rms(fx) / 10 ** (SNR_DB / 20) / np.sqrt(np.mean(noise**2))
    return np.clip(fx.speech + noise, -1.0, 1.0).astype(np.float32)


class RecordingDetector:
    """Wraps a detector and keeps its answer for every frame (and the time it took)."""

    def __init__(self, inner: VoiceDetector) -> None:
        self.inner = inner
        self.decisions: list[bool] = []
        self.seconds = 0.0

    def is_speech(self, frame: np.ndarray) -> bool:
        t0 = time.perf_counter()
        answer = self.inner.is_speech(frame)
        self.seconds += time.perf_counter() - t0
        self.decisions.append(answer)
        return answer


#: The detectors compared: the default and the energy detector without and with its floor.
def detectors() -> dict[str, Callable[[], VoiceDetector]]:
    silero = VadFactory(SegmenterSettings(vad="silero"))
    if silero.kind != "silero":
        raise RuntimeError(silero.fallback_reason)
    floor = SegmenterSettings(vad="energy", noise_floor_margin_db=ENERGY_FLOOR_MARGIN_DB)
    return {
        "silero": silero.detector,
        "energy": lambda: EnergyVoiceDetector(SegmenterSettings(vad="energy")),
        f"energy+floor {ENERGY_FLOOR_MARGIN_DB:g} dB": lambda: EnergyVoiceDetector(floor),
    }


@dataclasses.dataclass(frozen=True)
class VadScore:
    condition: str
    vad: str
    false_frames_pct: float
    utterances: int
    finalised: int  # within MAX_FINAL_DELAY_S
    max_delay_s: float  # inf when some sentence was never finalised
    delays_s: tuple[float | None, ...]
    spurious_finals: int
    us_per_frame: float

    @property
    def meets_target(self) -> bool:
        return self.false_frames_pct <= MAX_FALSE_FRAMES_PCT and self.finalised == self.utterances

    def to_json(self) -> dict[str, object]:
        doc = dataclasses.asdict(self)
        doc["max_delay_s"] = None if math.isinf(self.max_delay_s) else self.max_delay_s
        return doc


def evaluate(
    vad: str, make: Callable[[], VoiceDetector], condition: str, seed: int = 0
) -> VadScore:
    audio = condition_audio(condition, seed)
    detector = RecordingDetector(make())
    segmenter = StreamSegmenter(SegmenterSettings(), detector)
    finals: list[DecodeFinal] = []
    for pos in range(0, audio.size, CHUNK):
        finals += [
            a for a in segmenter.push(audio[pos : pos + CHUNK]) if isinstance(a, DecodeFinal)
        ]
    finals += [a for a in segmenter.flush() if isinstance(a, DecodeFinal)]
    return score(vad, condition, detector, finals, load_fixture().spans)


def score(
    vad: str,
    condition: str,
    detector: RecordingDetector,
    finals: list[DecodeFinal],
    spans: tuple[tuple[int, int], ...],
) -> VadScore:
    frame = CHUNK
    guard = int(GUARD_S * RATE)
    silent = [
        i
        for i in range(len(detector.decisions))
        if all(i * frame >= b + guard or (i + 1) * frame <= a - guard for a, b in spans)
    ]
    false_pct = 100.0 * sum(detector.decisions[i] for i in silent) / max(len(silent), 1)
    delays: list[float | None] = []
    for a, b in spans:
        cuts = [
            f.audio_offset + f.audio.size
            for f in finals
            if f.reason is not FinalReason.FLUSH
            and f.start_s * RATE < b + guard
            and f.end_s * RATE > a - guard
            and f.audio_offset + f.audio.size >= b
        ]
        delays.append((min(cuts) - b) / RATE if cuts else None)
    spurious = sum(
        1
        for f in finals
        if all(f.end_s * RATE <= a - guard or f.start_s * RATE >= b + guard for a, b in spans)
    )
    in_time = [d for d in delays if d is not None and d <= MAX_FINAL_DELAY_S]
    return VadScore(
        condition=condition,
        vad=vad,
        false_frames_pct=round(false_pct, 2),
        utterances=len(spans),
        finalised=len(in_time),
        max_delay_s=max((d if d is not None else math.inf) for d in delays),
        delays_s=tuple(None if d is None else round(d, 3) for d in delays),
        spurious_finals=spurious,
        us_per_frame=detector.seconds / max(len(detector.decisions), 1) * 1e6,
    )


def format_scores(scores: list[VadScore]) -> str:
    """The per-VAD table: condition x VAD."""
    header = ("condition", "vad", "false frames", "finalised <=1 s", "max delay", "spurious")
    rows = [
        (
            s.condition,
            s.vad,
            f"{s.false_frames_pct:.2f} %",
            f"{s.finalised}/{s.utterances}",
            "never" if math.isinf(s.max_delay_s) else f"{s.max_delay_s:.2f} s",
            str(s.spurious_finals),
        )
        for s in scores
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in (header, *rows))
