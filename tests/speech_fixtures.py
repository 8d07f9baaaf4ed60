"""The committed espeak-ng speech fixtures (fixtures/speech/) and their manifest, for tests.

``fixtures/speech/make_fixtures.py`` made them; ``manifest.json`` holds each file's exact text,
voice, rate, noise and duration. The long clip also lists its sentences and their spans.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.audio import read_wav
from orchestrator.envs import project_root

SPEECH_DIR = project_root() / "fixtures" / "speech"
MANIFEST = SPEECH_DIR / "manifest.json"


@dataclasses.dataclass(frozen=True)
class SpeechClip:
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

    def pcm16(self) -> np.ndarray:
        audio, rate = read_wav(self.path)
        assert rate == 16_000, f"{self.file} is {rate} Hz"
        return np.round(audio * 32767).astype(np.int16)


@functools.cache
def speech_clips() -> tuple[SpeechClip, ...]:
    clips = json.loads(MANIFEST.read_text())["clips"]
    return tuple(
        SpeechClip(c["file"], c["text"], c["voice"], c["noise"], c["duration_s"], c) for c in clips
    )


def short_clips() -> tuple[SpeechClip, ...]:
    """The one-sentence clips, clean and noisy (everything but the long clip)."""
    return tuple(c for c in speech_clips() if "sentences" not in c.raw)


def long_clip() -> SpeechClip:
    """The clip of several sentences separated by pauses, for streaming tests."""
    (clip,) = (c for c in speech_clips() if "sentences" in c.raw)
    return clip
