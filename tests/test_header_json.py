"""Header JSON: orjson where installed, the standard library elsewhere, one meaning on the wire.

Every env this project builds has orjson; an engine's env we did not build may not. A header
written by either must read the same on the other side, and what orjson refuses must get the
standard library's verdict, so a peer's odd header means what it meant before orjson.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from orchestrator.wire import protocol
from orchestrator.wire.protocol import Codec, Kind, Message, encode_header, new_key

pytestmark = pytest.mark.skipif(protocol.orjson is None, reason="orjson is not installed here")

HEADERS: list[dict[str, Any]] = [
    {"id": "a1-7", "model": "whisper", "sample_rate": 16000, "format": "pcm16", "options": {}},
    {
        "id": 12,
        "result": {
            "text": "Grüße, 東京 — ok",
            "segments": [{"start": 0.0, "end": 0.02, "text": "Grüße"}],
            "language": None,
            "prompt_tokens": 0,
        },
        "timings": {"queued_s": 1e-05, "total_s": 0.25},
        "attempts": 1,
        "flag": True,
    },
    {"options": {"context": 'a "quoted" \\ line\nnext', "temperature": 0.0}, "id": -3},
]


@pytest.fixture
def no_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as an env without orjson."""
    monkeypatch.setattr(protocol, "orjson", None)


@pytest.mark.parametrize("header", HEADERS)
def test_orjson_text_reads_the_same_in_the_standard_library(header: dict[str, Any]) -> None:
    assert json.loads(encode_header(header)) == header


@pytest.mark.parametrize("header", HEADERS)
def test_standard_library_text_reads_the_same_through_orjson(
    header: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocol, "orjson", None)
    written = encode_header(header)
    assert written == json.dumps(header, separators=(",", ":")).encode()  # the stdlib's own text
    monkeypatch.undo()
    assert protocol._parse_header(memoryview(written)) == header


def test_messages_cross_between_an_env_with_orjson_and_one_without(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = new_key()
    with_orjson, without = Codec(key), Codec(key)
    there = with_orjson.encode(Message(Kind.RESULT, dict(HEADERS[1])))
    monkeypatch.setattr(protocol, "orjson", None)
    assert without.decode(there).header == {**HEADERS[1], "mid": json.loads(there[3])["mid"]}
    back = without.encode(Message(Kind.TRANSCRIBE, dict(HEADERS[0]), [b"\x01\x00"]))
    monkeypatch.undo()
    got = with_orjson.decode(back)
    assert (got.kind, got.payloads) == (Kind.TRANSCRIBE, [b"\x01\x00"])
    assert {k: v for k, v in got.header.items() if k != "mid"} == HEADERS[0]


@pytest.mark.parametrize(
    "text",
    [
        b'{"id":NaN}',  # not JSON, but Python's JSON reads it: so did every peer before orjson
        b'{"id":1e999}',  # out of a double's range: infinity
        b'{"id":"\\ud800"}',  # a lone surrogate escape
        b"[" * 1100 + b"]" * 1100,  # nesting past orjson's 1024
        b'  {"id":1}  ',
    ],
)
def test_what_orjson_refuses_gets_the_standard_librarys_verdict(
    text: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _verdict(text)
    monkeypatch.setattr(protocol, "orjson", None)
    assert fast == _verdict(text)


def _verdict(text: bytes) -> str:
    """What reading ``text`` gives: the value's repr (NaN != NaN) or the error's type."""
    try:
        return repr(protocol._parse_header(text))
    except (ValueError, RecursionError) as exc:  # what Codec.decode turns into "malformed"
        return type(exc).__name__


@pytest.mark.parametrize("text", [b'{"id":1', b"", b'{"id":1}x', b"\xff"])
def test_what_neither_reads_is_refused_as_before(text: bytes) -> None:
    with pytest.raises(ValueError):
        protocol._parse_header(text)


def test_what_orjson_cannot_write_the_standard_library_writes() -> None:
    big = 2**70
    assert json.loads(encode_header({"id": big})) == {"id": big}  # exact, as ever
    assert json.loads(encode_header({"id": "\ud800x"})) == {"id": "\ud800x"}
    assert json.loads(encode_header({"n": {1: "int key"}})) == {"n": {"1": "int key"}}


def test_non_finite_numbers_are_written_as_null_either_way(no_orjson: None) -> None:
    header = {"id": math.inf, "x": [math.nan, 1.5]}
    assert json.loads(encode_header(header)) == {"id": None, "x": [None, 1.5]}


def test_non_finite_numbers_are_written_as_null_by_orjson() -> None:
    header = {"id": math.inf, "x": [math.nan, 1.5]}
    assert json.loads(encode_header(header)) == {"id": None, "x": [None, 1.5]}


def test_what_neither_can_write_raises_type_error() -> None:
    with pytest.raises(TypeError):
        encode_header({"payload": b"raw bytes never go in a header"})
