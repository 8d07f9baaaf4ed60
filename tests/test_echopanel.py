"""EchoPanel binary WebSocket frames (orchestrator.echopanel)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator import echopanel
from orchestrator.echopanel import EchoPanelFrame, FrameError, Mode, Source
from orchestrator.errors import BadRequestError, ErrorCode, error_from_wire

PCM = np.array([0, 1, -1, 32_767, -32_768], dtype="<i2").tobytes()


def raw(version=1, source=0, mode=0, pcm=PCM, magic=b"EP") -> bytes:
    """A frame assembled by hand, so tests do not trust build_frame to make the bad ones."""
    return magic + bytes([version, source, mode]) + pcm


@pytest.mark.parametrize("source", list(Source))
@pytest.mark.parametrize("mode", list(Mode))
def test_every_valid_header_parses(source, mode):
    frame = echopanel.parse_frame(raw(source=source, mode=mode))
    assert frame == EchoPanelFrame(1, source, mode, PCM)
    assert isinstance(frame.source, Source)
    assert isinstance(frame.mode, Mode)


@pytest.mark.parametrize("source", list(Source))
@pytest.mark.parametrize("mode", list(Mode))
def test_build_then_parse_round_trips(source, mode):
    data = echopanel.build_frame(PCM, source=source, mode=mode)
    assert data == raw(source=source, mode=mode)
    assert echopanel.parse_frame(data) == EchoPanelFrame(1, source, mode, PCM)


def test_wire_values_are_the_documented_ones():
    assert (Source.MICROPHONE, Source.SYSTEM_AUDIO) == (0, 1)
    assert (Mode.SERVER_ASR, Mode.ON_DEVICE, Mode.HYBRID) == (0x00, 0x01, 0x02)
    assert echopanel.HEADER_SIZE == 5


@pytest.mark.parametrize("container", [bytes, bytearray, memoryview])
def test_any_bytes_like_frame_parses_to_bytes_pcm(container):
    frame = echopanel.parse_frame(container(raw()))
    assert type(frame.pcm) is bytes
    assert frame.pcm == PCM


def test_frame_samples_are_the_pcm_as_float():
    frame = echopanel.parse_frame(raw())
    samples = frame.samples()
    assert samples.dtype == np.float32
    assert np.array_equal(samples, np.frombuffer(PCM, dtype="<i2") / 32_768)


def test_header_only_frame_is_valid_and_carries_no_audio():
    frame = echopanel.parse_frame(raw(pcm=b""))
    assert frame.pcm == b""
    assert frame.samples().size == 0


@pytest.mark.parametrize(
    ("mode", "ours"), [(Mode.SERVER_ASR, True), (Mode.ON_DEVICE, False), (Mode.HYBRID, True)]
)
def test_only_server_and_hybrid_modes_are_ours_to_transcribe(mode, ours):
    assert echopanel.wants_server_asr(mode) is ours
    assert echopanel.wants_server_asr(int(mode)) is ours
    assert echopanel.parse_frame(raw(mode=mode)).wants_server_asr is ours


@pytest.mark.parametrize(
    ("data", "reason", "words"),
    [
        (b"", "short", "0 bytes is shorter than its 5-byte header"),
        (b"EP\x01\x00", "short", "4 bytes"),
        (raw(magic=b"XX"), "bad_magic", "starts with b'XX'"),
        (raw(magic=b"ep"), "bad_magic", "expected b'EP'"),
        (raw(version=0), "version", "version 0 is not supported"),
        (raw(version=2), "version", "we speak 1"),
        (raw(source=2), "source", "unknown EchoPanel source 2; known: 0 .microphone., 1"),
        (raw(source=255), "source", "source 255"),
        (raw(mode=3), "mode", "unknown EchoPanel mode 0x03"),
        (raw(mode=0xFF), "mode", "0xff"),
        (raw(pcm=PCM + b"\x01"), "odd_pcm", "odd length \\(11 bytes\\)"),
        (raw(pcm=b"\x01"), "odd_pcm", "odd length"),
    ],
)
def test_malformed_frames_are_refused_with_a_stable_reason(data, reason, words):
    with pytest.raises(FrameError, match=words) as info:
        echopanel.parse_frame(data)
    assert info.value.reason == reason


def test_frame_error_is_a_bad_request_that_survives_the_wire():
    with pytest.raises(FrameError) as info:
        echopanel.parse_frame(raw(mode=9))
    err = info.value
    assert isinstance(err, BadRequestError)
    assert err.code == ErrorCode.BAD_REQUEST
    rebuilt = error_from_wire(err.to_wire())
    assert isinstance(rebuilt, BadRequestError)
    assert rebuilt.details["reason"] == "mode"
    assert rebuilt.message == err.message


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"pcm": b"\x01\x02\x03"}, "odd_pcm"),
        ({"pcm": PCM, "source": 7}, "source"),
        ({"pcm": PCM, "mode": 4}, "mode"),
        ({"pcm": PCM, "version": 2}, "version"),
    ],
)
def test_build_frame_refuses_what_parse_frame_would(kwargs, reason):
    with pytest.raises(FrameError) as info:
        echopanel.build_frame(**kwargs)
    assert info.value.reason == reason


@given(
    st.one_of(
        st.binary(max_size=64),
        st.binary(max_size=64).map(lambda tail: b"EP" + tail),
        st.binary(max_size=64).map(lambda tail: b"EP\x01" + tail),
    )
)
def test_arbitrary_bytes_either_parse_or_raise_frame_error(data):
    try:
        frame = echopanel.parse_frame(data)
    except FrameError as err:
        assert err.reason in {"short", "bad_magic", "version", "source", "mode", "odd_pcm"}
    else:
        assert echopanel.build_frame(frame.pcm, source=frame.source, mode=frame.mode) == data


@given(
    st.sampled_from(list(Source)),
    st.sampled_from(list(Mode)),
    st.binary(max_size=200).filter(lambda b: len(b) % 2 == 0),
)
def test_any_valid_frame_round_trips(source, mode, pcm):
    frame = echopanel.parse_frame(echopanel.build_frame(pcm, source=source, mode=mode))
    assert (frame.source, frame.mode, frame.pcm) == (source, mode, pcm)
