"""A transcript as text: plain, JSON, SubRip (srt) or WebVTT (vtt)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from orchestrator.longform.merge import Transcript

FORMATS = ("txt", "json", "srt", "vtt")


def timestamp(seconds: float, separator: str) -> str:
    """HH:MM:SS<sep>mmm, as both subtitle formats write times (srt ',', vtt '.')."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_txt(transcript: Transcript) -> str:
    """One line per segment: readable, and diffable against another run."""
    return "".join(f"{seg.text}\n" for seg in transcript.segments)


def to_json(transcript: Transcript) -> str:
    return json.dumps(transcript.to_dict(), ensure_ascii=False, indent=1) + "\n"


def _cues(transcript: Transcript, separator: str) -> list[str]:
    return [
        f"{timestamp(seg.start, separator)} --> {timestamp(max(seg.end, seg.start), separator)}\n"
        f"{seg.text}\n"
        for seg in transcript.segments
    ]


def to_srt(transcript: Transcript) -> str:
    return "\n".join(f"{n}\n{cue}" for n, cue in enumerate(_cues(transcript, ","), start=1))


def to_vtt(transcript: Transcript) -> str:
    return "WEBVTT\n\n" + "\n".join(_cues(transcript, "."))


RENDERERS: dict[str, Callable[[Transcript], str]] = {
    "txt": to_txt,
    "json": to_json,
    "srt": to_srt,
    "vtt": to_vtt,
}


def render(transcript: Transcript, fmt: str) -> str:
    if fmt not in RENDERERS:
        raise ValueError(f"unknown format {fmt!r} (fix: one of {', '.join(FORMATS)})")
    return RENDERERS[fmt](transcript)


def format_for_path(path: str | Path, default: str = "txt") -> str:
    """The format an output file's suffix names (``meeting.srt`` -> srt), else ``default``."""
    suffix = Path(path).suffix.lstrip(".").lower()
    return suffix if suffix in RENDERERS else default
