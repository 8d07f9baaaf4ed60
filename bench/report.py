"""Figures, their baselines and targets, and the two outputs: a printed table and a JSON file.

Every benchmark group returns :class:`Figure` objects. A figure holds our number, the baseline
measured in the same run (and what that baseline is), the ratio between them, and the target we
hold ourselves to, if any. A figure that could not be measured here carries ``skipped`` with the
reason instead of a number, so the table says why rather than failing the run.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import zmq

import orchestrator


@dataclasses.dataclass(frozen=True)
class Target:
    """A bound we hold ourselves to: on the ``ratio`` or the ``value``, ``<=`` or ``>=`` a limit."""

    on: str  # "ratio" or "value"
    op: str  # "<=" or ">="
    limit: float

    def met(self, value: float | None, ratio: float | None) -> bool | None:
        x = ratio if self.on == "ratio" else value
        if x is None or math.isnan(x):
            return None
        return x <= self.limit if self.op == "<=" else x >= self.limit

    def text(self, unit: str) -> str:
        if self.on == "ratio":
            return f"ratio {self.op} {self.limit:g}x"
        return f"{self.op} {format_value(self.limit, unit)}"


@dataclasses.dataclass
class Figure:
    """One measured number beside its baseline."""

    group: str
    name: str
    unit: str
    value: float | None = None
    baseline: float | None = None
    baseline_label: str = ""
    target: Target | None = None
    skipped: str = ""
    note: str = ""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        return (
            None if self.target is None or self.skipped else self.target.met(self.value, self.ratio)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "name": self.name,
            "unit": self.unit,
            "value": _finite(self.value),
            "baseline": _finite(self.baseline),
            "baseline_label": self.baseline_label,
            "ratio": _finite(self.ratio),
            "target": dataclasses.asdict(self.target) if self.target else None,
            "target_met": self.met,
            "skipped": self.skipped or None,
            "note": self.note or None,
            "details": self.details,
        }


def skipped(group: str, name: str, unit: str, reason: str, target: Target | None = None) -> Figure:
    return Figure(group, name, unit, skipped=reason, target=target)


def _finite(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def format_value(x: float | None, unit: str) -> str:
    """Seconds as µs/ms/s, rates as integers, the rest with a sensible number of digits."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if unit == "s":
        if abs(x) < 1e-3:
            return f"{x * 1e6:.0f} µs"
        if abs(x) < 1.0:
            return f"{x * 1e3:.2f} ms"
        return f"{x:.2f} s"
    if unit in ("req/s", "msg/s"):
        return f"{x:,.0f} {unit}" if abs(x) >= 100 else f"{x:.3g} {unit}"
    if unit == "%":
        return f"{x:.2f} %"
    if unit == "count":
        return f"{x:.0f}"
    return f"{x:.3g} {unit}"


def format_table(figures: Sequence[Figure]) -> str:
    """The printed table: one block per group, skipped rows with their reason."""
    header = ("figure", "ours", "baseline", "ratio", "target", "status")
    rows: list[tuple[str, ...]] = []
    group = None
    for fig in figures:
        if fig.group != group:
            group = fig.group
            rows.append((f"[{group}]", "", "", "", "", ""))
        target = fig.target.text(fig.unit) if fig.target else ""
        if fig.skipped:
            rows.append((fig.name, f"skipped: {fig.skipped}", "", "", target, "skipped"))
            continue
        base = format_value(fig.baseline, fig.unit) if fig.baseline is not None else ""
        if fig.baseline_label:
            base = f"{base} ({fig.baseline_label})" if base else fig.baseline_label
        ratio = f"{fig.ratio:.2f}x" if fig.ratio is not None else ""
        status = {True: "met", False: "SHORT", None: ""}[fig.met]
        rows.append((fig.name, format_value(fig.value, fig.unit), base, ratio, target, status))
    widths = [max(len(r[i]) for r in (*rows, header)) for i in range(len(header))]
    # The ours and baseline cells can be long (skip reasons, labels): cap them, wrap nothing.
    widths[1] = min(widths[1], 60)
    widths[2] = min(widths[2], 48)
    lines = [_row(header, widths), _row(tuple("-" * w for w in widths), widths)]
    lines += [_row(r, widths) for r in rows]
    notes = [f"  {f.group}/{f.name}: {f.note}" for f in figures if f.note]
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines)


def _row(cells: tuple[str, ...], widths: list[int]) -> str:
    out = []
    for cell, width in zip(cells, widths):
        out.append(cell if len(cell) <= width else cell[: width - 1] + "…")
    return "  ".join(c.ljust(w) for c, w in zip(out, widths)).rstrip()


def machine_info() -> dict[str, Any]:
    """What a reader needs to judge the numbers: CPU, cores, memory, OS, and how busy it was."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "logical_cores": psutil.cpu_count(logical=True),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "load_average": list(os.getloadavg()),
    }


def versions() -> dict[str, str]:
    return {
        "orchestrator": orchestrator.__version__,
        "git_commit": _git_commit(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "numpy": np.__version__,
        "psutil": psutil.__version__,
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parent.parent,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def write_json(
    path: Path,
    *,
    profile: str,
    started: datetime.datetime,
    elapsed_s: float,
    machine: dict[str, Any],
    figures: Sequence[Figure],
    extra_versions: dict[str, Any],
    notes: Sequence[str],
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    machine = {**machine, "load_average_end": list(os.getloadavg())}
    doc = {
        "schema": 1,
        "profile": profile,
        "started": started.isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed_s, 1),
        "machine": machine,
        "versions": {**versions(), **extra_versions},
        "figures": [f.to_json() for f in figures],
        "notes": list(notes),
    }
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
