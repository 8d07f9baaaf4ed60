"""The coordinator's OpenAI-compatible HTTP face: routes, limits and answers; nothing else.

    face = HttpFace.for_coordinator(coordinator)       # limits from its config
    app = face.app                                      # a FastAPI app; or create_app(coordinator)
    async with face.serving(coordinator.client()): ...  # while the app serves

Routing, failover, deadlines and typed errors stay in the coordinator: every route is a thin
call on an :class:`~orchestrator.client.AsyncClient`. ``python -m orchestrator serve --http``
runs :func:`create_app` under uvicorn; the EchoPanel example server mounts ``face.app`` beside its
WebSocket.

Endpoints: ``POST /v1/audio/transcriptions`` (OpenAI's multipart form; ``stream=true`` answers
with server-sent events), ``GET /v1/models``, ``GET /v1/models/{id}``,
``POST /v1/models/{id}/load|unload[?host=H]``, ``GET /health`` (200 ready or degraded, 503 down;
never needs a key, for probes) and ``GET /metrics`` (Prometheus).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.client import AsyncClient, StreamEvent
from orchestrator.coordinator.config import HttpSettings
from orchestrator.coordinator.health import overall_status
from orchestrator.http import formats
from orchestrator.http.auth import check_bearer, load_api_keys
from orchestrator.http.errors import (
    STATUS_BY_CODE,
    ApiError,
    api_error_response,
    error_body,
    orchestrator_error_response,
)
from orchestrator.http.models_api import model_card, model_list, resolve
from orchestrator.http.params import parse_params
from orchestrator.http.transcripts import Limits, open_stream_finals, open_upload
from orchestrator.http.upload import UploadSlots, read_form, spooled_file
from orchestrator.longform.pauses import PauseFinder, default_pause_finder
from orchestrator.wire.errors import OrchestratorError, UnknownModelError

if TYPE_CHECKING:
    from orchestrator.coordinator import Coordinator

log = logging.getLogger("orchestrator.http")

MODEL_ACTIONS = ("load", "unload")
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class HttpFace:
    """The app and what it needs at request time: a client, the limits, the keys."""

    def __init__(self, settings: HttpSettings, limits: Limits) -> None:
        self.settings = settings
        self.limits = limits
        self.api_keys = load_api_keys(settings.api_keys_file)
        self.slots = UploadSlots(settings.max_concurrent_uploads, settings.retry_after_s)
        self.client: AsyncClient | None = None
        #: One for every request: the long-form path's default builds a Silero VAD per call
        #: (about 0.1 s here), where one finder keeps a pool of detectors.
        self.pause_finder: PauseFinder | None = None
        self.created = int(time.time())
        self.app = self._build()

    @classmethod
    def for_coordinator(
        cls, coordinator: Coordinator, settings: HttpSettings | None = None
    ) -> HttpFace:
        """A face with the coordinator's limits: a request's deadline, a stream's lead."""
        coord = coordinator.config.coordinator
        settings = settings or coordinator.config.http
        limits = Limits(
            timeout_s=coord.request_timeout_s,
            stream_chunk_ms=settings.stream_chunk_ms,
            # The coordinator refuses a stream more than max_audio_s ahead of its host.
            stream_ahead_s=coord.max_audio_s / 2,
        )
        return cls(settings, limits)

    @contextlib.asynccontextmanager
    async def serving(self, client: AsyncClient) -> AsyncIterator[HttpFace]:
        """Serve through ``client`` for the block (the app's lifespan, or its host app's)."""
        if self.pause_finder is None:
            self.pause_finder = await asyncio.to_thread(default_pause_finder)
        self.client = client
        try:
            yield self
        finally:
            self.client = None

    # ------------------------------------------------------------------ plumbing
    def _client(self) -> AsyncClient:
        if self.client is None:
            raise ApiError(503, "the coordinator is not running yet", code="not_ready")
        return self.client

    def _authorized(self, request: Request) -> None:
        check_bearer(request.headers.get("authorization"), self.api_keys)

    def _build(self) -> FastAPI:
        app = FastAPI(title="orchestrator", summary="OpenAI-compatible speech-to-text")
        retry_after = self.settings.retry_after_s
        key = Depends(self._authorized)

        @app.exception_handler(ApiError)
        async def on_api_error(request: Request, exc: ApiError) -> Response:
            return api_error_response(exc)

        @app.exception_handler(OrchestratorError)
        async def on_orchestrator_error(request: Request, exc: OrchestratorError) -> Response:
            return orchestrator_error_response(exc, retry_after)

        @app.exception_handler(RequestValidationError)
        async def on_validation(request: Request, exc: RequestValidationError) -> Response:
            first = exc.errors()[0] if exc.errors() else {}
            param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
            message = f"{param or 'request'}: {first.get('msg', 'invalid')}"
            return JSONResponse(error_body(400, message, "invalid_request", param), 400)

        @app.exception_handler(StarletteHTTPException)
        async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
            code = "not_found" if exc.status_code == 404 else "invalid_request"
            return JSONResponse(error_body(exc.status_code, str(exc.detail), code), exc.status_code)

        @app.exception_handler(Exception)
        async def on_bug(request: Request, exc: Exception) -> Response:
            log.exception("unexpected error on %s %s", request.method, request.url.path)
            message = f"internal error ({type(exc).__name__}); see the server's log"
            return JSONResponse(error_body(500, message, "internal"), 500)

        @app.get("/health")
        async def health() -> Response:
            snapshot = await self._client().health()
            status = overall_status(snapshot)
            return JSONResponse(
                {"status": status, **snapshot}, status_code=503 if status == "down" else 200
            )

        @app.get("/metrics", dependencies=[key])
        async def metrics() -> Response:
            try:
                from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

                from orchestrator.coordinator.metrics import build_registry
            except ImportError as exc:
                raise ApiError(
                    501,
                    f"metrics need prometheus-client ({exc}) "
                    "(fix: pip install 'orchestrator[http]')",
                    code="not_installed",
                ) from None
            snapshot = await self._client().health()
            body = generate_latest(build_registry(lambda: snapshot))
            return Response(body, media_type=CONTENT_TYPE_LATEST)

        @app.get("/v1/models", dependencies=[key])
        async def list_models() -> dict[str, Any]:
            return model_list(await self._client().health(), self.created)

        @app.get("/v1/models/{model_id}", dependencies=[key])
        async def get_model(model_id: str) -> dict[str, Any]:
            snapshot = await self._client().health()
            return model_card(snapshot, self._resolve(snapshot, model_id), self.created, model_id)

        @app.post("/v1/models/{model_id}/{action}", dependencies=[key])
        async def model_action(model_id: str, action: str, host: str | None = None) -> Any:
            return await self._model_action(model_id, action, host)

        @app.post("/v1/audio/transcriptions", dependencies=[key])
        async def transcriptions(request: Request) -> Response:
            return await self._transcriptions(request)

        return app

    @staticmethod
    def _resolve(snapshot: dict[str, Any], model_id: str) -> str:
        name = resolve(snapshot, model_id)
        if name is None:
            raise UnknownModelError(
                f"unknown model {model_id!r}; GET /v1/models lists them", model=model_id
            )
        return name

    # ------------------------------------------------------------------ model admin
    async def _model_action(self, model_id: str, action: str, host: str | None) -> Any:
        if action not in MODEL_ACTIONS:
            raise ApiError(
                404, f"no such model action {action!r}; use load or unload", code="not_found"
            )
        client = self._client()
        snapshot = await client.health()
        name = self._resolve(snapshot, model_id)
        hosts = [host] if host else list(snapshot["models"][name]["hosts"])
        call = client.load_model if action == "load" else client.unload_model
        outcomes: dict[str, Any] = {}
        errors: list[OrchestratorError] = []
        for target in hosts:
            try:
                outcomes[target] = (await call(name, host=target))["replicas"]
            except OrchestratorError as exc:
                if host:  # one host asked for: its error is the answer
                    raise
                errors.append(exc)
                outcomes[target] = {"error": exc.to_wire()}
        if errors and len(errors) == len(hosts):
            raise errors[0]
        after = await client.health()
        return {
            "id": model_id,
            "object": "model.action",
            "action": action,
            "hosts": outcomes,
            "model": model_card(after, name, self.created, model_id),
        }

    # ------------------------------------------------------------------ transcriptions
    async def _transcriptions(self, request: Request) -> Response:
        client = self._client()
        self.slots.take()  # before reading anything: a full server refuses at once
        handed_to_stream = False
        try:
            form = await read_form(request, self.settings.max_upload_bytes)
            try:
                params, upload = parse_params(form)
                async with spooled_file(upload) as path:
                    source = open_upload(path, params.filename)
                    if params.stream:
                        # The stream's generator owns the file from here (open after unlink).
                        finals = await open_stream_finals(
                            client,
                            source,
                            model=params.model,
                            options=params.options,
                            limits=self.limits,
                        )
                        handed_to_stream = True  # the event generator gives the slot back
                        return StreamingResponse(
                            self._events(finals),
                            media_type="text/event-stream",
                            headers=_SSE_HEADERS,
                        )
                    with source:
                        transcript = await client.transcribe_file(
                            source,
                            model=params.model,
                            timeout=self.limits.timeout_s,
                            pause_finder=self.pause_finder,
                            **params.options,
                        )
            finally:
                await form.close()
            return formats.render(
                transcript,
                params.response_format,
                temperature=params.temperature,
                words=params.words,
                headers=formats.server_timing(transcript),
            )
        finally:
            if not handed_to_stream:
                self.slots.give_back()

    async def _events(self, finals: AsyncIterator[StreamEvent]) -> AsyncIterator[bytes]:
        """``transcript.text.delta`` per final, then ``transcript.text.done`` with the whole text.

        Finals are final: a delta is never revised (partials, which are, are not sent). A failure
        after the answer began is an ``error`` event, which OpenAI's SDK raises as an APIError.
        """
        parts: list[str] = []
        try:
            async with contextlib.aclosing(finals):
                async for final in finals:
                    text = final.text.strip()
                    if not text:
                        continue
                    yield formats.sse(formats.delta_event(text if not parts else " " + text))
                    parts.append(text)
            yield formats.sse(formats.done_event(" ".join(parts)))
        except OrchestratorError as exc:
            status = STATUS_BY_CODE.get(exc.code, 500)
            yield formats.sse(error_body(status, exc.message, str(exc.code)))
        finally:
            self.slots.give_back()


def create_app(coordinator: Coordinator, settings: HttpSettings | None = None) -> FastAPI:
    """A standalone app over a started coordinator: its client lives as long as the app."""
    face = HttpFace.for_coordinator(coordinator, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = coordinator.client()
        try:
            async with face.serving(client):
                yield
        finally:
            await client.aclose()

    face.app.router.lifespan_context = lifespan
    return face.app
