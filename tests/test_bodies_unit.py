"""Typed message bodies: each parses a good header, refuses a bad field by name with the code the
deeper checks always gave, and writes back the header its senders always wrote."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.wire.bodies import (
    CLIENT_STREAM_KEY,
    HOST_STREAM_KEY,
    Control,
    HealthRequest,
    HostResult,
    ModelRequest,
    StreamChunk,
    StreamClose,
    StreamOpen,
    TranscribeRequest,
)
from orchestrator.wire.errors import ErrorCode, OrchestratorError

TRANSCRIBE = {
    "id": "r1",
    "model": "echo",
    "sample_rate": 16000,
    "format": "pcm16",
    "options": {"language": "en"},
    "timeout_s": 5.0,
}
OPEN = {"id": "s1", "model": "echo", "sample_rate": 16000, "format": "f32", "options": {}}


def code_of(call: Any) -> str:
    with pytest.raises(OrchestratorError) as info:
        call()
    return str(info.value.code)


def test_transcribe_round_trips_byte_for_byte_in_the_senders_key_order() -> None:
    body = TranscribeRequest.from_header(TRANSCRIBE)
    assert (body.model, body.sample_rate, body.format, body.timeout_s) == (
        "echo",
        16000,
        "pcm16",
        5.0,
    )
    assert list(body.to_header().items()) == list(TRANSCRIBE.items())
    pinned = TranscribeRequest.from_header({**TRANSCRIBE, "host": "mlx_host"})
    assert pinned.host == "mlx_host" and list(pinned.to_header())[-1] == "host"


def test_transcribe_defaults_when_optional_fields_are_absent() -> None:
    body = TranscribeRequest.from_header({"id": 1, "sample_rate": 8000})
    assert (body.model, body.format, body.options, body.timeout_s, body.host) == (
        "",
        "pcm16",
        {},
        None,
        None,
    )


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("sample_rate", None, ErrorCode.BAD_AUDIO),  # missing
        ("sample_rate", "16000", ErrorCode.BAD_AUDIO),
        ("sample_rate", 16000.5, ErrorCode.BAD_AUDIO),
        ("format", "mp3", ErrorCode.BAD_AUDIO),
        ("format", 16, ErrorCode.BAD_AUDIO),
        ("options", [1], ErrorCode.BAD_REQUEST),
        ("timeout_s", "soon", ErrorCode.BAD_REQUEST),
        ("timeout_s", True, ErrorCode.BAD_REQUEST),
        ("model", 3, ErrorCode.BAD_REQUEST),
        ("host", ["a"], ErrorCode.BAD_REQUEST),
    ],
)
def test_transcribe_refuses_a_bad_field_with_its_code(field: str, value: Any, code: str) -> None:
    header = {**TRANSCRIBE, field: value}
    if value is None:
        del header[field]
    assert code_of(lambda: TranscribeRequest.from_header(header)) == code


def test_transcribe_error_names_the_field() -> None:
    with pytest.raises(OrchestratorError, match="timeout_s"):
        TranscribeRequest.from_header({**TRANSCRIBE, "timeout_s": "x"})


def test_stream_open_round_trips_on_both_hops() -> None:
    body = StreamOpen.from_header(OPEN, CLIENT_STREAM_KEY)
    assert list(body.to_header(CLIENT_STREAM_KEY).items()) == list(OPEN.items())
    host_header = {
        "sid": "s:1",
        "model": "echo",
        "sample_rate": 16000,
        "format": "pcm16",
        "options": {},
        "start_sample": 320,
        "first_utterance": 2,
    }
    hop = StreamOpen.from_header(host_header, HOST_STREAM_KEY)
    assert (hop.stream, hop.start_sample, hop.first_utterance) == ("s:1", 320, 2)
    assert list(hop.to_header(HOST_STREAM_KEY).items()) == list(host_header.items())


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("format", "mp3", ErrorCode.BAD_REQUEST),  # a stream's format was always a bad request
        ("sample_rate", None, ErrorCode.BAD_AUDIO),
        ("sample_rate", 1, ErrorCode.BAD_AUDIO),
        ("options", "x", ErrorCode.BAD_REQUEST),
        ("start_sample", "0", ErrorCode.BAD_REQUEST),
        ("first_utterance", 1.5, ErrorCode.BAD_REQUEST),
    ],
)
def test_stream_open_refuses_a_bad_field(field: str, value: Any, code: str) -> None:
    header = {**OPEN, field: value}
    if value is None:
        del header[field]
    assert code_of(lambda: StreamOpen.from_header(header, CLIENT_STREAM_KEY)) == code


def test_stream_chunk_and_close() -> None:
    assert StreamChunk.from_header({"id": "a", "seq": 3}, CLIENT_STREAM_KEY) == StreamChunk("a", 3)
    assert StreamChunk("s:1", 4).to_header(HOST_STREAM_KEY) == {"sid": "s:1", "seq": 4}
    for bad in ({"id": "a"}, {"id": "a", "seq": "3"}, {"id": "a", "seq": True}):
        assert code_of(lambda b=bad: StreamChunk.from_header(b, "id")) == ErrorCode.STREAM_SEQUENCE
    assert StreamClose.from_header({"sid": "s:2"}, HOST_STREAM_KEY).to_header("sid") == {
        "sid": "s:2"
    }
    assert StreamClose.from_header({}, CLIENT_STREAM_KEY).stream is None


def test_control_and_health() -> None:
    header = {"id": "c", "action": "stop", "host": "mlx_host"}
    assert Control.from_header(header).to_header() == header
    assert Control.from_header({"id": 1}) == Control(1, "", "")
    assert code_of(lambda: Control.from_header({"action": 1, "host": "h"})) == ErrorCode.BAD_REQUEST
    load = {"id": "d", "action": "load", "host": "legacy_host", "model": "whisper"}
    assert Control.from_header(load).model == "whisper"
    assert Control.from_header(load).to_header() == load
    assert code_of(lambda: Control.from_header({**load, "model": 3})) == ErrorCode.BAD_REQUEST
    assert HealthRequest.from_header({"id": 7}).to_header() == {"id": 7}
    model = {"id": "m1", "action": "unload", "model": "whisper"}
    assert ModelRequest.from_header(model).to_header() == model
    assert code_of(lambda: ModelRequest.from_header({**model, "model": 3})) == (
        ErrorCode.BAD_REQUEST
    )


def test_host_result() -> None:
    header = {
        "id": "3",
        "result": {"text": "hi"},
        "host_queued_s": 0.5,
        "load_s": 1.25,
        "compute_s": 2,
    }
    body = HostResult.from_header(header)
    assert (body.host_queued_s, body.load_s, body.compute_s) == (0.5, 1.25, 2.0)
    assert list(body.to_header()) == list(header)
    assert HostResult.from_header({"id": "3"}).compute_s == 0.0
    assert HostResult.from_header({"id": "3"}).load_s == 0.0
    for field in ("compute_s", "load_s"):
        for bad in ("x", None, float("nan"), True):
            assert code_of(lambda f=field, b=bad: HostResult.from_header({"id": "3", f: b})) == (
                ErrorCode.BAD_REQUEST
            )


def _outcome(parse: Any, header: dict[str, Any]) -> Any:
    """What parsing gives: the body, or the error's code and message."""
    try:
        return parse(header)
    except OrchestratorError as exc:
        return (str(exc.code), str(exc))


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"sample_rate": 8000},
        {"sample_rate": 192000},
        {"sample_rate": 7999},
        {"sample_rate": 192001},
        {"sample_rate": True},
        {"format": "f32"},
        {"options": None},
        {"options": {}},
        {"options": []},
        {"options": ""},
        {"timeout_s": 3},
        {"timeout_s": None},
        {"timeout_s": float("inf")},
        {"timeout_s": float("nan")},
        {"host": "gpu-box"},
        {"host": ""},
        {"model": None},
        {"model": ""},
    ],
)
def test_transcribe_fast_path_agrees_with_the_field_by_field_checks(
    changes: dict[str, Any],
) -> None:
    """The usual request is checked in one expression; whatever it lets through must be what the
    field-by-field checks accept, and the same body."""
    header = {**TRANSCRIBE, **changes}
    fast = _outcome(TranscribeRequest.from_header, header)
    assert fast == _outcome(TranscribeRequest._from_header_checked, header)


@pytest.mark.parametrize(
    "times",
    [
        (0.5, 0.0, 2.0),
        (1e308, 1e308, 0.0),  # finite each, infinite summed: the checks below still accept
        (float("inf"), 0.0, 0.0),
        (0.0, float("nan"), 0.0),
        (0, 0.0, 0.0),
    ],
)
def test_host_result_fast_path_agrees_with_the_field_checks(
    times: tuple[float, float, float],
) -> None:
    queued, load, compute = times
    header = {"id": 7, "result": {}, "host_queued_s": queued, "load_s": load, "compute_s": compute}
    fast = _outcome(HostResult.from_header, header)
    slow = _outcome(HostResult._from_header_checked, header)
    assert fast == slow
