"""Audio validation, conversion, resampling and WAV reading (orchestrator.audio)."""

from __future__ import annotations

import struct
import wave

import numpy as np
import pytest

from orchestrator.audio import pcm, wav
from orchestrator.audio import resample as resampling
from orchestrator.errors import BadAudioError, ErrorCode
from orchestrator.wire.formats import AudioFormat

RATE = 16_000


def sine(freq_hz: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def level_db(x: np.ndarray, reference_rms: float) -> float:
    return 20 * np.log10(max(rms(x), 1e-12) / reference_rms)


def interior(x: np.ndarray, margin: int = 2_000) -> np.ndarray:
    """Drop the filter's start-up and tail, where zero padding shows."""
    return x[margin:-margin]


# --- sample rates -----------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8_000, 16_000, 44_100, 192_000, np.int64(48_000)])
def test_sample_rates_in_range_are_accepted(rate):
    assert pcm.check_sample_rate(rate) == int(rate)


@pytest.mark.parametrize(
    ("rate", "words"),
    [
        (7_999, "outside"),
        (192_001, "outside"),
        (0, "outside"),
        (-16_000, "outside"),
        (16_000.0, "integer"),
        (16_000.5, "integer"),
        ("16000", "integer"),
        (None, "integer"),
        (True, "integer"),
    ],
)
def test_bad_sample_rates_are_refused_with_the_reason(rate, words):
    with pytest.raises(BadAudioError, match=words) as info:
        pcm.check_sample_rate(rate)
    assert info.value.code == ErrorCode.BAD_AUDIO


# --- decode_payload ---------------------------------------------------------------------------


def test_pcm16_payload_decodes_to_float_in_unit_range():
    ints = np.array([-32_768, -16_384, 0, 1, 16_384, 32_767], dtype="<i2")
    out = pcm.decode_payload(ints.tobytes(), "pcm16", RATE)
    assert out.dtype == np.float32
    assert np.array_equal(out, ints.astype(np.float32) / 32_768)
    out[0] = 0.25  # callers may modify what they get: it is not a read-only view of the frame


def test_pcm16_roundtrip_is_exact_for_every_int16_value():
    ints = np.arange(-32_768, 32_768, dtype="<i2")
    floats = pcm.pcm16_to_float(ints.tobytes())
    assert pcm.float_to_pcm16(floats) == ints.tobytes()


@pytest.mark.parametrize("container", [bytes, bytearray, memoryview])
def test_decode_accepts_any_bytes_like_payload(container):
    ints = np.array([1, -2, 3], dtype="<i2")
    out = pcm.decode_payload(container(ints.tobytes()), AudioFormat.PCM16, RATE)
    assert np.array_equal(out, ints / 32_768)


def test_decode_measures_a_typed_memoryview_in_bytes():
    ints = np.array([100, 200, 300], dtype="<i2")
    out = pcm.decode_payload(memoryview(ints), "pcm16", RATE)
    assert np.array_equal(out, ints / 32_768)


def test_odd_length_pcm16_is_refused():
    with pytest.raises(BadAudioError, match="odd length"):
        pcm.decode_payload(b"\x00\x01\x02", "pcm16", RATE)


def test_f32_payload_decodes_unchanged_inside_unit_range():
    x = np.array([-1.0, -0.5, 0.0, 0.25, 1.0], dtype="<f4")
    assert np.array_equal(pcm.decode_payload(x.tobytes(), "f32", RATE), x)


@pytest.mark.parametrize("extra_bytes", [1, 2, 3])
def test_f32_payload_length_must_be_whole_samples(extra_bytes):
    data = np.zeros(4, dtype="<f4").tobytes() + b"\x00" * extra_bytes
    with pytest.raises(BadAudioError, match="multiple of 4"):
        pcm.decode_payload(data, "f32", RATE)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_floats_are_refused(bad):
    data = np.array([0.0, bad, 0.1], dtype="<f4").tobytes()
    with pytest.raises(BadAudioError, match="NaN or infinite"):
        pcm.decode_payload(data, "f32", RATE)


def test_small_float_overshoot_is_clipped():
    data = np.array([1.2, -1.4, 0.5], dtype="<f4").tobytes()
    assert np.array_equal(pcm.decode_payload(data, "f32", RATE), [1.0, -1.0, 0.5])


@pytest.mark.parametrize("peak", [1.6, 200.0, 32_767.0])
def test_unnormalised_floats_are_refused_with_a_hint(peak):
    data = np.array([0.0, peak], dtype="<f4").tobytes()
    with pytest.raises(BadAudioError, match=r"normalised.*divide by 32768"):
        pcm.decode_payload(data, "f32", RATE)


@pytest.mark.parametrize("fmt", ["pcm16", "f32"])
def test_empty_audio_is_refused_unless_allowed(fmt):
    with pytest.raises(BadAudioError, match="empty"):
        pcm.decode_payload(b"", fmt, RATE)
    out = pcm.decode_payload(b"", fmt, RATE, allow_empty=True)
    assert out.dtype == np.float32
    assert out.size == 0


def test_unknown_sample_format_is_refused_naming_the_known_ones():
    with pytest.raises(BadAudioError, match=r"unknown sample format 'mp3'.*pcm16, f32"):
        pcm.decode_payload(b"\x00\x00", "mp3", RATE)


def test_decode_checks_the_sample_rate():
    with pytest.raises(BadAudioError, match="sample rate"):
        pcm.decode_payload(b"\x00\x00", "pcm16", None)


# --- encode_audio -----------------------------------------------------------------------------


def test_pcm16_bytes_are_sent_as_they_are():
    data = np.array([5, -5, 32_767], dtype="<i2").tobytes()
    assert pcm.encode_audio(data, RATE) == (data, AudioFormat.PCM16)
    assert pcm.encode_audio(bytearray(data), RATE) == (data, AudioFormat.PCM16)


@pytest.mark.parametrize("dtype", ["<i2", ">i2"])
def test_int16_arrays_are_sent_as_little_endian_pcm16(dtype):
    ints = np.array([1, -2, 300, -32_768], dtype=dtype)
    payload, fmt = pcm.encode_audio(ints, RATE)
    assert fmt is AudioFormat.PCM16
    assert np.array_equal(np.frombuffer(payload, dtype="<i2"), ints)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_arrays_are_sent_as_f32_and_decode_back(dtype):
    x = sine(440, RATE, 0.1).astype(dtype)
    payload, fmt = pcm.encode_audio(x, RATE)
    assert fmt is AudioFormat.F32
    assert np.array_equal(pcm.decode_payload(payload, fmt, RATE), x.astype(np.float32))


def test_column_vector_counts_as_mono():
    x = sine(440, RATE, 0.01)
    assert pcm.encode_audio(x[:, None], RATE) == pcm.encode_audio(x, RATE)


@pytest.mark.parametrize("shape", [(100, 2), (2, 100), (1, 100), (10, 10, 1)])
def test_multichannel_arrays_are_refused_with_a_downmix_hint(shape):
    with pytest.raises(BadAudioError, match=r"mono.*Downmix"):
        pcm.encode_audio(np.zeros(shape, dtype=np.float32), RATE)


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (np.zeros(10, dtype=np.int32), "int16 or float"),
        (np.zeros(10, dtype=np.uint8), "int16 or float"),
        (np.array([0.1, np.nan], dtype=np.float32), "NaN"),
        (np.array([0.1, 3.0]), "normalised"),
        (np.zeros(0, dtype=np.float32), "empty"),
        (b"", "empty"),
        (b"\x01\x02\x03", "odd length"),
        ([0.1, 0.2], "bytes or a numpy array"),
    ],
)
def test_client_side_checks_refuse_bad_audio_before_sending(bad, words):
    with pytest.raises(BadAudioError, match=words):
        pcm.encode_audio(bad, RATE)


def test_encode_checks_the_sample_rate():
    with pytest.raises(BadAudioError, match="outside"):
        pcm.encode_audio(np.zeros(10, dtype=np.int16), 4_000)


# --- resampling -------------------------------------------------------------------------------


def test_resampling_to_the_same_rate_passes_the_audio_through():
    x = sine(440, RATE, 0.1)
    assert resampling.resample(x, RATE, RATE) is x


@pytest.mark.parametrize("src", [8_000, 11_025, 22_050, 32_000, 44_100, 48_000, 96_000])
def test_resampled_sine_keeps_its_frequency_and_amplitude(src):
    y = resampling.resample(sine(1_000, src, 2.0, amplitude=0.5), src, RATE)
    assert y.dtype == np.float32
    assert y.size == 2 * RATE
    body = interior(y)
    spectrum = np.abs(np.fft.rfft(body * np.hanning(body.size)))
    peak_hz = np.argmax(spectrum) * RATE / body.size
    assert abs(peak_hz - 1_000) <= RATE / body.size
    assert rms(body) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


@pytest.mark.parametrize(("src", "dst"), [(16_000, 44_100), (16_000, 48_000), (8_000, 16_000)])
def test_upsampled_sine_keeps_its_frequency_and_amplitude(src, dst):
    y = resampling.resample(sine(1_000, src, 1.0), src, dst)
    assert y.size == dst
    body = interior(y)
    spectrum = np.abs(np.fft.rfft(body * np.hanning(body.size)))
    assert abs(np.argmax(spectrum) * dst / body.size - 1_000) <= dst / body.size
    assert rms(body) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_output_length_is_the_rounded_ratio():
    for n in (1, 2, 3, 440, 441, 1_000, 4_411):
        assert resampling.resample(np.ones(n, dtype=np.float32), 44_100, RATE).size == round(
            n * RATE / 44_100
        )


def test_tone_at_90_percent_of_the_output_nyquist_is_kept():
    y = interior(resampling.resample(sine(7_200, 48_000, 1.0), 48_000, RATE))
    assert rms(y) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


@pytest.mark.parametrize(("src", "freq_hz"), [(48_000, 10_000), (44_100, 10_000), (48_000, 20_000)])
def test_tones_above_the_output_nyquist_do_not_alias(src, freq_hz):
    y = interior(resampling.resample(sine(freq_hz, src, 1.0), src, RATE))
    assert level_db(y, 0.5 / np.sqrt(2)) < -60


@pytest.mark.parametrize("src", [44_100, 48_000])
def test_tone_just_above_the_new_nyquist_comes_out_below_minus_60_db(src):
    """8.4 kHz is 5% past 16 kHz's Nyquist: the band the old filter let through at -7.9 dB."""
    y = interior(resampling.resample(sine(8_400, src, 1.0), src, RATE))
    assert level_db(y, 0.5 / np.sqrt(2)) <= -60


def test_upsampling_leaves_no_image_of_the_input_band():
    y = interior(resampling.resample(sine(3_000, 8_000, 2.0), 8_000, RATE))
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    freqs = np.fft.rfftfreq(y.size, 1 / RATE)
    signal = spectrum[np.abs(freqs - 3_000) < 20].max()
    image = spectrum[np.abs(freqs - 5_000) < 20].max()  # 8 kHz - 3 kHz
    assert 20 * np.log10(image / signal) < -60


def test_constant_signal_keeps_its_level_in_every_phase():
    y = interior(resampling.resample(np.full(44_100, 0.5, dtype=np.float32), 44_100, RATE))
    assert np.allclose(y, 0.5, atol=1e-5)


@pytest.mark.parametrize(
    ("src", "chunk"), [(44_100, 441), (48_000, 333), (8_000, 7), (22_050, 4_096)]
)
def test_chunked_resampling_equals_resampling_the_whole(src, chunk):
    x = np.random.default_rng(3).uniform(-0.5, 0.5, src).astype(np.float32)
    resampler = resampling.Resampler(src, RATE)
    parts = [resampler.process(x[i : i + chunk]) for i in range(0, x.size, chunk)]
    parts.append(resampler.flush())
    assert np.allclose(np.concatenate(parts), resampling.resample(x, src, RATE), atol=1e-6)


def test_streaming_in_20_ms_chunks_equals_one_shot():
    src = 44_100
    x = sine(440, src, 3.0) + np.random.default_rng(4).uniform(-0.1, 0.1, 3 * src).astype(
        np.float32
    )
    resampler = resampling.Resampler(src, RATE)
    step = src // 50
    parts = [resampler.process(x[i : i + step]) for i in range(0, x.size, step)]
    parts.append(resampler.flush())
    streamed = np.concatenate(parts)
    assert streamed.size == round(x.size * RATE / src)
    assert np.abs(streamed - resampling.resample(x, src, RATE)).max() <= 1e-6


@pytest.mark.parametrize(("src", "dst"), [(0, RATE), (RATE, -1), (16_000.5, RATE)])
def test_resampler_refuses_bad_rates(src, dst):
    with pytest.raises(BadAudioError, match="positive integers"):
        resampling.Resampler(src, dst)


# --- WAV files --------------------------------------------------------------------------------


def write_stdlib_wav(path, ints: np.ndarray, width: int, rate: int, channels: int) -> None:
    """Write integer samples with the standard library's wave module (the reference writer)."""
    if width == 3:
        raw = ints.astype("<i4").tobytes()
        data = b"".join(raw[i : i + 3] for i in range(0, len(raw), 4))
    elif width == 1:
        data = (ints + 128).astype(np.uint8).tobytes()
    else:
        data = ints.astype(f"<i{width}").tobytes()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(data)


@pytest.mark.parametrize("bits", [8, 16, 24, 32])
@pytest.mark.parametrize("channels", [1, 2])
def test_integer_pcm_wavs_read_as_mono_float(tmp_path, bits, channels):
    full_scale = 2 ** (bits - 1)
    rng = np.random.default_rng(bits)
    ints = rng.integers(-full_scale, full_scale, size=(500, channels))
    path = tmp_path / f"pcm{bits}.wav"
    write_stdlib_wav(path, ints.reshape(-1), bits // 8, 22_050, channels)
    samples, rate = wav.read_wav(path)
    assert rate == 22_050
    assert samples.dtype == np.float32
    assert np.allclose(samples, ints.mean(axis=1) / full_scale, atol=1e-6)


def riff(*chunks: tuple[bytes, bytes]) -> bytes:
    """A RIFF/WAVE file from (id, body) chunks, padding odd bodies as the format requires."""
    body = b"WAVE" + b"".join(
        cid + struct.pack("<I", len(data)) + data + b"\x00" * (len(data) & 1)
        for cid, data in chunks
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt_chunk(tag: int, channels: int, rate: int, bits: int) -> bytes:
    align = channels * bits // 8
    return struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)


def extensible_fmt(subformat: int, channels: int, rate: int, bits: int) -> bytes:
    guid = struct.pack("<H", subformat) + wav._SUBFORMAT_TAIL
    return fmt_chunk(0xFFFE, channels, rate, bits) + struct.pack("<HHI", 22, bits, 0) + guid


@pytest.mark.parametrize("bits", [32, 64])
def test_ieee_float_wavs_are_read(tmp_path, bits):
    x = np.array([[0.5, -0.25], [1.0, 1.0], [-0.75, 0.25]])
    path = tmp_path / "float.wav"
    data = x.astype(f"<f{bits // 8}").tobytes()
    path.write_bytes(riff((b"fmt ", fmt_chunk(3, 2, 48_000, bits)), (b"data", data)))
    samples, rate = wav.read_wav(path)
    assert rate == 48_000
    assert np.array_equal(samples, [0.125, 1.0, -0.25])


@pytest.mark.parametrize(("subformat", "bits", "dtype"), [(1, 16, "<i2"), (3, 32, "<f4")])
def test_wave_format_extensible_is_read(tmp_path, subformat, bits, dtype):
    values = np.array([0.5, -0.5, 0.25])
    stored = values * 32_768 if subformat == 1 else values
    path = tmp_path / "ext.wav"
    path.write_bytes(
        riff(
            (b"fmt ", extensible_fmt(subformat, 1, 16_000, bits)),
            (b"data", stored.astype(dtype).tobytes()),
        )
    )
    samples, rate = wav.read_wav(path)
    assert rate == 16_000
    assert np.array_equal(samples, values)


def test_chunks_before_the_data_are_skipped_with_their_padding(tmp_path):
    ints = np.array([1_000, -1_000], dtype="<i2")
    path = tmp_path / "list.wav"
    path.write_bytes(
        riff(
            (b"LIST", b"odd"),  # 3 bytes + pad byte
            (b"fmt ", fmt_chunk(1, 1, 8_000, 16)),
            (b"fact", b"\x02\x00\x00\x00"),
            (b"data", ints.tobytes()),
        )
    )
    samples, _ = wav.read_wav(path)
    assert np.array_equal(samples, ints / 32_768)


def test_data_chunk_longer_than_the_file_reads_what_is_there(tmp_path):
    """Recorders that crash (or stream) leave a wrong data size; the whole frames are read."""
    ints = np.array([10, 20, 30], dtype="<i2")
    whole = riff((b"fmt ", fmt_chunk(1, 1, 8_000, 16)), (b"data", ints.tobytes()))
    lying = whole[:-10] + struct.pack("<I", 0xFFFFFFFF) + whole[-6:] + b"\x07"
    path = tmp_path / "truncated.wav"
    path.write_bytes(lying)
    samples, _ = wav.read_wav(path)
    assert np.array_equal(samples, ints / 32_768)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"ID3\x03\x00 an mp3", "not a RIFF/WAVE"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "not a RIFF/WAVE"),
        (b"", "not a RIFF/WAVE"),
        (riff((b"data", b"\x00\x00")), "no valid 'fmt '"),
        (riff((b"fmt ", fmt_chunk(1, 1, 8_000, 16))), "no 'data'"),
        (riff((b"fmt ", fmt_chunk(2, 1, 8_000, 16)), (b"data", b"\x00\x00")), "unsupported"),
        (riff((b"fmt ", fmt_chunk(3, 1, 8_000, 16)), (b"data", b"\x00\x00")), "unsupported"),
        (riff((b"fmt ", fmt_chunk(1, 1, 8_000, 12)), (b"data", b"\x00\x00")), "inconsistent"),
        (riff((b"fmt ", fmt_chunk(1, 0, 8_000, 16)), (b"data", b"\x00\x00")), "inconsistent"),
        (riff((b"fmt ", fmt_chunk(1, 1, 8_000, 16)), (b"data", b"")), "no audio"),
        (
            riff(
                (b"fmt ", extensible_fmt(1, 1, 8_000, 16)[:-16] + b"\x00" * 16),
                (b"data", b"\x00\x00"),
            ),
            "unsupported subformat",
        ),
    ],
)
def test_unreadable_wavs_are_refused_with_the_reason(tmp_path, content, words):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(BadAudioError, match=words) as info:
        wav.read_wav(path)
    assert str(path) in str(info.value)


def test_write_wav_round_trips_through_read_wav_and_stdlib_wave(tmp_path):
    x = sine(440, RATE, 0.25, amplitude=0.9)
    path = tmp_path / "out.wav"
    wav.write_wav(path, x, RATE)
    with wave.open(str(path)) as check:
        assert (check.getnchannels(), check.getsampwidth(), check.getframerate()) == (1, 2, RATE)
        assert check.getnframes() == x.size
    samples, rate = wav.read_wav(path)
    assert rate == RATE
    assert np.max(np.abs(samples - x)) <= 0.5 / 32_768 + 1e-7


def test_write_wav_refuses_audio_it_cannot_store(tmp_path):
    with pytest.raises(BadAudioError, match="NaN"):
        wav.write_wav(tmp_path / "nan.wav", np.array([np.nan], dtype=np.float32), RATE)
    with pytest.raises(BadAudioError, match="mono"):
        wav.write_wav(tmp_path / "stereo.wav", np.zeros((10, 2), dtype=np.float32), RATE)
