"""Word timing and language on every result: engine -> wire -> client events -> CLI JSON.

The synthetic engine times its words when asked (``word_timestamps=True``): its text's tokens
spread evenly over the audio. Real processes and sockets carry them; the Whisper engines fill the
same fields from their timestamp tokens (contract: ``orchestrator.host.engine.Word``).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from cli_support import public_coordinator, run_cli, short_tmp_dir, synthetic_toml
from orchestrator.audio.wav import write_wav
from orchestrator.coordinator.config import config_from_dict
from orchestrator.host.engine import Segment, Word
from orchestrator.wire.errors import BadRequestError
from stream_support import speech_like
from support import make_config, running


def check_words(words: tuple[Word, ...], text: str, start_s: float, end_s: float) -> None:
    assert words, "no words"
    assert " ".join(w.word for w in words) == text
    assert words[0].start == pytest.approx(start_s, abs=1e-3)
    assert words[-1].end == pytest.approx(end_s, abs=1e-3)
    assert all(w.start <= w.end for w in words)
    assert all(a.end <= b.start + 1e-6 for a, b in itertools.pairwise(words))
    assert all(w.probability == 1.0 for w in words)


def test_segment_and_words_round_trip_the_wire_and_shift_to_stream_time() -> None:
    segment = Segment(0.0, 1.0, "a b", (Word("a", 0.0, 0.4, 0.9), Word("b", 0.5, 1.0, None)))
    assert Segment.from_wire(json.loads(json.dumps(segment.to_wire()))) == segment
    assert "words" not in Segment(0.0, 1.0, "a").to_wire()  # no key without word timing
    moved = segment.shifted(10.0)
    assert (moved.start, moved.words[1].start, moved.words[1].end) == (10.0, 10.5, 11.0)


def test_one_shot_results_carry_words_only_when_asked() -> None:
    pcm = (np.sin(np.arange(24_000) / 7) * 8_000).astype(np.int16)
    with running(make_config()) as coord:
        client = coord.sync_client()
        plain = client.transcribe(pcm, sample_rate=16_000, model="echo")
        timed = client.transcribe(pcm, sample_rate=16_000, model="echo", word_timestamps=True)
        with pytest.raises(BadRequestError, match="word_timestamps must be true or false"):
            client.transcribe(pcm, sample_rate=16_000, model="echo", word_timestamps="yes")
        client.close()
    assert plain.words == () and plain.language == "en"
    check_words(timed.words, timed.text, 0.0, 1.5)


def test_stream_partials_and_finals_carry_language_and_words_in_stream_time() -> None:
    sent = speech_like(bursts=2, seed=5)
    with running(make_config()) as coord:
        client = coord.sync_client()
        with client.stream(model="echo", sample_rate=16_000, word_timestamps=True) as stream:
            for chunk in sent.chunks():
                stream.send(chunk)
            stream.close()
            events = list(stream)
        client.close()
    finals = [e for e in events if e.type == "final"]
    partials = [e for e in events if e.type == "partial"]
    assert len(finals) == 2 and partials
    for event in (*finals, *partials):
        assert event.language == "en"
        first_s = event.raw["audio_offset"] / 16_000 if event.type == "final" else None
        if first_s is not None:
            check_words(event.words, event.text, first_s, first_s + event.raw["n_samples"] / 16_000)
        else:
            assert event.words and event.words[-1].end == pytest.approx(event.end_s, abs=1e-3)


def test_transcribe_json_has_segments_with_words(tmp_path: Path) -> None:
    wav = tmp_path / "clip.wav"
    write_wav(wav, 0.3 * np.sin(np.arange(16_000) / 5), 16_000)
    with short_tmp_dir() as folder:
        config = config_from_dict(synthetic_toml(folder / "rt", {"syn": {"models": {"echo": "x"}}}))
        with public_coordinator(config) as coord:
            conn = str(coord.connection_file)
            out = run_cli("transcribe", str(wav), "--model", "echo", "--connection-file", conn, "--json", "--word-timestamps")  # fmt: skip
    assert out.returncode == 0, out.stderr
    (result,) = json.loads(out.stdout)["results"]
    (segment,) = result["segments"]
    assert result["language"] == "en"
    words = tuple(Word.from_wire(w) for w in segment["words"])
    check_words(words, result["text"], 0.0, 1.0)
