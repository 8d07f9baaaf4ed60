"""Argument types shared by the commands: one place refuses a bad number, in one line."""

from __future__ import annotations

import argparse

from orchestrator.longform.retry import MAX_PIECE_ATTEMPTS

#: Longer than any honest wait, short enough to catch a unit mistake (ms typed for s).
MAX_SECONDS = 86_400.0


def seconds(text: str) -> float:
    """A positive, finite number of seconds (``inf``, ``nan``, 0 and negatives are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (0 < value <= MAX_SECONDS):  # NaN fails this too
        raise argparse.ArgumentTypeError(
            f"{text} is not a duration in (0, {MAX_SECONDS:g}] seconds (fix: e.g. 30)"
        )
    return value


def attempts(text: str) -> int:
    """A whole number of attempts per piece, from 1 (never retried) to ``MAX_PIECE_ATTEMPTS``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of attempts") from None
    if not 1 <= value <= MAX_PIECE_ATTEMPTS:
        raise argparse.ArgumentTypeError(
            f"{text} is not a number of attempts in [1, {MAX_PIECE_ATTEMPTS}] (fix: e.g. 3)"
        )
    return value
