"""Streaming utterance segmentation (orchestrator.host.segmenter), on generated bursts and silence."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.errors import BadAudioError, BadRequestError
from orchestrator.host.segmenter import (
    DecodeFinal,
    DecodePartial,
    EnergyVoiceDetector,
    FinalReason,
    SegmenterSettings,
    StreamSegmenter,
    frame_level_dbfs,
)

RATE = 16_000
FRAME_S = 0.02


def tone(seconds: float, freq_hz: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def noise(seconds: float, amplitude: float = 0.2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-amplitude, amplitude, round(seconds * RATE)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), dtype=np.float32)


def stream_of(*parts: np.ndarray) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Concatenate parts; return the stream and the (start, end) seconds of the non-silent ones."""
    bursts, pos = [], 0
    for part in parts:
        if part.any():
            bursts.append((pos / RATE, (pos + part.size) / RATE))
        pos += part.size
    return np.concatenate(parts), bursts


def run(segmenter: StreamSegmenter, x: np.ndarray, chunk: int | list[int] = 320) -> list:
    """Push x in chunks (a size, or a list of sizes to cycle through), then flush."""
    sizes = chunk if isinstance(chunk, list) else [chunk]
    actions, pos, i = [], 0, 0
    while pos < x.size:
        size = sizes[i % len(sizes)]
        actions += segmenter.push(x[pos : pos + size])
        pos, i = pos + size, i + 1
    return actions + segmenter.flush()


def finals(actions: list) -> list[DecodeFinal]:
    return [a for a in actions if isinstance(a, DecodeFinal)]


def partials(actions: list) -> list[DecodePartial]:
    return [a for a in actions if isinstance(a, DecodePartial)]


def final_key(f: DecodeFinal) -> tuple:
    return (f.utterance_id, f.audio_offset, f.audio.size, f.start_s, f.end_s, f.reason)


# Gaps long enough that the default pre-roll discards some silence between the bursts.
SPEECHY, SPEECHY_BURSTS = stream_of(
    silence(1.013),
    tone(1.5),
    silence(1.2),
    noise(0.8),
    silence(1.5),
    tone(2.05, freq_hz=1_000, amplitude=0.1),
    silence(0.9),
)


def test_one_final_per_burst_with_plausible_times():
    config = SegmenterSettings()
    out = finals(run(StreamSegmenter(config), SPEECHY, chunk=333))
    assert len(out) == len(SPEECHY_BURSTS)
    for i, (final, (start, end)) in enumerate(zip(out, SPEECHY_BURSTS, strict=True)):
        assert final.utterance_id == i
        assert final.reason is FinalReason.SILENCE
        assert start - FRAME_S <= final.start_s <= start
        assert end <= final.end_s <= end + FRAME_S
        audio_end_s = (final.audio_offset + final.audio.size) / RATE
        assert audio_end_s == pytest.approx(final.end_s + config.end_silence_ms / 1000)
        assert final.audio_offset / RATE == pytest.approx(final.start_s - config.pre_roll_ms / 1000)


def test_every_sample_is_in_exactly_one_final_or_in_discarded_silence():
    segmenter = StreamSegmenter()
    out = finals(run(segmenter, SPEECHY, chunk=333))
    covered = np.zeros(SPEECHY.size, dtype=np.int64)
    for final in out:
        span = slice(final.audio_offset, final.audio_offset + final.audio.size)
        assert np.array_equal(final.audio, SPEECHY[span])
        covered[span] += 1
    assert covered.max() == 1
    assert not SPEECHY[covered == 0].any()  # only silence was dropped
    stats = segmenter.stats
    assert stats.samples_in == SPEECHY.size
    assert stats.samples_in_finals == int(covered.sum())
    assert stats.samples_discarded_silence == int((covered == 0).sum()) > 0
    assert stats.samples_pending == 0


def test_finals_concatenate_to_the_stream_when_pauses_fit_the_pre_roll():
    x, bursts = stream_of(
        silence(0.5), tone(1.0), silence(1.2), noise(0.6), silence(0.8), tone(0.7), silence(0.1)
    )
    segmenter = StreamSegmenter(SegmenterSettings(pre_roll_ms=1_000))
    out = finals(run(segmenter, x, chunk=112))
    assert [f.reason for f in out] == ["silence", "silence", "flush"]
    assert np.array_equal(np.concatenate([f.audio for f in out]), x)
    assert segmenter.stats.samples_discarded_silence == 0
    assert [round(f.start_s, 2) for f in out] == [round(s, 2) for s, _ in bursts]


@pytest.mark.parametrize("chunk", [1, 112, 320, 333, 1_000, 7_919, 16_000, [17, 640, 5, 3_001]])
def test_chunking_does_not_change_the_finals(chunk):
    reference = finals(run(StreamSegmenter(), SPEECHY, chunk=320))
    out = finals(run(StreamSegmenter(), SPEECHY, chunk=chunk))
    assert [final_key(f) for f in out] == [final_key(f) for f in reference]
    for a, b in zip(out, reference, strict=True):
        assert np.array_equal(a.audio, b.audio)


def test_pushing_the_whole_stream_at_once_gives_the_same_finals():
    reference = finals(run(StreamSegmenter(), SPEECHY, chunk=320))
    out = finals(run(StreamSegmenter(), SPEECHY, chunk=SPEECHY.size))
    assert [final_key(f) for f in out] == [final_key(f) for f in reference]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=4_000), min_size=1, max_size=8))
def test_any_chunking_gives_the_same_finals_and_accounts_every_sample(sizes):
    x = SPEECHY[: 5 * RATE]
    segmenter = StreamSegmenter()
    out = finals(run(segmenter, x, chunk=sizes))
    reference = finals(run(StreamSegmenter(), x, chunk=320))
    assert [final_key(f) for f in out] == [final_key(f) for f in reference]
    stats = segmenter.stats
    assert stats.samples_in == x.size
    assert stats.samples_in_finals + stats.samples_discarded_silence == x.size


def test_accounting_balances_after_every_push():
    segmenter = StreamSegmenter()
    for pos in range(0, SPEECHY.size, 1_234):
        segmenter.push(SPEECHY[pos : pos + 1_234])
        s = segmenter.stats
        assert s.samples_in == s.samples_in_finals + s.samples_discarded_silence + s.samples_pending
        assert s.samples_pending <= 16_000 * 16  # bounded by max_utterance_s plus a chunk


def test_partials_come_at_the_configured_cadence_for_a_long_burst():
    x, _ = stream_of(silence(0.5), tone(5.0), silence(1.0))
    actions = run(StreamSegmenter(SegmenterSettings(partial_interval_ms=500)), x, chunk=320)
    parts, (final,) = partials(actions), finals(actions)
    assert actions.index(final) > actions.index(parts[-1])  # the final comes after its partials
    ends = [p.end_s for p in parts]
    # Onset is confirmed after min_speech_ms; partials follow every 500 ms of new audio while
    # the tone lasts, and none in the end_silence_ms after it (the final is due).
    assert np.allclose(np.diff(ends), 0.5)
    assert len(parts) == int((5.0 - 0.06) / 0.5)
    assert ends[-1] <= 5.5
    for p in parts:
        assert p.utterance_id == final.utterance_id
        assert p.start_s == final.start_s
        assert p.audio_offset == final.audio_offset
        assert np.array_equal(p.audio, final.audio[: p.audio.size])  # a prefix of the final
        assert p.audio_offset + p.audio.size == round(p.end_s * RATE)


def test_a_partial_due_in_a_pause_waits_for_speech_and_none_delays_a_final():
    """Partials fall due only on speech: a pause (shorter than end_silence_ms) defers the due
    partial to the first speech after it, and the silence that ends an utterance holds none, so
    no partial decode runs when the final falls due."""
    x, bursts = stream_of(silence(0.5), tone(1.0), silence(0.3), tone(1.0), silence(1.0))
    (_, first_end), (second_start, second_end) = bursts
    settings = SegmenterSettings(partial_interval_ms=500, end_silence_ms=400)
    actions = run(StreamSegmenter(settings), x, chunk=320)
    parts, (final,) = partials(actions), finals(actions)
    ends = [p.end_s for p in parts]
    frame_s = settings.frame_ms / 1000
    in_pause = [e for e in ends if first_end + frame_s < e <= second_start]
    assert in_pause == [], ends
    # The partial due in the pause (1.06 + 0.5 = 1.56 s) comes once the tone is back: frames
    # are judged after they end, plus one 20 ms chunk.
    resumed = [e for e in ends if e > second_start]
    assert resumed and resumed[0] <= second_start + 2 * frame_s + 0.02, ends
    assert ends[-1] <= second_end, ends  # none after the speech: the final is next
    assert actions[-1] is final and final.reason == FinalReason.SILENCE


def test_partial_cadence_with_chunks_that_do_not_align_to_frames():
    x, _ = stream_of(silence(0.5), tone(5.0), silence(1.0))
    parts = partials(run(StreamSegmenter(), x, chunk=333))
    gaps = np.diff([p.audio_offset + p.audio.size for p in parts])  # in samples
    assert gaps.min() >= RATE // 2
    assert gaps.max() <= RATE // 2 + 333 + 320
    assert len(parts) >= 9


def test_one_push_of_many_seconds_yields_at_most_one_partial_of_the_newest_audio():
    segmenter = StreamSegmenter()
    actions = segmenter.push(tone(3.0))
    assert len(actions) == 1
    (partial,) = actions
    assert isinstance(partial, DecodePartial)
    assert partial.end_s == 3.0
    assert segmenter.stats.partials_emitted == 1


def test_skip_partials_drops_partials_but_never_audio():
    x, _ = stream_of(silence(0.3), tone(4.0), silence(0.6), tone(3.0), silence(0.5))
    normal = StreamSegmenter()
    expected = run(normal, x, chunk=320)
    lagging = StreamSegmenter()
    actions = []
    for pos in range(0, x.size, 320):
        actions += lagging.push(x[pos : pos + 320], skip_partials=True)
    actions += lagging.flush()
    assert partials(actions) == []
    assert [final_key(f) for f in finals(actions)] == [final_key(f) for f in finals(expected)]
    assert lagging.stats.partials_skipped == normal.stats.partials_emitted > 0
    assert lagging.stats.partials_emitted == 0
    assert lagging.stats.samples_in_finals == normal.stats.samples_in_finals


def test_partials_resume_once_decoding_catches_up():
    segmenter = StreamSegmenter()
    x = tone(4.0)
    behind = [segmenter.push(x[p : p + 320], skip_partials=True) for p in range(0, 32_000, 320)]
    caught_up = [segmenter.push(x[p : p + 320]) for p in range(32_000, x.size, 320)]
    assert not any(behind)
    resumed = [a for actions in caught_up for a in actions]
    assert resumed and all(isinstance(a, DecodePartial) for a in resumed)
    assert resumed[0].audio_offset == 0  # a partial always covers the utterance from its start
    assert segmenter.stats.partials_skipped == 3


def test_long_speech_is_cut_at_max_length_without_losing_a_sample():
    x, _ = stream_of(silence(0.5), noise(14.0, seed=3), silence(1.0))
    config = SegmenterSettings(max_utterance_s=4.0, pre_roll_ms=200)
    segmenter = StreamSegmenter(config)
    out = finals(run(segmenter, x, chunk=333))
    assert [f.reason for f in out] == ["max_length"] * 3 + ["silence"]
    assert [f.utterance_id for f in out] == [0, 1, 2, 3]
    assert all(f.audio.size == 4 * RATE for f in out[:3])
    for before, after in itertools.pairwise(out):
        assert after.audio_offset == before.audio_offset + before.audio.size  # contiguous
        assert after.start_s == before.end_s  # speech continues across the cut
    assert out[0].audio_offset == round(0.3 * RATE)  # 200 ms pre-roll before the onset at 0.5 s
    assert out[-1].end_s == pytest.approx(14.5)
    whole = np.concatenate([f.audio for f in out])
    assert np.array_equal(whole, x[out[0].audio_offset : out[0].audio_offset + whole.size])


def test_speech_that_stops_right_at_a_max_length_cut_gets_no_empty_final():
    x, _ = stream_of(tone(4.0), silence(2.0), tone(0.5), silence(1.0))
    config = SegmenterSettings(max_utterance_s=4.0, pre_roll_ms=0)
    out = finals(run(StreamSegmenter(config), x))
    assert [(f.reason, f.start_s) for f in out] == [("max_length", 0.0), ("silence", 6.0)]


def test_flush_on_close_ends_the_open_utterance_with_the_last_partial_frame():
    x = np.concatenate([silence(0.5), tone(1.0 + 7 / RATE)])  # not a whole number of frames
    segmenter = StreamSegmenter()
    actions = []
    for pos in range(0, x.size, 320):
        actions += segmenter.push(x[pos : pos + 320])
    assert finals(actions) == []
    assert segmenter.stats.samples_pending > 0
    (final,) = segmenter.flush()
    assert final.reason is FinalReason.FLUSH
    assert final.audio_offset + final.audio.size == x.size
    assert np.array_equal(final.audio, x[final.audio_offset :])
    assert segmenter.stats.samples_pending == 0
    assert segmenter.flush() == []  # exactly one final per utterance


def test_flush_of_silence_or_an_ended_utterance_gives_nothing():
    segmenter = StreamSegmenter()
    assert run(segmenter, silence(3.0)) == []
    assert segmenter.stats.samples_discarded_silence == 3 * RATE
    segmenter = StreamSegmenter()
    x = np.concatenate([tone(1.0), silence(1.0)])
    assert len(finals(run(segmenter, x))) == 1
    assert segmenter.flush() == []


def test_the_stream_goes_on_after_a_flush_in_stream_time():
    segmenter = StreamSegmenter()
    first = finals(run(segmenter, np.concatenate([silence(1.0), tone(1.0)])))
    second = finals(run(segmenter, np.concatenate([silence(1.0), tone(1.0)])))
    assert [f.utterance_id for f in first + second] == [0, 1]
    assert second[0].start_s == pytest.approx(3.0)
    assert segmenter.stats.samples_in == 4 * RATE


def test_clicks_shorter_than_min_speech_open_no_utterance():
    x, _ = stream_of(silence(0.5), tone(0.04, amplitude=0.9), silence(1.0))
    segmenter = StreamSegmenter(SegmenterSettings(min_speech_ms=60))
    assert run(segmenter, x) == []
    assert segmenter.stats.samples_discarded_silence == x.size


def test_quiet_audio_below_the_threshold_is_silence():
    quiet = tone(2.0, amplitude=10 ** (-50 / 20) * np.sqrt(2))  # -50 dBFS RMS
    assert frame_level_dbfs(quiet[:320]) == pytest.approx(-50, abs=0.1)
    assert run(StreamSegmenter(SegmenterSettings(speech_threshold_dbfs=-45)), quiet) == []
    assert (
        len(finals(run(StreamSegmenter(SegmenterSettings(speech_threshold_dbfs=-55)), quiet))) == 1
    )


def test_adaptive_noise_floor_separates_bursts_in_a_noisy_room():
    room = noise(30.0, amplitude=0.05, seed=7)  # about -31 dBFS, above the fixed threshold
    bursts = [(8.0, 9.5), (11.0, 12.0), (14.0, 16.0)]
    x = room.copy()
    for start, end in bursts:
        x[round(start * RATE) : round(end * RATE)] += tone(end - start, amplitude=0.4)
    fixed = finals(run(StreamSegmenter(SegmenterSettings(max_utterance_s=30)), x))
    assert len(fixed) == 1  # the room noise alone counts as speech: one endless utterance
    config = SegmenterSettings(noise_floor_margin_db=10, noise_floor_rise_db_per_s=5)
    adaptive = finals(run(StreamSegmenter(config), x))
    after_learning = [f for f in adaptive if f.start_s > 7.0]
    assert [(round(f.start_s), round(f.end_s)) for f in after_learning] == [
        (round(s), round(e)) for s, e in bursts
    ]


def test_a_model_voice_detector_plugs_in():
    class ScheduledDetector:
        """Says 'speech' for frames 50..99 whatever the audio: proves the protocol, not energy."""

        def __init__(self) -> None:
            self.frames: list[int] = []

        def is_speech(self, frame: np.ndarray) -> bool:
            assert frame.shape == (320,)
            self.frames.append(len(self.frames))
            return 50 <= len(self.frames) - 1 < 100

    detector = ScheduledDetector()
    segmenter = StreamSegmenter(SegmenterSettings(pre_roll_ms=0), detector=detector)
    (final,) = finals(run(segmenter, silence(4.0), chunk=333))
    assert len(detector.frames) == 200
    assert (final.start_s, final.end_s) == (1.0, 2.0)


def test_energy_detector_is_a_voice_detector_on_its_own():
    detector = EnergyVoiceDetector(SegmenterSettings(speech_threshold_dbfs=-30))
    assert detector.is_speech(tone(0.02, amplitude=0.1))  # -23 dBFS
    assert not detector.is_speech(tone(0.02, amplitude=0.01))  # -43 dBFS
    assert not detector.is_speech(silence(0.02))


def test_push_refuses_multichannel_audio():
    with pytest.raises(BadAudioError, match="mono"):
        StreamSegmenter().push(np.zeros((320, 2), dtype=np.float32))


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("frame_ms", 0, "frame_ms"),
        ("sample_rate_hz", 11_025, "whole number of samples"),
        ("end_silence_ms", 0, "end_silence_ms must be positive"),
        ("partial_interval_ms", -1, "partial_interval_ms"),
        ("min_speech_ms", 0, "min_speech_ms"),
        ("pre_roll_ms", -5, "pre_roll_ms"),
        ("max_utterance_s", 0.2, "max_utterance_s must exceed"),
    ],
)
def test_bad_config_is_refused_naming_the_field(field, value, words):
    with pytest.raises(BadRequestError, match=words):
        SegmenterSettings(**{field: value})


def test_durations_are_whole_frames():
    config = dataclasses.replace(SegmenterSettings(), end_silence_ms=410, frame_ms=20)
    assert config.frames(config.end_silence_ms) == 20
    assert config.frame_samples == 320
