"""The OpenAI-compatible HTTP face, driven by the official ``openai`` client and by raw HTTP.

A real coordinator with synthetic hosts (real subprocesses and sockets; the engine's text is a
fingerprint of the audio it got, so a test can tell the upload arrived whole) behind a real
uvicorn server on 127.0.0.1. The openai SDK is the client for what it can express; httpx for the
error cases it would hide (413 before the body is read, chunked uploads, headers).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import re
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import soundfile

from http_support import UvicornThread
from orchestrator.audio.wav import write_wav
from orchestrator.coordinator import Coordinator
from orchestrator.coordinator.config import HttpSettings
from orchestrator.host.synthetic import parse_fingerprint
from orchestrator.http import create_app
from stream_support import speech_like
from support import (
    assert_fingerprint,
    make_config,
    replica,
    running,
    synthetic_host,
    tone_pcm16,
    wait_for,
)

RATE = 16_000
API_KEY = "sk-test-key-1"
#: Small, so the 413 tests need no large bodies.
MAX_UPLOAD_BYTES = 1_000_000
#: The coordinator's max_audio_s in the stream test: the feed must respect it (half ahead).
STREAM_TEST_MAX_AUDIO_S = 4.0


def wav_bytes(pcm: np.ndarray, rate: int = RATE) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.wav"
        write_wav(path, pcm.astype(np.float32) / 32768.0, rate)
        return path.read_bytes()


@contextlib.contextmanager
def face_and_coordinator(
    settings: HttpSettings | None = None, **coordinator: Any
) -> Iterator[tuple[str, Coordinator]]:
    """A coordinator with synthetic hosts ("echo" eager, "big" on demand) and its HTTP face."""
    config = make_config(
        {
            "syn": synthetic_host(
                {"echo": "synthetic"},
                on_demand_models={"big": "synthetic"},
                model_options={"big": {"weights_mb": 50}},
                max_streams=8,
            )
        },
        models={"echo": {"hosts": ["syn"], "aliases": ["whisper-1"]}},
        **coordinator,
    )
    settings = settings or HttpSettings(max_upload_bytes=MAX_UPLOAD_BYTES)
    with running(config) as coord, UvicornThread(create_app(coord, settings)) as server:
        yield server.url, coord


@contextlib.contextmanager
def face(settings: HttpSettings | None = None, **coordinator: Any) -> Iterator[str]:
    with face_and_coordinator(settings, **coordinator) as (url, _):
        yield url


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with face() as base:
        yield base


@pytest.fixture
def sdk(url: str) -> openai.OpenAI:
    # No retries: a 429 or 503 must reach the test, not be retried away.
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)


CLIP = tone_pcm16(RATE * 2, seed=7)


# ---------------------------------------------------------------------------- formats
def test_json_text_and_verbose_json_carry_the_whole_upload(sdk: openai.OpenAI) -> None:
    audio = ("clip.wav", wav_bytes(CLIP), "audio/wav")
    plain = sdk.audio.transcriptions.create(model="whisper-1", file=audio)
    assert_fingerprint(plain.text, CLIP)
    assert plain.usage is not None and plain.usage.seconds == pytest.approx(2.0)

    text = sdk.audio.transcriptions.create(model="echo", file=audio, response_format="text")
    assert isinstance(text, str)
    assert_fingerprint(text, CLIP)

    verbose = sdk.audio.transcriptions.create(
        model="echo", file=audio, response_format="verbose_json", language="en", temperature=0.2
    )
    assert_fingerprint(verbose.text, CLIP)
    assert verbose.duration == pytest.approx(2.0)
    assert verbose.language == "en"
    assert verbose.segments is not None and len(verbose.segments) == 1
    segment = verbose.segments[0]
    assert (segment.start, segment.end) == (0.0, pytest.approx(2.0))
    assert segment.temperature == 0.2
    assert verbose.words is None  # not asked for


def test_words_come_with_word_granularity_in_verbose_json(sdk: openai.OpenAI) -> None:
    verbose = sdk.audio.transcriptions.create(
        model="echo", file=("clip.wav", wav_bytes(CLIP), "audio/wav"),
        response_format="verbose_json", timestamp_granularities=["word", "segment"],
    )  # fmt: skip
    assert verbose.words is not None
    # The synthetic engine times each word of its text, evenly over the clip.
    assert [w.word for w in verbose.words] == verbose.text.split()
    assert verbose.words[0].start == 0.0 and verbose.words[-1].end == pytest.approx(2.0)
    assert all(a.end <= b.start + 1e-9 for a, b in zip(verbose.words, verbose.words[1:]))


def test_flac_upload_is_decoded_by_the_audio_front_end(sdk: openai.OpenAI) -> None:
    buffer = io.BytesIO()
    soundfile.write(buffer, CLIP, RATE, format="FLAC", subtype="PCM_16")
    out = sdk.audio.transcriptions.create(
        model="echo", file=("clip.flac", buffer.getvalue(), "audio/flac")
    )
    assert_fingerprint(out.text, CLIP)  # lossless: every sample arrives as sent


def test_srt_and_vtt_subtitles(sdk: openai.OpenAI) -> None:
    audio = ("clip.wav", wav_bytes(CLIP), "audio/wav")
    srt = sdk.audio.transcriptions.create(model="echo", file=audio, response_format="srt")
    lines = srt.strip().splitlines()
    assert lines[0] == "1"
    assert lines[1] == "00:00:00,000 --> 00:00:02,000"
    assert_fingerprint(lines[2], CLIP)
    vtt = sdk.audio.transcriptions.create(model="echo", file=audio, response_format="vtt")
    lines = vtt.strip().splitlines()
    assert lines[0] == "WEBVTT"
    assert lines[2] == "00:00:00.000 --> 00:00:02.000"
    assert_fingerprint(lines[3], CLIP)


def test_audio_at_another_rate_is_resampled_once(sdk: openai.OpenAI) -> None:
    pcm = tone_pcm16(44_100, seed=3)
    out = sdk.audio.transcriptions.create(
        model="echo", file=("a.wav", wav_bytes(pcm, 44_100), "audio/wav")
    )
    assert parse_fingerprint(out.text)["n"] == RATE  # one second at the engines' rate


def test_long_audio_goes_through_the_long_form_path() -> None:
    sent = speech_like(bursts=12, burst_s=2.0, silence_s=4.0, seed=5)  # 72 s: three pieces or more
    with face(HttpSettings(max_upload_bytes=10_000_000)) as base:
        sdk = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=120)
        verbose = sdk.audio.transcriptions.create(
            model="echo", file=("long.wav", wav_bytes(sent.pcm), "audio/wav"),
            response_format="verbose_json",
        )  # fmt: skip
    assert verbose.duration == pytest.approx(sent.duration_s, abs=0.01)
    segments = verbose.segments or []
    assert len(segments) >= 3
    assert all(a.end <= b.start + 1e-6 for a, b in itertools.pairwise(segments))  # file time
    assert verbose.text == " ".join(s.text for s in segments)
    # Every sample arrived once: the pieces' fingerprints add up to the whole file.
    assert sum(parse_fingerprint(s.text)["n"] for s in segments) <= sent.pcm.size
    assert sum(parse_fingerprint(s.text)["n"] for s in segments) >= sum(
        e - b for b, e in sent.bursts
    )


# ---------------------------------------------------------------------------- streaming
def test_stream_sends_openai_delta_and_done_events() -> None:
    # A clip over twice max_audio_s: fed at once, the coordinator would refuse the stream as
    # "not keeping up"; the face paces the feed by what the host confirmed.
    sent = speech_like(bursts=6, seed=11)
    assert sent.duration_s > 2 * STREAM_TEST_MAX_AUDIO_S
    with face(max_audio_s=STREAM_TEST_MAX_AUDIO_S) as base:
        sdk = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=60)
        events = list(
            sdk.audio.transcriptions.create(
                model="echo", file=("s.wav", wav_bytes(sent.pcm), "audio/wav"), stream=True
            )
        )
    types = [e.type for e in events]
    assert types == ["transcript.text.delta"] * 6 + ["transcript.text.done"]
    deltas = "".join(e.delta for e in events[:-1])
    assert events[-1].text == deltas
    # Each delta is one utterance's fingerprint: together they hold every voiced burst.
    counts = [parse_fingerprint(e.delta.strip())["n"] for e in events[:-1]]
    for n, (start, end) in zip(counts, sent.bursts):
        assert n >= end - start


def test_stream_wire_format_is_plain_data_lines(url: str) -> None:
    sent = speech_like(bursts=1, seed=2)
    with httpx.stream(
        "POST",
        url + "/v1/audio/transcriptions",
        files={"file": ("s.wav", wav_bytes(sent.pcm), "audio/wav")},
        data={"model": "echo", "stream": "true"},
        timeout=60,
    ) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        body = reply.read().decode()
    blocks = [b for b in body.split("\n\n") if b]
    assert all(b.startswith("data: {") and "\n" not in b for b in blocks), body
    assert '"type":"transcript.text.done"' in blocks[-1]


def test_stream_refusal_is_an_http_error_not_an_event(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        sdk.audio.transcriptions.create(
            model="nope", file=("s.wav", wav_bytes(CLIP), "audio/wav"), stream=True
        )
    assert info.value.body["code"] == "unknown_model"


# ---------------------------------------------------------------------------- errors
def _error(reply: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


def _post(url: str, data: dict[str, Any], files: Any = None, **kwargs: Any) -> httpx.Response:
    if files is None:
        files = {"file": ("clip.wav", wav_bytes(CLIP), "audio/wav")}
    return httpx.post(
        url + "/v1/audio/transcriptions", data=data, files=files, timeout=60, **kwargs
    )


def test_unknown_model_is_404_in_openai_shape(sdk: openai.OpenAI, url: str) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        sdk.audio.transcriptions.create(model="nope", file=("a.wav", wav_bytes(CLIP)))
    assert info.value.status_code == 404
    error = _error(_post(url, {"model": "nope"}), 404, "unknown_model")
    assert error["param"] == "model" and "known" in error["message"]
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({"model": "echo", "response_format": "xml"}, "response_format"),
        ({"model": "echo", "temperature": "2"}, "temperature"),
        ({"model": "echo", "temperature": "warm"}, "temperature"),
        ({"model": "echo", "stream": "maybe"}, "stream"),
        ({"model": "echo", "stream": "true", "response_format": "srt"}, "stream"),
        ({"model": "echo", "timestamp_granularities[]": "word"}, "timestamp_granularities[]"),
        (
            {
                "model": "echo",
                "timestamp_granularities[]": "char",
                "response_format": "verbose_json",
            },
            "timestamp_granularities[]",
        ),
        ({"model": "echo", "include[]": "logprobs"}, "include[]"),
        ({"model": "echo", "voice": "alloy"}, "voice"),
        ({}, "model"),
    ],
)
def test_bad_options_are_400_naming_the_field(url: str, data: dict[str, Any], param: str) -> None:
    assert _error(_post(url, data), 400, "invalid_request")["param"] == param


def test_bad_audio_and_missing_file_are_400(url: str) -> None:
    not_wav = {"file": ("notes.mp3", b"ID3 this is no audio at all", "audio/mpeg")}
    error = _error(_post(url, {"model": "echo"}, files=not_wav), 400, "bad_audio")
    assert "notes.mp3" in error["message"] and "/tmp" not in error["message"]
    reply = httpx.post(url + "/v1/audio/transcriptions", data={"model": "echo"}, timeout=30)
    _error(reply, 400, "invalid_request")
    reply = httpx.post(url + "/v1/audio/transcriptions", json={"model": "echo"}, timeout=30)
    assert "multipart/form-data" in _error(reply, 400, "invalid_request")["message"]


def test_answers_name_the_host_and_time_their_parts(url: str) -> None:
    reply = _post(url, {"model": "echo", "prompt": "delay=0"})
    assert reply.status_code == 200
    assert reply.headers["x-orchestrator-host"] == "syn"
    timing = reply.headers["server-timing"]
    assert re.fullmatch(
        r"queue;dur=[\d.]+, load;dur=[\d.]+, compute;dur=[\d.]+, total;dur=[\d.]+, wall;dur=[\d.]+",
        timing,
    )


def test_upload_over_the_limit_is_413_from_content_length(url: str) -> None:
    big = np.zeros(MAX_UPLOAD_BYTES, dtype=np.int16)  # twice the limit as a WAV
    reply = _post(url, {"model": "echo"}, files={"file": ("big.wav", wav_bytes(big))})
    error = _error(reply, 413, "upload_too_large")
    assert str(MAX_UPLOAD_BYTES) in error["message"] and error["param"] == "file"


def test_chunked_upload_over_the_limit_is_refused_while_streaming(url: str) -> None:
    """No Content-Length: the server counts as the body arrives and answers 413 while the client
    is still sending (this client never finishes its body, so only an early answer arrives)."""
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\necho\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: test\r\n"
            b"Transfer-Encoding: chunked\r\n"
            + f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
        )
        body = head + b"\0" * (MAX_UPLOAD_BYTES * 3 // 2)
        for start in range(0, len(body), 65_536):
            piece = body[start : start + 65_536]
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        # No terminating chunk: the body is unfinished. Read the answer (headers, then JSON).
        raw = b""
        while not raw.endswith(b"}}"):
            piece = sock.recv(65_536)
            assert piece, raw
            raw += piece
    reply = raw.decode()
    status_line, _, rest = reply.partition("\r\n")
    assert status_line == "HTTP/1.1 413 Request Entity Too Large", reply
    assert '"code":"upload_too_large"' in rest


def test_concurrent_uploads_are_bounded_with_429_and_retry_after() -> None:
    settings = HttpSettings(max_concurrent_uploads=1, retry_after_s=3)
    with face(settings) as base:
        slow_reply: list[httpx.Response] = []
        slow = threading.Thread(
            target=lambda: slow_reply.append(_post(base, {"model": "echo", "prompt": "delay=2"}))
        )
        slow.start()
        try:
            sdk = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
            deadline = 50
            while deadline and not _busy(base):
                deadline -= 1
            with pytest.raises(openai.RateLimitError) as info:
                sdk.audio.transcriptions.create(model="echo", file=("a.wav", wav_bytes(CLIP)))
            assert info.value.response.headers["retry-after"] == "3"
            assert info.value.body["code"] == "too_many_uploads"
        finally:
            slow.join()
        assert slow_reply[0].status_code == 200
        assert _post(base, {"model": "echo"}).status_code == 200  # the slot came back


def _busy(base: str) -> bool:
    """Whether the coordinator has a request in flight (the slow one reached it)."""
    coordinator = httpx.get(base + "/health", timeout=10).json()["coordinator"]
    if coordinator["inflight"]:
        return True
    threading.Event().wait(0.05)
    return False


def test_deadline_is_504_and_no_host_is_503() -> None:
    with face_and_coordinator(request_timeout_s=1.0) as (base, coord):
        _error(_post(base, {"model": "echo", "prompt": "delay=3"}), 504, "deadline_exceeded")
        sdk = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
        # Stopping a host is the operator CLI's job (the face has no route for it).
        coord.sync_client().control("stop", "syn")
        wait_for(lambda: replica(coord, "syn.0")["state"] == "stopped", what="host stopped")
        with pytest.raises(openai.InternalServerError) as info:
            sdk.audio.transcriptions.create(model="echo", file=("a.wav", wav_bytes(CLIP)))
        assert info.value.status_code == 503
        assert info.value.body["code"] == "no_host_available"
        health = httpx.get(base + "/health", timeout=10)
        assert health.status_code == 503 and health.json()["status"] == "down"


def test_overload_from_the_coordinator_is_429_with_retry_after() -> None:
    settings = HttpSettings(retry_after_s=2)
    with face(settings, max_queue=1) as base:
        # max_queue 1 and max_inflight 4: the sixth concurrent request finds the queue full.
        replies: list[httpx.Response] = []
        threads = [
            threading.Thread(
                target=lambda: replies.append(_post(base, {"model": "echo", "prompt": "delay=1"}))
            )
            for _ in range(7)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(r.status_code for r in replies)
        assert statuses.count(200) == 5 and statuses.count(429) == 2, statuses
        refused = next(r for r in replies if r.status_code == 429)
        _error(refused, 429, "overloaded")
        assert refused.headers["retry-after"] == "2"


# ---------------------------------------------------------------------------- auth
def test_api_keys_guard_v1_and_metrics_but_not_health(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"# operators\n{API_KEY}\nsk-other\n")
    with face(HttpSettings(api_keys_file=str(keys))) as base:
        for path in ("/v1/models", "/metrics"):
            _error(httpx.get(base + path, timeout=10), 401, "invalid_api_key")
            bad = httpx.get(base + path, headers={"Authorization": "Bearer sk-wrong"}, timeout=10)
            assert "invalid API key" in _error(bad, 401, "invalid_api_key")["message"]
        assert httpx.get(base + "/health", timeout=10).status_code == 200
        wrong = openai.OpenAI(base_url=base + "/v1", api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.audio.transcriptions.create(model="echo", file=("a.wav", wav_bytes(CLIP)))
        right = openai.OpenAI(base_url=base + "/v1", api_key=API_KEY, max_retries=0)
        assert_fingerprint(
            right.audio.transcriptions.create(model="echo", file=("a.wav", wav_bytes(CLIP))).text,
            CLIP,
        )
        metrics = httpx.get(
            base + "/metrics", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
        )
        assert metrics.status_code == 200
        assert "orchestrator_up 1.0" in metrics.text


# ---------------------------------------------------------------------------- models
def test_models_list_and_retrieve_show_hosts_and_state(sdk: openai.OpenAI) -> None:
    listed = {m.id: m for m in sdk.models.list()}
    assert set(listed) == {"echo", "big"}
    echo = listed["echo"]
    assert echo.owned_by == "orchestrator"
    extra = echo.model_extra or {}
    assert extra["aliases"] == ["whisper-1"]
    assert extra["ready"] is True and extra["loaded_on"] == ["syn.0"]
    assert extra["hosts"][0]["replicas"][0]["state"] == "ready"
    alias = sdk.models.retrieve("whisper-1")
    assert alias.id == "whisper-1" and (alias.model_extra or {})["root"] == "echo"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("nope")


def test_admin_load_and_unload_change_what_models_show(url: str, sdk: openai.OpenAI) -> None:
    def state() -> str:
        card = sdk.models.retrieve("big").model_extra or {}
        return card["hosts"][0]["replicas"][0]["model"]

    assert state() == "loadable"
    loaded = httpx.post(url + "/v1/models/big/load", params={"host": "syn"}, timeout=60).json()
    assert loaded["hosts"]["syn"]["syn.0"]["loaded"] is True
    assert loaded["model"]["loaded_on"] == ["syn.0"]
    assert state() == "loaded"
    health = httpx.get(url + "/health", timeout=10).json()
    assert "big" in health["replicas"][0]["models"]
    unloaded = httpx.post(url + "/v1/models/big/unload", timeout=60).json()
    assert unloaded["hosts"]["syn"]["syn.0"]["unloaded"] is True
    assert state() == "loadable"
    _error(httpx.post(url + "/v1/models/big/explode", timeout=10), 404, "not_found")
    _error(httpx.post(url + "/v1/models/nope/load", timeout=10), 404, "unknown_model")
    reply = httpx.post(url + "/v1/models/big/load", params={"host": "elsewhere"}, timeout=10)
    _error(reply, 400, "bad_request")
    # A request after the unload reloads the model, and its timings say so.
    reply = _post(url, {"model": "big"})
    load_ms = float(re.search(r"load;dur=([\d.]+)", reply.headers["server-timing"]).group(1))
    assert load_ms > 0


def test_health_and_metrics(url: str) -> None:
    health = httpx.get(url + "/health", timeout=10)
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ready"
    assert body["replicas"][0]["models"]["echo"] == "synthetic"
    assert body["models"]["echo"]["loaded"] == ["syn.0"]
    metrics = httpx.get(url + "/metrics", timeout=10)
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'orchestrator_status{status="ready"} 1.0' in metrics.text


def test_unknown_route_is_openai_shaped_404(url: str) -> None:
    _error(httpx.get(url + "/v1/nothing", timeout=10), 404, "not_found")
