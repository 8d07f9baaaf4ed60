"""Client-side decoding (orchestrator.audio.decode) of every common format, made here from real
speech (the espeak-ng fixture) with soundfile and PyAV; and what a cut or lying file gives."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from bench import vadeval
from bench.audio_files import FORMATS, write_audio
from cli_support import public_coordinator, run_cli, short_tmp_dir, synthetic_toml
from orchestrator.audio.decode import open_audio
from orchestrator.audio.resample import resample
from orchestrator.audio.wav import write_wav
from orchestrator.coordinator.config import config_from_dict
from orchestrator.host.synthetic import parse_fingerprint
from orchestrator.wire.errors import BadAudioError

RATE = 44_100
SECONDS = 4.0
LOSSLESS = {"wav", "flac"}
#: Expected (codec, container) per format, as the info reports them before decoding.
NAMES = {
    "wav": ("pcm_s16le", "wav"),
    "flac": ("pcm_16", "flac"),
    "ogg-vorbis": ("vorbis", "ogg"),
    "ogg-opus": ("opus", "ogg"),
    "mp3": ("mp3float", "mp3"),
    "m4a-aac": ("aac", "mov"),
    "webm-opus": ("opus", "matroska"),
}


@pytest.fixture(scope="module")
def stereo_speech() -> np.ndarray:
    """Four seconds of the speech fixture at 44.1 kHz, at half level, a quieter copy on the right."""
    speech = resample(vadeval.load_fixture().speech[: int(SECONDS * 16_000)], 16_000, RATE)
    return np.stack([0.5 * speech, 0.25 * speech], axis=1)  # headroom: no clipping in PCM16


@pytest.fixture(scope="module")
def files(stereo_speech: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("formats")
    return {fmt: write_audio(folder / "speech", stereo_speech, RATE, fmt) for fmt in FORMATS}


def best_correlation(y: np.ndarray, ref: np.ndarray, max_lag: int = 4_096) -> float:
    """Normalised cross-correlation at the best lag (codecs add priming delay)."""
    n = min(y.size, ref.size) - max_lag
    a = ref[max_lag : max_lag + n]
    best = 0.0
    for lag in range(0, 2 * max_lag, 1):
        b = y[lag : lag + n]
        if b.size < n:
            break
        best = max(best, float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b))))
    return best


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_decodes_to_the_speech_it_holds(
    fmt: str, files: dict[str, Path], stereo_speech: np.ndarray
) -> None:
    with open_audio(files[fmt]) as audio:
        info = audio.info  # known before a single block is decoded
        assert (info.codec, info.container) == NAMES[fmt]
        assert info.channels == 2
        assert info.sample_rate == (48_000 if "opus" in fmt else RATE)
        assert info.duration_s == pytest.approx(SECONDS, abs=0.1)
        at_16k = audio.read(sample_rate=16_000)
        assert audio.warnings == []
    assert at_16k.dtype == np.float32
    assert at_16k.size == pytest.approx(SECONDS * 16_000, abs=0.1 * 16_000)
    reference = resample(stereo_speech.mean(axis=1).astype(np.float32), RATE, 16_000)
    if fmt in LOSSLESS:
        assert np.abs(at_16k - reference).max() < 1e-3
    else:
        # Lag 0 and 1024 samples (AAC priming): correlation of speech through a lossy codec.
        assert best_correlation(at_16k, reference, max_lag=1_200) > 0.97


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "webm-opus"])
def test_blocks_are_bounded_whatever_the_length(
    fmt: str, stereo_speech: np.ndarray, tmp_path: Path
) -> None:
    """A 40 s file in blocks of 8192 frames: never more than a block (+ one codec frame)."""
    long = np.concatenate([stereo_speech] * 10)
    path = write_audio(tmp_path / "long", long, RATE, fmt)
    with open_audio(path) as audio:
        sizes = [block.size for block in audio.blocks(block_frames=8_192)]
    assert max(sizes) <= 8_192 + 2_048
    assert sum(sizes) / audio.info.sample_rate == pytest.approx(10 * SECONDS, abs=0.2)


def test_wav_cut_to_half_its_data_warns_with_the_real_duration(
    files: dict[str, Path], tmp_path: Path
) -> None:
    data = files["wav"].read_bytes()
    cut = tmp_path / "half.wav"
    cut.write_bytes(data[: 44 + (len(data) - 44) // 2])
    with open_audio(cut) as audio:
        assert audio.info.duration_s == pytest.approx(SECONDS / 2, abs=0.01)
        (warning,) = audio.warnings  # known at open, before any host is asked
        assert "declares 4.00 s" in warning and "holds 2.00 s" in warning
        assert audio.read().size == pytest.approx(SECONDS / 2 * RATE, abs=2)


def test_wav_header_declaring_4_gb_for_0_73_s_warns(tmp_path: Path) -> None:
    path = tmp_path / "liar.wav"
    write_wav(path, np.sin(np.arange(int(0.73 * 16_000)) / 5) * 0.3, 16_000)
    data = bytearray(path.read_bytes())
    data[40:44] = struct.pack("<I", 0xFFFF_FFF0)  # the data chunk's size field
    path.write_bytes(bytes(data))
    with open_audio(path) as audio:
        assert audio.info.duration_s == pytest.approx(0.73, abs=0.001)
        (warning,) = audio.warnings
        assert "holds 0.73 s" in warning and "missing" in warning
        assert audio.read().size == int(0.73 * 16_000)


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "wav"])
def test_a_compressed_file_cut_in_half_warns_or_refuses_never_silence(
    fmt: str, files: dict[str, Path], tmp_path: Path
) -> None:
    data = files[fmt].read_bytes()
    cut = tmp_path / f"cut{files[fmt].suffix}"
    cut.write_bytes(data[: len(data) // 2])
    try:
        with open_audio(cut) as audio:
            decoded = audio.read()
            warnings = audio.warnings
    except BadAudioError as exc:  # nothing usable (an MP4 whose index was at its end)
        assert str(cut) in str(exc) and "cut short" in str(exc)
        return
    assert warnings, f"{fmt}: a file cut in half decoded without a word"
    assert "cut short" in warnings[0] or "truncated" in warnings[0]
    assert decoded.size < 0.75 * SECONDS * audio.info.sample_rate
    assert np.abs(decoded).max() > 0.05  # what is there is the speech, not padding


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "empty"),
        (b"this is not audio at all, just text" * 20, "cannot decode"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "no valid 'fmt '"),
    ],
)
def test_unusable_files_raise_bad_audio_naming_the_file(
    tmp_path: Path, content: bytes, words: str
) -> None:
    path = tmp_path / "bad.mp3"
    path.write_bytes(content)
    with pytest.raises(BadAudioError, match=words) as info:
        open_audio(path)
    assert str(path) in str(info.value)


def test_a_wav_holding_only_its_header_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "header-only.wav"
    path.write_bytes(files["wav"].read_bytes()[:44])
    with pytest.raises(BadAudioError, match=r"contains no audio .*declares 4\.00 s"):
        open_audio(path)


def test_a_missing_file_is_bad_audio_naming_it(tmp_path: Path) -> None:
    with pytest.raises(BadAudioError, match=r"absent\.m4a"):
        open_audio(tmp_path / "absent.m4a")


def test_transcribe_cli_reads_an_mp3_and_reports_a_cut_wav(
    files: dict[str, Path], tmp_path: Path
) -> None:
    cut = tmp_path / "half.wav"
    data = files["wav"].read_bytes()
    cut.write_bytes(data[: 44 + (len(data) - 44) // 2])
    with short_tmp_dir() as folder:
        config = config_from_dict(synthetic_toml(folder / "rt", {"syn": {"models": {"echo": "x"}}}))
        with public_coordinator(config) as coord:
            conn = str(coord.connection_file)
            mp3 = run_cli("transcribe", str(files["mp3"]), "--model", "echo", "--connection-file", conn, "--json")  # fmt: skip
            half = run_cli("transcribe", str(cut), "--model", "echo", "--connection-file", conn, "--json")  # fmt: skip
    assert mp3.returncode == 0, mp3.stderr
    report = json.loads(mp3.stdout)
    assert report["audio"]["codec"] == "mp3float" and report["warnings"] == []
    n = parse_fingerprint(report["results"][0]["text"])["n"]
    assert n == pytest.approx(SECONDS * 16_000, abs=0.1 * 16_000)  # sent at 16 kHz
    assert half.returncode == 0, half.stderr
    report = json.loads(half.stdout)
    assert "holds 2.00 s" in report["warnings"][0] and "holds 2.00 s" in half.stderr
    assert parse_fingerprint(report["results"][0]["text"])["n"] == 2 * 16_000
