"""The committed speech fixtures match their manifest: formats, durations, noise levels, texts."""

from __future__ import annotations

import itertools
import wave

import numpy as np
import pytest

from orchestrator.speech.fixtures import (
    MANIFEST,
    SPEECH_DIR,
    SpeechClip,
    long_clip,
    short_clips,
    speech_clips,
)

#: The set is committed: keep it small (it is about 2.7 MB).
MAX_TOTAL_BYTES = 3 * 1024 * 1024


def test_every_wav_is_in_the_manifest_and_every_entry_has_its_wav() -> None:
    on_disk = {p.name for p in SPEECH_DIR.glob("*.wav")}
    listed = [c.file for c in speech_clips()]
    assert sorted(listed) == sorted(on_disk)
    assert len(set(listed)) == len(listed)
    assert MANIFEST.is_file()


@pytest.mark.parametrize("clip", speech_clips(), ids=lambda c: c.name)
def test_wav_is_16k_mono_pcm16_of_the_stated_duration(clip: SpeechClip) -> None:
    with wave.open(str(clip.path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16_000, 1, 2)
        frames = w.getnframes()
    assert clip.raw["sample_rate"] == 16_000
    assert abs(frames / 16_000 - clip.duration_s) < 0.001
    assert clip.text.strip() and clip.voice


def test_short_clips_are_3_to_10_s_in_several_voices_with_clean_white_and_brown_copies() -> None:
    clean = [c for c in short_clips() if c.noise is None]
    assert 6 <= len(clean) <= 8
    assert all(3.0 <= c.duration_s <= 10.0 for c in clean)
    assert len({c.voice for c in clean}) >= 5
    assert len({c.raw["rate_wpm"] for c in clean}) >= 4
    for c in clean:
        copies = {n.noise: n for n in short_clips() if n.raw.get("clean") == c.file}
        assert set(copies) == {"white", "brown"}, c.file
        assert all(n.text == c.text and n.duration_s == c.duration_s for n in copies.values())


@pytest.mark.parametrize("clip", [c for c in short_clips() if c.noise], ids=lambda c: c.name)
def test_noisy_copies_are_their_clean_clip_plus_noise_at_20_db_snr(clip: SpeechClip) -> None:
    clean = next(c for c in speech_clips() if c.file == clip.raw["clean"])
    speech = clean.pcm16().astype(np.float64)
    added = clip.pcm16().astype(np.float64) - speech
    snr_db = 10 * np.log10(np.mean(speech**2) / np.mean(added**2))
    assert clip.raw["snr_db"] == 20.0
    assert abs(snr_db - 20.0) < 0.3, snr_db
    # White noise is flat; brown noise has most of its power at low frequencies.
    spectrum = np.abs(np.fft.rfft(added)) ** 2
    low = spectrum[: spectrum.size // 16].sum() / spectrum.sum()
    if clip.noise == "white":
        assert 0.03 < low < 0.1, low
    else:
        assert low > 0.9, low


def test_long_clip_has_sentences_separated_by_pauses() -> None:
    clip = long_clip()
    sentences, spans = clip.raw["sentences"], clip.raw["sentence_spans_s"]
    assert 20.0 <= clip.duration_s <= 30.0
    assert len(sentences) == len(spans) >= 4
    assert " ".join(sentences) == clip.text
    pcm = clip.pcm16().astype(np.float64)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start - end == pytest.approx(clip.raw["pause_s"], abs=0.002)
        margin = 16  # spans are rounded to the millisecond
        gap = pcm[round(end * 16_000) + margin : round(start * 16_000) - margin]
        assert np.abs(gap).max() == 0  # true silence between sentences
    assert spans[-1][1] < clip.duration_s


def test_the_committed_set_stays_small() -> None:
    total = sum(c.path.stat().st_size for c in speech_clips())
    assert total < MAX_TOTAL_BYTES, total
