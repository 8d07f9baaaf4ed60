"""Logging set-up for the command line: readable text by default, one JSON object per line on demand.

``python -m orchestrator ...`` calls :func:`setup_logging` once before it does anything else; a
server embedding the coordinator keeps its own logging and never calls this. The library logs
under ``orchestrator.*`` at WARNING unless asked for more, so a healthy run is quiet; the CLI's own
progress lines (``orchestrator.cli``) show at INFO. Host output reaches us as records of
``orchestrator.hosts`` carrying ``extra={"host": name}``; the JSON form keeps that as a field so a
log pipeline can filter by host without parsing the message.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import IO, Any

LOG_FORMATS = ("text", "json")
#: The level of the library's loggers when none is given: problems only.
DEFAULT_LIBRARY_LEVEL = logging.WARNING
#: The CLI's progress lines ("starting hosts", "hosts ready") show at this level or below.
CLI_LEVEL = logging.INFO
CLI_LOGGER = "orchestrator.cli"
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, and host/exc when present."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        host = getattr(record, "host", None)
        if host is not None:
            entry["host"] = host
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _CliHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installed, so a second set-up replaces it instead of doubling."""


def parse_level(level: str | int) -> int:
    """A level name (any case) or number as a logging level; ValueError names the valid ones."""
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING or ERROR")
    return value


def setup_logging(
    level: str | int = DEFAULT_LIBRARY_LEVEL, fmt: str = "text", *, stream: IO[str] | None = None
) -> None:
    """Route every record to ``stream`` (stderr) as text or JSON; ``level`` is the library's level."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; use one of {', '.join(LOG_FORMATS)}")
    library_level = parse_level(level)
    handler = _CliHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _CliHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    # Other libraries stay at WARNING whatever we ask of our own (records propagate to the
    # root's handler without passing the root's level).
    root.setLevel(logging.WARNING)
    logging.getLogger("orchestrator").setLevel(library_level)
    logging.getLogger(CLI_LOGGER).setLevel(min(library_level, CLI_LEVEL))
