"""The committed espeak-ng speech fixtures (``fixtures/speech/``) and their manifest.

``fixtures/speech/make_fixtures.py`` made them; ``manifest.json`` holds each file's exact text,
voice, rate, noise and duration. The long clip also lists its sentences and their spans. The
files live in the checkout (like ``hosts/``), not in the package: they are found from
:func:`orchestrator.envs.checks.project_root`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.audio.pcm import float_to_pcm16
from orchestrator.audio.wav import read_wav
from orchestrator.envs.checks import project_root

#: The rate every fixture is stored at (Whisper's own): no resampling between file and model.
FIXTURE_SAMPLE_RATE = 16_000


SPEECH_DIR = project_root() / "fixtures" / "speech"
MANIFEST = SPEECH_DIR / "manifest.json"


@dataclasses.dataclass(frozen=True)
class SpeechClip:
    """One fixture file and what was said in it."""

    file: str
    text: str
    voice: str
    noise: str | None
    duration_s: float
    raw: dict[str, Any]

    @property
    def path(self) -> Path:
        return SPEECH_DIR / self.file

    @property
    def name(self) -> str:
        return Path(self.file).stem

    @property
    def condition(self) -> str:
        """``clean``, ``white`` or ``brown``: the noise mixed in, for tables."""
        return self.noise or "clean"

    @property
    def audio(self) -> np.ndarray:
        """The clip as 16 kHz mono float samples in [-1, 1] (read from its file each time)."""
        audio, rate = read_wav(self.path)
        if rate != FIXTURE_SAMPLE_RATE:
            raise ValueError(
                f"{self.path} is {rate} Hz, fixtures are {FIXTURE_SAMPLE_RATE} Hz: "
                "remake them with fixtures/speech/make_fixtures.py"
            )
        return audio

    def pcm16(self) -> np.ndarray:
        """The clip as 16 kHz mono int16 samples."""
        return np.frombuffer(float_to_pcm16(self.audio), dtype=np.int16)


@functools.cache
def speech_clips() -> tuple[SpeechClip, ...]:
    clips = json.loads(MANIFEST.read_text(encoding="utf-8"))["clips"]
    return tuple(
        SpeechClip(c["file"], c["text"], c["voice"], c["noise"], c["duration_s"], c) for c in clips
    )


def short_clips() -> tuple[SpeechClip, ...]:
    """The one-sentence clips, clean and noisy (everything but the long clip)."""
    return tuple(c for c in speech_clips() if "sentences" not in c.raw)


def long_clip() -> SpeechClip:
    """The clip of several sentences separated by pauses, for streaming tests and benches."""
    (clip,) = (c for c in speech_clips() if "sentences" in c.raw)
    return clip


def clip_named(name: str) -> SpeechClip:
    """A clip by its file stem (``budget``, ``budget_white``, ``planning_long``)."""
    for clip in speech_clips():
        if clip.name == name:
            return clip
    known = ", ".join(c.name for c in speech_clips())
    raise KeyError(f"no speech fixture named {name!r}; known: {known}")


#: The noise conditions of the one-sentence clips, in table order.
CONDITIONS = ("clean", "white", "brown")


def mean_wer_by_condition(scored: Iterable[tuple[SpeechClip, float]]) -> dict[str, float]:
    """Mean WER per noise condition (``clean``, ``white``, ``brown``) of (clip, WER) pairs; a
    condition with no clip is left out."""
    by_condition: dict[str, list[float]] = {}
    for clip, wer in scored:
        by_condition.setdefault(clip.condition, []).append(wer)
    return {c: statistics.mean(by_condition[c]) for c in CONDITIONS if c in by_condition}
