"""Errors as OpenAI's API shapes them: a status code and ``{"error": {message, type, param, code}}``.

The coordinator's typed errors keep their stable ``code`` (``unknown_model``, ``overloaded``, ...)
and get the HTTP status a client of OpenAI's API expects for that kind of failure: 400 for bad
audio or options, 404 for an unknown model, 429 (with Retry-After) when overloaded, 503 when no
host can serve, 504 past the deadline. The face's own refusals (401, 413, 429 for too many
uploads) are :class:`ApiError` with the same shape.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from orchestrator.wire.errors import ErrorCode, OrchestratorError

#: HTTP status per coordinator error code.
STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.BAD_AUDIO: 400,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.STREAM_SEQUENCE: 400,
    ErrorCode.UNKNOWN_MODEL: 404,
    ErrorCode.OVERLOADED: 429,
    ErrorCode.NO_HOST_AVAILABLE: 503,
    ErrorCode.MODEL_UNAVAILABLE: 503,
    ErrorCode.HOST_CRASHED: 503,
    ErrorCode.STREAM_CLOSED: 503,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.PROTOCOL: 500,
    ErrorCode.INTERNAL: 500,
}

#: OpenAI's ``type`` per status family.
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(Exception):
    """A refusal of the HTTP face itself (auth, size, concurrency, form fields)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}


def error_body(status: int, message: str, code: str, param: str | None = None) -> dict[str, Any]:
    """The JSON body of every error answer."""
    return {
        "error": {
            "message": message,
            "type": _TYPE_BY_STATUS.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }


def api_error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.status, exc.message, exc.code, exc.param),
        status_code=exc.status,
        headers=exc.headers,
    )


def orchestrator_error_response(exc: OrchestratorError, retry_after_s: int) -> JSONResponse:
    """A coordinator error as an answer; overload says when to come back."""
    status = STATUS_BY_CODE.get(exc.code, 500)
    headers = {"Retry-After": str(retry_after_s)} if status == 429 else {}
    param = "model" if exc.code in (ErrorCode.UNKNOWN_MODEL,) else None
    return JSONResponse(
        error_body(status, exc.message, str(exc.code), param),
        status_code=status,
        headers=headers,
    )
