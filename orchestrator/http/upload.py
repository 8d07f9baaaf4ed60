"""Receiving an upload within limits: how many at once, how big, and where it is spooled.

Two refusals happen before the body is read whole: a ``Content-Length`` over the limit is
refused at once, and a body without one (chunked) is counted as it arrives and refused the moment
it passes the limit. Multipart parsing streams the file part to a temporary file on disk
(Starlette spools anything over 1 MiB), so a large upload is never in memory at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Message

from orchestrator.http.errors import ApiError

#: Form parts besides the file (model, language, prompt, ...): few, and each small.
MAX_FORM_FIELDS = 32
MAX_FORM_FILES = 1


class _TooLarge(Exception):
    """Raised from inside the body stream; turned into a 413 where the form is read."""


def _too_large(limit: int, seen: int | None = None) -> ApiError:
    size = f"{seen} bytes" if seen is not None else f"more than {limit} bytes"
    return ApiError(
        413,
        f"upload of {size} is over this server's {limit} byte limit "
        "(fix: send a shorter or more compressed file; the limit is [http] max_upload_bytes)",
        code="upload_too_large",
        param="file",
    )


@dataclass
class UploadSlots:
    """At most ``limit`` uploads in progress; one more is refused with 429, not queued."""

    limit: int
    retry_after_s: int
    in_use: int = field(default=0)

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        self.take()
        try:
            yield
        finally:
            self.give_back()

    def take(self) -> None:
        # One event loop: no await between the check and the increment, so no lock is needed.
        if self.in_use >= self.limit:
            raise ApiError(
                429,
                f"{self.in_use} uploads are being transcribed, this server's limit "
                f"([http] max_concurrent_uploads = {self.limit}); retry after "
                f"{self.retry_after_s}s",
                code="too_many_uploads",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        self.in_use += 1

    def give_back(self) -> None:
        self.in_use -= 1


async def read_form(request: Request, max_bytes: int) -> FormData:
    """The multipart form, refused with 413 as soon as its size is known to pass ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes, int(declared))
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(
            400,
            f"expected a multipart/form-data upload, got {content_type or 'no content type'!r} "
            "(fix: send the audio as the 'file' part of a multipart form)",
            code="invalid_request",
        )
    seen = 0
    receive = request.receive

    async def counting_receive() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > max_bytes:
                raise _TooLarge
        return message

    limited = Request(request.scope, counting_receive)
    try:
        return await limited.form(max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS)
    except _TooLarge:
        raise _too_large(max_bytes) from None
    except HTTPException as exc:  # python-multipart's refusal of a malformed form
        raise ApiError(
            400, f"malformed multipart form: {exc.detail}", code="invalid_request"
        ) from None


@contextlib.asynccontextmanager
async def spooled_file(upload: UploadFile) -> AsyncIterator[Path]:
    """The uploaded file at a path of its own (decoders open paths), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="orchestrator-upload-") as folder:
        path = Path(folder) / "upload"
        await upload.seek(0)
        await asyncio.to_thread(_copy, upload.file, path)
        yield path


def _copy(source: Any, path: Path) -> None:
    with path.open("wb") as out:
        shutil.copyfileobj(source, out)
