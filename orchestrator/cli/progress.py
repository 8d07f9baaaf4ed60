"""A one-line progress bar on a terminal's stderr; nothing at all when stderr is piped."""

from __future__ import annotations

import sys
import time
from typing import IO

from orchestrator.longform.runner import Progress

BAR_WIDTH = 30
#: Redraws closer together than this are skipped (a fast run would flood the terminal).
MIN_REDRAW_INTERVAL_S = 0.1


class ProgressBar:
    """``[#########.....]  45%  1620s/3600s  54 pieces  rtf 0.05  1 retried``, redrawn in place
    (the retry count only once a piece was retried)."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stderr
        self._drawn_at = 0.0
        self._shown = False

    @classmethod
    def for_terminal(cls, out: IO[str] | None = None) -> ProgressBar | None:
        out = out or sys.stderr
        return cls(out) if out.isatty() else None

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        finished = progress.total_s is not None and progress.done_s >= progress.total_s - 1e-6
        if not finished and now - self._drawn_at < MIN_REDRAW_INTERVAL_S:
            return
        self._drawn_at = now
        total = progress.total_s or 0.0
        fraction = min(1.0, progress.done_s / total) if total else 0.0
        filled = round(fraction * BAR_WIDTH)
        rtf = progress.wall_s / progress.done_s if progress.done_s else 0.0
        line = (
            f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:4.0%}  "
            f"{progress.done_s:.0f}s/{total:.0f}s  {progress.pieces_done} pieces  rtf {rtf:.3f}"
            + (f"  {progress.retries} retried" if progress.retries else "")
        )
        self.out.write(line)
        self.out.flush()
        self._shown = True

    def close(self) -> None:
        """End the bar's line so what follows starts on its own."""
        if self._shown:
            self.out.write("\n")
            self.out.flush()
            self._shown = False
