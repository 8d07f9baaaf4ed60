"""Typed errors with stable codes, shared by the coordinator, the hosts and the clients.

Every error that crosses a process boundary travels as its ``ErrorCode`` value plus a message;
the receiving side rebuilds the same exception class with :func:`error_from_wire`, so a caller
can ``except OverloadedError`` (or branch on ``err.code``) wherever the cause was found.

This module is imported by the host runtime inside every host env: standard library only. Callers
import it as ``orchestrator.errors`` (a re-export); the package's own modules import it here.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """Stable, documented error codes. Never renumber or rename: programs branch on them."""

    UNKNOWN_MODEL = "unknown_model"
    NO_HOST_AVAILABLE = "no_host_available"
    OVERLOADED = "overloaded"
    BAD_AUDIO = "bad_audio"
    BAD_REQUEST = "bad_request"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    HOST_CRASHED = "host_crashed"
    MODEL_UNAVAILABLE = "model_unavailable"
    STREAM_SEQUENCE = "stream_sequence"
    STREAM_CLOSED = "stream_closed"
    PROTOCOL = "protocol"
    INTERNAL = "internal"
    UNAUTHORIZED = "unauthorized"


class OrchestratorError(Exception):
    """Base of every error the orchestrator raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    def to_wire(self) -> dict[str, object]:
        """The JSON-safe form sent in an error message's header."""
        return {"code": str(self.code), "message": self.message, "details": self.details}


class UnknownModelError(OrchestratorError):
    code = ErrorCode.UNKNOWN_MODEL


class NoHostAvailableError(OrchestratorError):
    code = ErrorCode.NO_HOST_AVAILABLE


class OverloadedError(OrchestratorError):
    code = ErrorCode.OVERLOADED


class BadAudioError(OrchestratorError):
    code = ErrorCode.BAD_AUDIO


class BadRequestError(OrchestratorError):
    code = ErrorCode.BAD_REQUEST


class DeadlineExceededError(OrchestratorError):
    code = ErrorCode.DEADLINE_EXCEEDED


class HostCrashedError(OrchestratorError):
    code = ErrorCode.HOST_CRASHED


class ModelUnavailableError(OrchestratorError):
    code = ErrorCode.MODEL_UNAVAILABLE


class StreamSequenceError(OrchestratorError):
    code = ErrorCode.STREAM_SEQUENCE


class StreamClosedError(OrchestratorError):
    code = ErrorCode.STREAM_CLOSED


class ProtocolError(OrchestratorError):
    """A frame that is malformed, unsigned, badly signed, replayed, oversized or of another version."""

    code = ErrorCode.PROTOCOL


class InternalError(OrchestratorError):
    code = ErrorCode.INTERNAL


class UnauthorizedError(OrchestratorError):
    """The coordinator would not finish the Curve handshake: it does not know this client's
    key, or the client holds another coordinator's public key. Raised by the client itself
    (nothing reaches the coordinator); ``details["cause"]`` says which."""

    code = ErrorCode.UNAUTHORIZED


class ConfigError(Exception):
    """A configuration refused at start; the message names the file, the key and the fix."""


class ConnectionFileError(Exception):
    """No usable standalone coordinator: its connection file is missing, unreadable, or names a
    process that is gone. The message names the file and the fix."""


class CoordinatorRunningError(Exception):
    """Another live coordinator already owns this connection file; the message names its pid."""


class EnvError(Exception):
    """A host env that is missing or stale against its lock; the message names the fix."""

    def __init__(self, message: str, *, host: str, fix: str = "nox -s hosts") -> None:
        super().__init__(f"{message} (fix: {fix})")
        self.reason = message
        self.host = host
        self.fix = fix


class EnvMissingError(EnvError):
    """The host's venv does not exist or has no interpreter."""


class EnvStaleError(EnvError):
    """The host's venv was built from another lock than the committed one."""


_BY_CODE: dict[ErrorCode, type[OrchestratorError]] = {
    cls.code: cls
    for cls in (
        UnknownModelError,
        NoHostAvailableError,
        OverloadedError,
        BadAudioError,
        BadRequestError,
        DeadlineExceededError,
        HostCrashedError,
        ModelUnavailableError,
        StreamSequenceError,
        StreamClosedError,
        ProtocolError,
        InternalError,
        UnauthorizedError,
    )
}


def error_class(code: str) -> type[OrchestratorError]:
    """The exception class for a wire code; unknown codes map to InternalError."""
    try:
        return _BY_CODE[ErrorCode(code)]
    except ValueError:
        return InternalError


def error_from_wire(payload: dict[str, object]) -> OrchestratorError:
    """Rebuild the typed exception from an error message's header."""
    cls = error_class(str(payload.get("code", ErrorCode.INTERNAL)))
    details = payload.get("details") or {}
    err = cls(str(payload.get("message", "")), **(details if isinstance(details, dict) else {}))
    return err
