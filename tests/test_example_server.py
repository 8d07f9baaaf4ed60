"""The EchoPanel example server, for real: uvicorn on loopback, a WebSocket client, synthetic hosts.

The server runs in a thread of the test process on a socket the test bound first (port 0, so
no port is picked and then raced for), with a TOML config of synthetic hosts read through the
same path a user's config takes. Two sources share one connection, as in EchoPanel.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from websockets.asyncio.client import ClientConnection, connect

from cli_support import cli_env
from examples.echopanel_server import create_app
from http_support import UvicornThread
from orchestrator.audio.wav import write_wav
from orchestrator.echopanel import Mode, Source, build_frame
from stream_support import CHUNK_MS, SpeechLike, check_finals, check_partials, speech_like
from support import (
    FAST_COORDINATOR,
    FAST_RESTART,
    SYNTHETIC,
    assert_fingerprint,
    assert_gone,
    tone_pcm16,
    wait_for,
)

END_SILENCE_MS = 400
SERVER_START_TIMEOUT_S = 60.0
#: Generous bound on one whole session (the behaviour under test is "it finishes").
SESSION_DEADLINE_S = 60.0
CHUNK_S = CHUNK_MS / 1000
#: A server silent this long after the last frame has nothing more to say.
QUIET_S = 1.0


def write_config(folder: Path) -> Path:
    """A user-style TOML config with one synthetic host serving the model "echo"."""
    lines = ["[coordinator]", f'runtime_dir = "{folder}"']
    lines += [f"{key} = {value}" for key, value in FAST_COORDINATOR.items()]
    lines += ["", "[restart]", *(f"{key} = {value}" for key, value in FAST_RESTART.items())]
    # The bursts are tones, not speech: the energy detector is the one that hears them.
    segmenter = [
        f"end_silence_ms = {END_SILENCE_MS}",
        "partial_interval_ms = 200",
        'vad = "energy"',
    ]
    lines += ["", "[segmenter]", *segmenter]
    lines += ["", "[hosts.syn]", 'python = "current"', f'engine = "{SYNTHETIC}"', "max_streams = 8"]
    lines += ["", "[hosts.syn.models]", 'echo = "synthetic"', ""]
    path = folder / "orchestrator.toml"
    path.write_text("\n".join(lines))
    return path


class Server(UvicornThread):
    """The example app under uvicorn in a thread (see http_support)."""

    def __init__(self, config_path: Path) -> None:
        # Word timing on: the synthetic engine times its words, so they reach the panel's JSON.
        super().__init__(create_app(config_path, model="echo", word_timestamps=True))

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        return self.get_from(self.url, path)

    @staticmethod
    def get_from(url: str, path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(url + path, timeout=10) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="orc-example-", dir="/tmp") as folder:
        srv = Server(write_config(Path(folder)))
        srv.start()
        pids: set[int] = set()
        try:
            yield srv
            pids = {r["pid"] for r in srv.get("/health")[1]["replicas"] if r["pid"]}
        finally:
            srv.stop()
        # The app's lifespan stopped the coordinator, and the coordinator its hosts.
        assert pids
        assert_gone(pids)


def frames_of(sent: SpeechLike, source: Source, mode: Mode = Mode.SERVER_ASR) -> list[bytes]:
    return [build_frame(c.tobytes(), source=source, mode=mode) for c in sent.chunks()]


def interleave(*frame_lists: Sequence[bytes]) -> list[list[bytes | str]]:
    """Ticks of 20 ms: one frame of each source per tick, as a panel capturing both sends them."""
    ticks = max(len(frames) for frames in frame_lists)
    return [[frames[i] for frames in frame_lists if i < len(frames)] for i in range(ticks)]


async def send_paced(
    ws: ClientConnection, ticks: Sequence[Sequence[bytes | str]], pace: float
) -> None:
    """Send each tick's frames ``CHUNK_S / pace`` apart, then ask for the last finals."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i, frames in enumerate(ticks):
        await asyncio.sleep(max(0.0, t0 + i * CHUNK_S / pace - loop.time()))
        for frame in frames:
            await ws.send(frame)
    await ws.send(json.dumps({"type": "stop"}))


async def receive_until_closed(ws: ClientConnection, sources: set[str]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    open_sources = set(sources)
    while open_sources:
        event = json.loads(await ws.recv())
        events.append(event)
        if event["type"] == "closed":
            open_sources.discard(event["source"])
    return events


async def session(
    url: str, ticks: Sequence[Sequence[bytes | str]], sources: set[str], pace: float
) -> list[dict[str, Any]]:
    async with connect(url.replace("http", "ws") + "/ws") as ws:
        sender = asyncio.create_task(send_paced(ws, ticks, pace))
        events = await asyncio.wait_for(receive_until_closed(ws, sources), SESSION_DEADLINE_S)
        await sender
        return events


def of_source(events: Sequence[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """The source's partials and finals, with the stream-event field names the checks read."""
    return [
        {**e, "start_s": e["start"], "end_s": e["end"]}
        for e in events
        if e.get("source") == source and e["type"] in ("partial", "final")
    ]


def check_source(events: Sequence[dict[str, Any]], source: str, sent: SpeechLike) -> int:
    mine = of_source(events, source)
    finals = [e for e in mine if e["type"] == "final"]
    check_finals(finals, sent, end_silence_s=END_SILENCE_MS / 1000)
    return check_partials(mine, sent)


def test_finals_carry_language_segments_and_word_timing_in_stream_time(server: Server) -> None:
    sent = speech_like(bursts=2, burst_s=0.8, silence_s=0.7, seed=31)
    ticks = [[frame] for frame in frames_of(sent, Source.MICROPHONE)]
    events = asyncio.run(session(server.url, ticks, {"microphone"}, pace=4.0))
    finals = [e for e in events if e["type"] == "final"]
    assert len(finals) == 2
    for final in finals:
        assert final["language"] == "en"
        (segment,) = final["segments"]
        assert segment["text"] == final["text"]
        words = segment["words"]
        assert " ".join(w["word"] for w in words) == final["text"]
        # Stream seconds: the final's audio starts at audio_offset, its last word ends with it.
        first_s = final["audio_offset"] / 16_000
        assert words[0]["start"] == pytest.approx(first_s, abs=1e-3)
        assert words[-1]["end"] == pytest.approx(first_s + final["n_samples"] / 16_000, abs=1e-3)
        assert all(a["end"] <= b["start"] + 1e-6 for a, b in itertools.pairwise(words))


def test_two_sources_at_real_time_pace_get_partials_and_one_final_per_burst(server: Server) -> None:
    mic = speech_like(bursts=3, burst_s=0.8, silence_s=0.6, seed=21)
    system = speech_like(bursts=2, burst_s=1.1, silence_s=0.9, lead_s=0.5, seed=22)
    ticks = interleave(frames_of(mic, Source.MICROPHONE), frames_of(system, Source.SYSTEM_AUDIO))
    events = asyncio.run(session(server.url, ticks, {"microphone", "system_audio"}, pace=1.0))
    assert not [e for e in events if e["type"] == "error"]
    for source, sent in (("microphone", mic), ("system_audio", system)):
        check_source(events, source, sent)
        mine = of_source(events, source)
        # At real-time pace every burst shows text while it is spoken.
        assert {e["utterance"] for e in mine if e["type"] == "partial"} == set(
            range(len(sent.bursts))
        )
        assert all(e["host"] == "syn" and e["lag"] is not None for e in mine)


MALFORMED = {
    "short": b"EP\x01",
    "bad_magic": b"XX\x01\x00\x00" + b"\x00\x00",
    "version": b"EP\x07\x00\x00" + b"\x00\x00",
    "source": b"EP\x01\x09\x00" + b"\x00\x00",
    "mode": b"EP\x01\x00\x05" + b"\x00\x00",
    "odd_pcm": b"EP\x01\x01\x00" + b"\x00\x00\x00",
}


def test_malformed_frames_get_error_events_and_the_other_source_goes_on(server: Server) -> None:
    mic = speech_like(bursts=3, burst_s=0.5, silence_s=0.6, seed=23)
    good = frames_of(mic, Source.MICROPHONE)
    # The system-audio "source" sends only garbage, one bad frame every 10 ticks, plus an
    # on-device frame (acknowledged, not transcribed) and a text message that is no command.
    bad = [MALFORMED[reason] for reason in MALFORMED]
    bad.insert(
        3,
        build_frame(
            np.ones(320, np.int16).tobytes(), source=Source.SYSTEM_AUDIO, mode=Mode.ON_DEVICE
        ),
    )
    ticks = interleave(good)
    for n, frame in enumerate(bad):
        ticks[5 + 10 * n].append(frame)
    ticks[80].append("hello")  # a text message that is not a command

    events = asyncio.run(session(server.url, ticks, {"microphone"}, pace=5.0))
    errors = [e for e in events if e["type"] == "error"]
    assert [e["reason"] for e in errors] == [*MALFORMED.keys(), "text"]
    assert all(e["code"] == "bad_request" and e["message"] for e in errors)
    ignored = [e for e in events if e["type"] == "ignored"]
    assert ignored == [
        {
            "type": "ignored",
            "source": "system_audio",
            "mode": "on_device",
            "message": "on-device frames are transcribed by the app, not the server",
        }
    ]
    # Nothing of the bad frames reached a stream: only the microphone was transcribed, fully.
    check_source(events, "microphone", mic)
    assert {e.get("source") for e in events if e["type"] in ("partial", "final")} == {"microphone"}


def test_hybrid_mode_frames_are_transcribed_like_server_mode(server: Server) -> None:
    sent = speech_like(bursts=2, burst_s=0.5, silence_s=0.6, seed=24)
    ticks = interleave(frames_of(sent, Source.SYSTEM_AUDIO, Mode.HYBRID))
    events = asyncio.run(session(server.url, ticks, {"system_audio"}, pace=5.0))
    check_source(events, "system_audio", sent)


def test_health_answers_with_the_snapshot_and_an_overall_status(server: Server) -> None:
    status, body = server.get("/health")
    assert status == 200
    assert body["status"] == "ready"
    assert [r["name"] for r in body["replicas"]] == ["syn.0"]
    assert body["replicas"][0]["state"] in ("ready", "busy")
    assert body["models"]["echo"]["ready"] == ["syn.0"]
    assert body["coordinator"]["config"].endswith("orchestrator.toml")


def test_a_panel_that_disconnects_without_stop_leaves_no_stream_open(server: Server) -> None:
    sent = speech_like(bursts=1, burst_s=1.0, seed=25)
    ticks = interleave(frames_of(sent, Source.MICROPHONE), frames_of(sent, Source.SYSTEM_AUDIO))

    async def leave_mid_utterance() -> None:
        async with connect(server.url.replace("http", "ws") + "/ws") as ws:
            for tick in ticks[:40]:  # 0.3 s of room noise, then half of the burst
                for frame in tick:
                    await ws.send(frame)
            # Both streams are open once an event of each came back (partials every 200 ms).
            seen: set[str] = set()
            while len(seen) < 2:
                event = json.loads(await asyncio.wait_for(ws.recv(), SESSION_DEADLINE_S))
                seen.add(event["source"])

    asyncio.run(leave_mid_utterance())
    wait_for(
        lambda: server.get("/health")[1]["coordinator"]["streams"]["open"] == 0,
        what="the server to close the streams of a panel that left",
    )


def test_a_refused_model_gives_one_error_not_one_per_frame(server: Server) -> None:
    sent = speech_like(bursts=1, burst_s=0.5, silence_s=0.3, seed=26)  # 55 frames, sent in 0.22 s
    ticks = interleave(frames_of(sent, Source.MICROPHONE))

    async def refused_session() -> list[dict[str, Any]]:
        async with connect(server.url.replace("http", "ws") + "/ws?model=no-such-model") as ws:
            await send_paced(ws, ticks, pace=5.0)
            events: list[dict[str, Any]] = []
            with contextlib.suppress(TimeoutError):  # all told once the server falls quiet
                while True:
                    events.append(json.loads(await asyncio.wait_for(ws.recv(), QUIET_S)))
            return events

    events = asyncio.run(refused_session())
    assert [e["type"] for e in events] == ["error", "closed"]
    assert events[0]["code"] == "unknown_model" and "no-such-model" in events[0]["message"]
    assert events[0]["source"] == "microphone"


def test_the_command_line_server_serves_then_stops_its_hosts_on_ctrl_c() -> None:
    """What a user runs: ``python examples/echopanel_server.py --config ... --port 0``."""
    script = Path(__file__).resolve().parent.parent / "examples" / "echopanel_server.py"
    with tempfile.TemporaryDirectory(prefix="orc-example-", dir="/tmp") as folder:
        config = write_config(Path(folder))
        proc = subprocess.Popen(
            [
                sys.executable,
                str(script),
                "--config",
                str(config),
                "--model",
                "echo",
                "--port",
                "0",
            ],
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),  # this checkout's package, whatever else the interpreter has installed
        )
        lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        threading.Thread(
            target=lambda: [lines.put(line) for line in proc.stderr], daemon=True
        ).start()
        try:
            port = _listening_port(lines)
            status, body = Server.get_from(f"http://127.0.0.1:{port}", "/health")
            assert status == 200 and body["status"] == "ready"
            pids = {r["pid"] for r in body["replicas"]}
            sent = speech_like(bursts=1, burst_s=0.5, seed=27)
            ticks = interleave(frames_of(sent, Source.MICROPHONE))
            events = asyncio.run(
                session(f"http://127.0.0.1:{port}", ticks, {"microphone"}, pace=5.0)
            )
            check_source(events, "microphone", sent)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=SERVER_START_TIMEOUT_S) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert_gone(pids)


def _listening_port(lines: queue.SimpleQueue[str]) -> int:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            found = re.search(
                r"Uvicorn running on http://127\.0\.0\.1:(\d+)", lines.get(timeout=0.5)
            )
            if found:
                return int(found.group(1))
    raise AssertionError("the server did not say where it listens")


def test_the_http_face_is_mounted_beside_the_websocket(server: Server) -> None:
    """The example serves the coordinator's OpenAI-compatible API through the same client."""
    sdk = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in sdk.models.list()] == ["echo"]
    pcm = tone_pcm16(16_000, seed=4)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.wav"
        write_wav(path, pcm.astype(np.float32) / 32768.0, 16_000)
        with path.open("rb") as audio:
            text = sdk.audio.transcriptions.create(model="echo", file=audio, response_format="text")
    assert_fingerprint(text, pcm)
