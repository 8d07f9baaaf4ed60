"""The five ``response_format`` answers OpenAI's transcription endpoint gives, and its SSE events.

``json`` is ``{"text"}`` (plus usage); ``text`` the bare text; ``srt`` and ``vtt`` subtitles
(the long-form path's formatters, words timing the cues where the engine gave them);
``verbose_json`` adds language, duration and segments in OpenAI's segment shape. Fields OpenAI's
segments carry that our engines do not report (token ids, log probabilities, compression ratio,
no-speech probability) are filled with neutral values (``[]``, ``0.0``), never invented figures;
the request's temperature is echoed. Words appear when the request asked for word timestamps and
the engine gave them.
"""

from __future__ import annotations

import enum
import json
from typing import Any

from fastapi.responses import JSONResponse, PlainTextResponse, Response

from orchestrator.longform.formats import to_srt, to_vtt
from orchestrator.longform.merge import Transcript


class ResponseFormat(enum.StrEnum):
    JSON = "json"
    TEXT = "text"
    SRT = "srt"
    VTT = "vtt"
    VERBOSE_JSON = "verbose_json"


#: Formats a ``stream=true`` answer can stand for (OpenAI streams text only).
STREAMABLE = frozenset({ResponseFormat.JSON, ResponseFormat.TEXT})


def _usage(transcript: Transcript) -> dict[str, Any]:
    return {"type": "duration", "seconds": round(transcript.duration_s, 3)}


def verbose_json(transcript: Transcript, temperature: float, words: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": transcript.language or "",
        "duration": round(transcript.duration_s, 3),
        "text": transcript.text,
        "segments": [
            {
                "id": i,
                "seek": 0,
                "start": seg.start,
                "end": seg.end,
                "text": seg.text,
                "tokens": [],
                "temperature": temperature,
                "avg_logprob": 0.0,
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
            }
            for i, seg in enumerate(transcript.segments)
        ],
        "usage": _usage(transcript),
    }
    if words:
        body["words"] = [
            {"word": w.word, "start": w.start, "end": w.end}
            for seg in transcript.segments
            for w in seg.words
        ]
    if transcript.warnings:
        body["warnings"] = list(transcript.warnings)  # a cut file, a lying header
    return body


def render(
    transcript: Transcript,
    fmt: ResponseFormat,
    *,
    temperature: float,
    words: bool,
    headers: dict[str, str],
) -> Response:
    """The answer for ``fmt``; ``headers`` carry the timings (Server-Timing) and the host."""
    if fmt is ResponseFormat.JSON:
        body = {"text": transcript.text, "usage": _usage(transcript)}
        return JSONResponse(body, headers=headers)
    if fmt is ResponseFormat.VERBOSE_JSON:
        return JSONResponse(verbose_json(transcript, temperature, words), headers=headers)
    if fmt is ResponseFormat.TEXT:
        return PlainTextResponse(transcript.text, headers=headers)
    if fmt is ResponseFormat.SRT:
        return PlainTextResponse(to_srt(transcript), headers=headers)
    return PlainTextResponse(to_vtt(transcript), headers=headers, media_type="text/vtt")


def sse(event: dict[str, Any]) -> bytes:
    """One server-sent event as OpenAI sends them: a ``data:`` line of JSON, a blank line."""
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


def delta_event(text: str) -> dict[str, Any]:
    """``transcript.text.delta`` (openai.types.audio.TranscriptionTextDeltaEvent)."""
    return {"type": "transcript.text.delta", "delta": text, "logprobs": None}


def done_event(text: str) -> dict[str, Any]:
    """``transcript.text.done`` (openai.types.audio.TranscriptionTextDoneEvent)."""
    return {"type": "transcript.text.done", "text": text, "logprobs": None}


def server_timing(transcript: Transcript) -> dict[str, str]:
    """Where the time went, as a standard Server-Timing header (milliseconds, summed over the
    long-form path's pieces), the wall time, and which hosts served."""
    parts = [
        f"{name.removesuffix('_s').replace('queued', 'queue')};dur={seconds * 1000:.1f}"
        for name, seconds in transcript.timings.items()
    ]
    parts.append(f"wall;dur={transcript.wall_s * 1000:.1f}")
    return {
        "Server-Timing": ", ".join(parts),
        "X-Orchestrator-Host": ",".join(sorted(transcript.hosts)),
        "X-Orchestrator-Model": transcript.model,
    }
