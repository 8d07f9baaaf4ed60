"""A transcript as text: plain, JSON, SubRip (srt) or WebVTT (vtt).

Word timestamps, where the engine gave them (``word_timestamps``), go into every timed format:
JSON lists them under each segment; a WebVTT cue carries each word's start as an inline
timestamp tag (``<00:00:01.240>word``, karaoke-style highlighting in players); SubRip has no
markup for words, so its cues are timed by their first and last word, which are closer to the
speech than a segment's edges.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from orchestrator.longform.merge import Transcript
from orchestrator.wire.messages import Segment

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


def _cue(start: float, end: float, text: str, separator: str) -> str:
    return f"{timestamp(start, separator)} --> {timestamp(max(end, start), separator)}\n{text}\n"


def _srt_cue(seg: Segment) -> str:
    if seg.words:
        return _cue(seg.words[0].start, seg.words[-1].end, seg.text, ",")
    return _cue(seg.start, seg.end, seg.text, ",")


def _vtt_cue(seg: Segment) -> str:
    if not seg.words:
        return _cue(seg.start, seg.end, seg.text, ".")
    first, *rest = seg.words
    text = " ".join([first.word, *(f"<{timestamp(w.start, '.')}>{w.word}" for w in rest)])
    return _cue(first.start, seg.words[-1].end, text, ".")


def to_srt(transcript: Transcript) -> str:
    cues = (_srt_cue(seg) for seg in transcript.segments)
    return "\n".join(f"{n}\n{cue}" for n, cue in enumerate(cues, start=1))


def to_vtt(transcript: Transcript) -> str:
    return "WEBVTT\n\n" + "\n".join(_vtt_cue(seg) for seg in transcript.segments)


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
