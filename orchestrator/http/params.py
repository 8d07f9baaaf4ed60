"""The form fields of ``POST /v1/audio/transcriptions``, checked once, as OpenAI names them.

Every field OpenAI's transcription endpoint takes is understood; those a speech-to-text host
cannot honour (``include[]=logprobs``, a non-``auto`` ``chunking_strategy``) are refused with
400 naming the field, as is any field OpenAI does not define. ``prompt`` becomes the engines'
``context`` option; ``language`` and ``temperature`` pass through (an engine that does not take
one answers 400 naming it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData, UploadFile

from orchestrator.http.errors import ApiError
from orchestrator.http.formats import STREAMABLE, ResponseFormat

KNOWN_FIELDS = frozenset(
    {
        "file",
        "model",
        "language",
        "prompt",
        "response_format",
        "temperature",
        "timestamp_granularities[]",
        "stream",
        "include[]",
        "chunking_strategy",
    }
)
GRANULARITIES = frozenset({"segment", "word"})


@dataclass(frozen=True, slots=True)
class TranscriptionParams:
    model: str
    response_format: ResponseFormat
    stream: bool
    temperature: float
    words: bool
    options: dict[str, Any]
    filename: str


def _bad(message: str, param: str) -> ApiError:
    return ApiError(400, message, code="invalid_request", param=param)


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(f"{name} must be a text field, not a file", name)
    return value.strip() or None


def parse_params(form: FormData) -> tuple[TranscriptionParams, UploadFile]:
    """The request's parameters and its file part; raises 400 naming the first bad field."""
    unknown = sorted(set(form.keys()) - KNOWN_FIELDS)
    if unknown:
        raise _bad(f"unknown parameter {unknown[0]!r}; known: {sorted(KNOWN_FIELDS)}", unknown[0])
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise _bad("file is required: the audio, as the 'file' part of the form", "file")
    model = _text(form, "model")
    if model is None:
        raise _bad("model is required (GET /v1/models lists them)", "model")
    try:
        fmt = ResponseFormat(_text(form, "response_format") or "json")
    except ValueError:
        raise _bad(
            f"response_format must be one of {[f.value for f in ResponseFormat]}",
            "response_format",
        ) from None
    stream = _flag(_text(form, "stream"))
    if stream and fmt not in STREAMABLE:
        raise _bad(
            f"stream=true answers with text deltas; use response_format json or text, not {fmt}",
            "stream",
        )
    granularities = {str(g) for g in form.getlist("timestamp_granularities[]")}
    if granularities - GRANULARITIES:
        raise _bad(
            f"timestamp_granularities[] must be among {sorted(GRANULARITIES)}",
            "timestamp_granularities[]",
        )
    if granularities and fmt is not ResponseFormat.VERBOSE_JSON:
        raise _bad(
            "timestamp_granularities[] needs response_format=verbose_json",
            "timestamp_granularities[]",
        )
    include = [str(i) for i in form.getlist("include[]")]
    if include:
        raise _bad(
            f"include[] {include} is not available: the engines report no log probabilities",
            "include[]",
        )
    strategy = _text(form, "chunking_strategy")
    if strategy not in (None, "auto"):
        raise _bad(
            "chunking_strategy must be 'auto' (long audio is always cut at pauses)",
            "chunking_strategy",
        )
    options: dict[str, Any] = {}
    if "word" in granularities:
        options["word_timestamps"] = True  # an engine without word timing answers 400
    language = _text(form, "language")
    if language:
        options["language"] = language
    prompt = _text(form, "prompt")
    if prompt:
        options["context"] = prompt
    temperature = 0.0
    raw_temperature = _text(form, "temperature")
    if raw_temperature is not None:
        try:
            temperature = float(raw_temperature)
        except ValueError:
            temperature = math.nan
        if not 0.0 <= temperature <= 1.0:
            raise _bad(
                f"temperature must be a number from 0 to 1, got {raw_temperature!r}",
                "temperature",
            )
        options["temperature"] = temperature
    params = TranscriptionParams(
        model=model,
        response_format=fmt,
        stream=stream,
        temperature=temperature,
        words="word" in granularities,
        options=options,
        filename=upload.filename or "file",
    )
    return params, upload


def _flag(value: str | None) -> bool:
    if value is None:
        return False
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise _bad(f"stream must be true or false, got {value!r}", "stream")
