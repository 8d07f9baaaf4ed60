"""The public import path of the typed errors; they live in :mod:`orchestrator.wire.errors`.

``from orchestrator.errors import OverloadedError`` keeps working for callers; the package's own
code imports ``orchestrator.wire.errors`` directly.
"""

from orchestrator.wire.errors import (
    BadAudioError,
    BadRequestError,
    ConfigError,
    ConnectionFileError,
    CoordinatorRunningError,
    DeadlineExceededError,
    EnvError,
    EnvMissingError,
    EnvStaleError,
    ErrorCode,
    HostCrashedError,
    InternalError,
    ModelUnavailableError,
    NoHostAvailableError,
    OrchestratorError,
    OverloadedError,
    ProtocolError,
    StreamClosedError,
    StreamSequenceError,
    UnauthorizedError,
    UnknownModelError,
    error_class,
    error_from_wire,
)

__all__ = [
    "BadAudioError",
    "BadRequestError",
    "ConfigError",
    "ConnectionFileError",
    "CoordinatorRunningError",
    "DeadlineExceededError",
    "EnvError",
    "EnvMissingError",
    "EnvStaleError",
    "ErrorCode",
    "HostCrashedError",
    "InternalError",
    "ModelUnavailableError",
    "NoHostAvailableError",
    "OrchestratorError",
    "OverloadedError",
    "ProtocolError",
    "StreamClosedError",
    "StreamSequenceError",
    "UnauthorizedError",
    "UnknownModelError",
    "error_class",
    "error_from_wire",
]
