"""EchoPanel's live transcription server, built on the orchestrator: an example to copy.

    python examples/echopanel_server.py --config orchestrator.toml --port 8000
    ORCHESTRATOR_CONFIG=orchestrator.toml uvicorn --factory examples.echopanel_server:create_app

The coordinator (and with it every model host) starts and stops with the app. Endpoints:

- ``WS /ws`` (``?model=NAME`` to choose the model): EchoPanel's binary frames ``[b"EP"][version][source][mode][PCM16 LE mono]``, 16 kHz.
  Each source (microphone, system audio) becomes its own orchestrator stream; modes 0x00 (server
  ASR) and 0x02 (hybrid) are transcribed, 0x01 (on-device) is acknowledged once per source with
  an ``ignored`` event. The server answers with JSON text messages::

      {"type": "partial", "source": "microphone", "text": "...", "start": 1.2, "end": 2.0, ...}
      {"type": "final",   "source": "microphone", "text": "...", "start": 1.2, "end": 2.6,
       "language": "en", "segments": [{"start": 1.2, "end": 2.6, "text": "...",
       "words": [{"word": "...", "start": 1.25, "end": 1.5, "probability": 0.93}, ...]}], ...}
      {"type": "host_changed", "source": "system_audio", "from": "mlx_host.0", "host": "legacy_host"}
      {"type": "error", "code": "bad_request", "reason": "bad_magic", "message": "..."}

  A malformed frame gets an error event and nothing else: the connection and the other sources
  go on. Send the text message ``{"type": "stop"}`` to end the audio: every source's last final
  follows, then ``{"type": "closed", "source": ...}`` per source.
- the coordinator's HTTP face (``orchestrator.http``), mounted beside the WebSocket:
  ``POST /v1/audio/transcriptions`` (OpenAI's API: files, SSE streaming), ``GET /v1/models``,
  ``GET /health`` (the health snapshot plus ``status``: ready, degraded or down; HTTP 503 when
  down) and ``GET /metrics``.

Needs the ``examples`` extra (FastAPI, uvicorn, python-multipart, websockets).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from orchestrator.client import AsyncClient, AsyncStream, StreamEvent
from orchestrator.coordinator import Coordinator
from orchestrator.coordinator.config import load_config
from orchestrator.echopanel import FrameError, Source, parse_frame
from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.http import HttpFace

#: EchoPanel captures and sends 16 kHz audio; its frames do not say so themselves.
SAMPLE_RATE_HZ = 16_000
CONFIG_ENV = "ORCHESTRATOR_CONFIG"
MODEL_ENV = "ECHOPANEL_MODEL"
#: "1" asks the model for word timing (``segments[].words`` in partial/final events). Off by
#: default: a model that cannot time words (Qwen3-ASR without its aligner) refuses the stream.
WORD_TIMESTAMPS_ENV = "ECHOPANEL_WORD_TIMESTAMPS"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "orchestrator.toml"
DEFAULT_MODEL = "qwen3-asr"
#: After the client leaves, how long each source's last final may take before we stop waiting.
DRAIN_TIMEOUT_S = 30.0
#: After a source's stream was refused or failed (say, no host is up), its audio is dropped this
#: long before a new stream is tried, so the panel gets one error a second, not one per frame.
REOPEN_AFTER_ERROR_S = 1.0
#: Events a panel shows; the rest (opened, progress bookkeeping) stay in the server.
FORWARDED = frozenset({"partial", "final", "host_changed", "error", "closed"})


def create_app(
    config_path: str | Path | None = None,
    model: str | None = None,
    word_timestamps: bool | None = None,
) -> FastAPI:
    """The app; the config path, model and word timing default to $ORCHESTRATOR_CONFIG,
    $ECHOPANEL_MODEL and $ECHOPANEL_WORD_TIMESTAMPS."""
    # Read now, not in the lifespan: a missing or bad config is refused before uvicorn starts.
    config = load_config(Path(config_path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG))
    model = model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL
    if word_timestamps is None:
        word_timestamps = os.environ.get(WORD_TIMESTAMPS_ENV) == "1"
    options = {"word_timestamps": True} if word_timestamps else {}

    coordinator = Coordinator(config)
    # The coordinator's OpenAI-compatible HTTP face (/v1/..., /health, /metrics), mounted below
    # the WebSocket route and served through the same client.
    face = HttpFace.for_coordinator(coordinator)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with coordinator:
            app.state.client = coordinator.client()
            try:
                async with face.serving(app.state.client):
                    yield
            finally:
                await app.state.client.aclose()

    app = FastAPI(title="EchoPanel transcription", lifespan=lifespan)

    @app.websocket("/ws")
    async def panel(websocket: WebSocket) -> None:
        await websocket.accept()
        chosen = websocket.query_params.get("model") or model
        session = PanelSession(websocket, app.state.client, chosen, options)
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("bytes") is not None:
                    await session.on_frame(message["bytes"])
                else:
                    await session.on_text(message.get("text") or "")
        except WebSocketDisconnect:
            pass
        finally:
            await session.close()

    app.mount("/", face.app)  # last: the routes above take precedence
    return app


class PanelSession:
    """One WebSocket connection: a stream per source, and their events sent back as JSON."""

    def __init__(
        self,
        websocket: WebSocket,
        client: AsyncClient,
        model: str,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.websocket = websocket
        self.client = client
        self.model = model
        self.options = dict(options or {})
        self.streams: dict[Source, AsyncStream] = {}
        self.readers: set[asyncio.Task[None]] = set()
        self.told_on_device: set[Source] = set()
        self.retry_at: dict[Source, float] = {}  # loop time a refused source may open again
        self.connected = True
        self._send_lock = asyncio.Lock()  # one JSON message on the socket at a time

    async def send(self, event: dict[str, Any]) -> None:
        if not self.connected:
            return
        try:
            async with self._send_lock:
                await self.websocket.send_text(json.dumps(event))
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.connected = False  # the reader tasks keep draining until their streams close

    async def on_frame(self, data: bytes) -> None:
        try:
            frame = parse_frame(data)
        except FrameError as exc:
            await self.send(error_event(exc, reason=exc.reason))
            return
        source = frame.source
        if not frame.wants_server_asr:
            if source not in self.told_on_device:
                self.told_on_device.add(source)
                await self.send(
                    {
                        "type": "ignored",
                        "source": source_name(source),
                        "mode": frame.mode.name.lower(),
                        "message": "on-device frames are transcribed by the app, not the server",
                    }
                )
            return
        self.told_on_device.discard(source)
        stream = self.streams.get(source)
        if stream is None or stream.close_sent:  # audio after a stop starts a new stream
            if asyncio.get_running_loop().time() < self.retry_at.get(source, 0.0):
                return
            stream = await self.open(source)
        if frame.pcm:
            try:
                await stream.send(frame.pcm)
            except OrchestratorError as exc:  # the client is shutting down with the app
                await self.send(error_event(exc))

    async def on_text(self, text: str) -> None:
        try:
            command = json.loads(text)
        except ValueError:
            command = None
        if isinstance(command, dict) and command.get("type") == "stop":
            for stream in list(self.streams.values()):
                await stream.close()
            return
        await self.send(
            {
                "type": "error",
                "code": "bad_request",
                "reason": "text",
                "message": 'send binary EchoPanel frames, or the text {"type": "stop"}',
            }
        )

    async def open(self, source: Source) -> AsyncStream:
        stream = await self.client.stream(
            model=self.model, sample_rate=SAMPLE_RATE_HZ, **self.options
        ).open()
        self.streams[source] = stream
        reader = asyncio.create_task(self.forward(source, stream))
        self.readers.add(reader)
        reader.add_done_callback(self.readers.discard)
        return stream

    async def forward(self, source: Source, stream: AsyncStream) -> None:
        """Send the stream's events to the panel until it closes (also when the host failed)."""
        async for event in stream:
            if event.type in FORWARDED:
                await self.send(panel_event(source, event))
            if event.type == "error" and event.raw.get("final"):
                self.retry_at[source] = asyncio.get_running_loop().time() + REOPEN_AFTER_ERROR_S
        if self.streams.get(source) is stream:
            del self.streams[source]  # the next frame of this source opens a new stream

    async def close(self) -> None:
        """The client left: flush every stream and wait (bounded) for their ends."""
        self.connected = False
        for stream in list(self.streams.values()):
            with contextlib.suppress(OrchestratorError):
                await stream.close()
        readers = list(self.readers)
        if readers:
            _, late = await asyncio.wait(readers, timeout=DRAIN_TIMEOUT_S)
            for task in late:
                task.cancel()


def source_name(source: Source) -> str:
    return source.name.lower()


def error_event(exc: OrchestratorError, reason: str | None = None) -> dict[str, Any]:
    return {
        "type": "error",
        "code": str(exc.code),
        "reason": reason or str(exc.code),
        "message": exc.message,
    }


def panel_event(source: Source, event: StreamEvent) -> dict[str, Any]:
    """A stream event as the JSON the panel gets."""
    out: dict[str, Any] = {"type": event.type, "source": source_name(source)}
    raw = event.raw
    if event.type in ("partial", "final"):
        out.update(
            text=event.text,
            start=event.start_s,
            end=event.end_s,
            utterance=event.utterance,
            host=event.host,
            lag=event.lag_s,
            language=event.language,
            # Stream seconds; each with its words when the model gives word timing.
            segments=[segment.to_wire() for segment in event.segments],
        )
        if event.type == "final":
            out.update(
                reason=raw.get("reason"),
                audio_offset=raw.get("audio_offset"),
                n_samples=raw.get("n_samples"),
            )
    elif event.type == "host_changed":
        out.update({"from": raw.get("from"), "host": event.host})
    elif event.type == "error" and event.error is not None:
        out.update(error_event(event.error), source=source_name(source))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--config",
        default=None,
        help=f"orchestrator TOML (default: ${CONFIG_ENV} or {DEFAULT_CONFIG.name})",
    )
    parser.add_argument(
        "--model",
        default=None,
        help=f"model to transcribe with (default: ${MODEL_ENV} or {DEFAULT_MODEL})",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--word-timestamps",
        action="store_true",
        default=None,
        help=f"ask the model for word timing (default: ${WORD_TIMESTAMPS_ENV} == 1)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        app = create_app(args.config, args.model, args.word_timestamps)
    except ConfigError as exc:  # the user's mistake: one line, no traceback
        parser.exit(1, f"{parser.prog}: {exc}\n")
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
