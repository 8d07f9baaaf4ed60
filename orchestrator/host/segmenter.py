"""Streaming utterance segmentation: turns a live audio stream into partial and final decodes.

The host runtime owns one :class:`StreamSegmenter` per stream, pushes each chunk of 16 kHz float32
audio into it, and runs the decodes it asks for on the engine: a :class:`DecodePartial` re-decodes
the open utterance so the panel can show text as people speak, a :class:`DecodeFinal` decodes a
finished one. It works for any engine (neither stack streams Qwen3-ASR incrementally) and knows
nothing of sockets or models, so it is tested on its own.

How audio is accounted for -- the promise the team's "no sample lost" tests rely on:

* Every pushed sample ends in exactly one final's audio or in discarded silence. ``stats``
  counts both (``samples_in == samples_in_finals + samples_discarded_silence + samples_pending``
  at all times, and nothing is pending after :meth:`StreamSegmenter.flush`).
* Finals are contiguous where the stream is: a final's audio runs from the end of the previous
  final (or, after a longer pause, from ``pre_roll_ms`` before the speech onset) to the point
  where its utterance ended, trailing silence included. So when no pause is longer than
  ``end_silence_ms + pre_roll_ms`` (nor the silence before the first speech longer than
  ``pre_roll_ms``), and the stream ends inside an utterance, the concatenated finals are exactly
  the stream. Longer silence is dropped rather than buffered, keeping memory and decode cost
  bounded through an hour of quiet.
* ``audio_offset`` gives each final's first sample's index in the stream, so a test can check
  every final against the stream it sent; ``start_s``/``end_s`` label the speech inside it.

Detection is frame by frame (``frame_ms``) with a pluggable :class:`VoiceDetector`; results are
the same for any chunking of the stream. Partials are decided once per push (at most one, for the
newest audio), so their exact ends follow the chunking. A partial falls due only while the newest
frame is speech: in the silence that may end the utterance, its final is what comes next, and a
partial decode started then would make that final wait behind it.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Protocol

import numpy as np

from orchestrator.wire.contract import SegmenterSettings
from orchestrator.wire.errors import BadAudioError

#: Frame level of digital silence, so log10 never sees zero.
SILENCE_FLOOR_DBFS = -100.0


class VoiceDetector(Protocol):
    """Decides frame by frame whether there is speech; a model VAD may stand in for the default."""

    def is_speech(self, frame: np.ndarray) -> bool: ...


class EnergyVoiceDetector:
    """Speech is a frame louder than a fixed threshold and, optionally, the room's noise floor."""

    def __init__(self, config: SegmenterSettings) -> None:
        self.threshold_dbfs = config.speech_threshold_dbfs
        self.margin_db = config.noise_floor_margin_db
        self.rise_db_per_frame = config.noise_floor_rise_db_per_s * config.frame_ms / 1000
        # Start low so the fixed threshold rules until the floor has learnt the room.
        self.noise_floor_dbfs = self.threshold_dbfs - (self.margin_db or 0.0)

    def is_speech(self, frame: np.ndarray) -> bool:
        level = frame_level_dbfs(frame)
        if self.margin_db is None:
            return level > self.threshold_dbfs
        self.noise_floor_dbfs = min(self.noise_floor_dbfs + self.rise_db_per_frame, level)
        return level > max(self.threshold_dbfs, self.noise_floor_dbfs + self.margin_db)


def frame_level_dbfs(frame: np.ndarray) -> float:
    """RMS level of a frame in dBFS (full-scale square wave = 0 dBFS)."""
    power = float(np.dot(frame, frame)) / max(frame.size, 1)
    return max(10 * math.log10(power), SILENCE_FLOOR_DBFS) if power > 0 else SILENCE_FLOOR_DBFS


class FinalReason(enum.StrEnum):
    """Why an utterance ended (sent to clients with the final)."""

    SILENCE = "silence"
    MAX_LENGTH = "max_length"
    FLUSH = "flush"


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class DecodePartial:
    """Decode the open utterance so far (the runtime may drop it for a newer one).

    ``audio[0]`` is stream sample ``audio_offset``; ``start_s`` is where the speech began and
    ``end_s`` the end of the audio so far, in stream seconds.
    """

    utterance_id: int
    audio: np.ndarray
    start_s: float
    end_s: float
    audio_offset: int


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class DecodeFinal:
    """Decode a finished utterance: always exactly one per utterance that had speech.

    ``audio`` starts at stream sample ``audio_offset`` and may hold silence around the speech;
    ``start_s``/``end_s`` bound the speech itself, in stream seconds.
    """

    utterance_id: int
    audio: np.ndarray
    start_s: float
    end_s: float
    reason: FinalReason
    audio_offset: int


Action = DecodePartial | DecodeFinal


@dataclasses.dataclass(slots=True)
class SegmenterStats:
    """Counters of one stream; samples are at the segmenter's rate (16 kHz by default)."""

    samples_in: int = 0
    samples_in_finals: int = 0
    samples_discarded_silence: int = 0
    samples_pending: int = 0
    finals_emitted: int = 0
    partials_emitted: int = 0
    partials_skipped: int = 0


@dataclasses.dataclass(slots=True)
class _Utterance:
    """The open utterance; indices are stream sample indices."""

    id: int
    audio_start: int  # stream index of its audio's first sample
    speech_start: int
    speech_end: int
    #: Stream index where the last partial (or the opening) was decided.
    last_partial_at: int


class _Window:
    """Stream samples [start, end) not yet decided; appends are amortised O(1), drops free."""

    def __init__(self) -> None:
        self._buf = np.zeros(0, dtype=np.float32)
        self._lo = self._hi = 0
        self.start = 0  # stream index of the first kept sample

    @property
    def size(self) -> int:
        return self._hi - self._lo

    def append(self, x: np.ndarray) -> None:
        if self._hi + x.size > self._buf.size:
            # Compact into a new buffer with room to grow: amortised O(1) per sample.
            live = self._buf[self._lo : self._hi]
            self._buf = np.empty(max(2 * (live.size + x.size), 1 << 14), dtype=np.float32)
            self._buf[: live.size] = live
            self._lo, self._hi = 0, live.size
        self._buf[self._hi : self._hi + x.size] = x
        self._hi += x.size

    def view(self, start: int, stop: int) -> np.ndarray:
        return self._buf[self._lo + start - self.start : self._lo + stop - self.start]

    def drop_before(self, index: int) -> int:
        n = max(0, min(index - self.start, self.size))
        self._lo += n
        self.start += n
        return n


class StreamSegmenter:
    """Finds utterances in one stream of mono float32 audio; see the module docstring."""

    def __init__(
        self,
        config: SegmenterSettings | None = None,
        detector: VoiceDetector | None = None,
    ) -> None:
        self.config = config or SegmenterSettings()
        self.detector = detector or EnergyVoiceDetector(self.config)
        c = self.config
        self._frame = c.frame_samples
        self._min_speech = c.frames(c.min_speech_ms)
        self._end_silence = c.frames(c.end_silence_ms)
        self._pre_roll = round(c.pre_roll_ms / c.frame_ms) * self._frame
        self._max_len = c.frames(c.max_utterance_s * 1000) * self._frame
        self._partial_interval = c.frames(c.partial_interval_ms) * self._frame
        self._stats = SegmenterStats()
        # From the oldest undecided sample to the end of the last whole frame pushed.
        self._kept = _Window()
        self._pos = 0  # stream index of the next frame to classify
        self._tail = np.zeros(0, dtype=np.float32)  # < one frame, waiting for the rest
        self._cut = 0  # where the last final ended: no later audio may start before it
        self._speech_run = 0  # consecutive speech frames up to _pos
        self._silence_run = 0  # consecutive non-speech frames inside the open utterance
        self._utt: _Utterance | None = None
        self._next_id = 0

    @property
    def stats(self) -> SegmenterStats:
        self._stats.samples_pending = self._kept.size + self._tail.size
        return dataclasses.replace(self._stats)

    def push(self, samples: np.ndarray, *, skip_partials: bool = False) -> list[Action]:
        """Add audio; returns the decodes it makes due, oldest first. ``skip_partials`` (decoding
        is behind) drops a due partial (counted) but never audio."""
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1:
            raise BadAudioError(f"segmenter takes mono 1-D audio, got shape {x.shape}")
        self._stats.samples_in += x.size
        data = np.concatenate([self._tail, x])
        whole = data.size // self._frame * self._frame
        self._tail = data[whole:].copy()
        self._kept.append(data[:whole])
        actions: list[Action] = []
        for start in range(self._pos, self._pos + whole, self._frame):
            frame = self._kept.view(start, start + self._frame)
            final = self._step(start, self.detector.is_speech(frame))
            if final is not None:
                actions.append(final)
        utt = self._utt
        # A pending final takes priority: while the open utterance trails off in silence its final
        # is at most end_silence_ms away, and a partial decoded now (a whole 30 s window for
        # Whisper) would hold that final back. The due partial waits for speech to resume.
        in_trailing_silence = self._silence_run > 0
        if (
            utt is not None
            and not in_trailing_silence
            and self._pos - utt.last_partial_at >= self._partial_interval
        ):
            utt.last_partial_at = self._pos
            if skip_partials:
                self._stats.partials_skipped += 1
            else:
                self._stats.partials_emitted += 1
                audio = self._kept.view(utt.audio_start, self._pos).copy()
                actions.append(
                    DecodePartial(
                        utt.id,
                        audio,
                        self._s(utt.speech_start),
                        self._s(self._pos),
                        utt.audio_start,
                    )
                )
        return actions

    def flush(self) -> list[Action]:
        """End the stream (or a forced pause): the open utterance's final, or nothing.

        The last partial frame goes with the open utterance, or is discarded with the silence.
        """
        self._kept.append(self._tail)
        self._pos += self._tail.size
        self._tail = np.zeros(0, dtype=np.float32)
        actions: list[Action] = []
        if self._utt is not None:
            actions.append(self._finish(self._pos, FinalReason.FLUSH))
        self._discard_before(self._pos)
        self._speech_run = 0
        return actions

    def _step(self, start: int, speech: bool) -> DecodeFinal | None:
        """Advance the state machine by the frame at ``start``: the whole life of an utterance."""
        end = self._pos = start + self._frame
        self._speech_run = self._speech_run + 1 if speech else 0
        utt = self._utt
        if utt is None:
            if self._speech_run < self._min_speech:
                run_start = end - self._speech_run * self._frame
                self._discard_before(run_start - self._pre_roll)
                return None
            onset = max(end - self._speech_run * self._frame, self._cut)
            audio_start = max(onset - self._pre_roll, self._kept.start)
            self._discard_before(audio_start)
            self._utt = _Utterance(self._next_id, audio_start, onset, end, last_partial_at=end)
            self._next_id += 1
            self._silence_run = 0
            return None
        if speech:
            utt.speech_end, self._silence_run = end, 0
        else:
            self._silence_run += 1
        if self._silence_run >= self._end_silence:
            return self._finish(end, FinalReason.SILENCE)
        if end - utt.audio_start >= self._max_len:
            return self._finish(end, FinalReason.MAX_LENGTH)
        return None

    def _finish(self, cut: int, reason: FinalReason) -> DecodeFinal:
        utt, self._utt = self._utt, None
        assert utt is not None
        audio = self._kept.view(utt.audio_start, cut).copy()
        self._kept.drop_before(cut)
        self._cut = cut
        self._stats.finals_emitted += 1
        self._stats.samples_in_finals += audio.size
        return DecodeFinal(
            utt.id,
            audio,
            self._s(utt.speech_start),
            self._s(utt.speech_end),
            reason,
            utt.audio_start,
        )

    def _discard_before(self, index: int) -> None:
        """Drop undecided audio before ``index`` as silence (never past the classified audio)."""
        self._stats.samples_discarded_silence += self._kept.drop_before(min(index, self._pos))

    def _s(self, index: int) -> float:
        return index / self.config.sample_rate_hz
