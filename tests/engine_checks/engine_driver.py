"""Drive one real engine through a plan of steps, inside a host env, and report what happened.

``tests/test_engines.py`` runs it with a host env's interpreter (``envs/<host>/bin/python``)::

    envs/legacy_host/bin/python tests/engine_checks/engine_driver.py PLAN.json REPORT.json

so each stack is exercised in its own venv through the same :class:`orchestrator.host.engine.Engine`
calls the host runtime makes: the engine class is imported by entry point, models are loaded on
the main thread and transcripts run on another thread (as the runtime's workers do). One process
runs a whole plan because importing torch + qwen-asr alone takes 10-30 s here.

A plan is JSON: ``{"engine": "pkg.module:Class", "engine_options": {...}, "steps": [...]}``, each
step ``{"id": ..., "op": ..., ...}`` with ``op`` one of ``load`` (name, ref, options), ``warmup``
(model), ``transcribe`` (model, seconds of seeded noise, options), ``capabilities`` and
``call`` (``target`` = ``module:function`` importable from this directory, ``args``). The report
has each step's outcome (result or typed error, elapsed seconds) plus versions and peak RSS.
Standard library + numpy + the env's own packages only.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import OrchestratorError
from orchestrator.host.engine import ENGINE_SAMPLE_RATE, Engine, ModelSpec, load_engine_class

NOISE_SEED = 1234
NOISE_AMPLITUDE = 0.1
RU_MAXRSS_PER_MB = 1024 * 1024 if sys.platform == "darwin" else 1024


def noise(seconds: float) -> np.ndarray:
    """Seeded noise: a tiny model's output only has to be deterministic, not meaningful."""
    rng = np.random.default_rng(NOISE_SEED)
    samples = int(seconds * ENGINE_SAMPLE_RATE)
    return (rng.standard_normal(samples) * NOISE_AMPLITUDE).astype(np.float32)


def on_other_thread(fn: Any) -> Any:
    """Run ``fn()`` on a fresh thread, as the host runtime's transcribe workers do."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=run, name="transcribe-worker")
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def run_step(engine: Engine, step: dict[str, Any]) -> Any:
    op = step["op"]
    if op == "load":
        engine.load(ModelSpec(step["name"], step["ref"], step.get("options", {})))
        return None
    if op == "warmup":
        return on_other_thread(lambda: engine.warmup(step["model"]))
    if op == "transcribe":
        audio = noise(step.get("seconds", 2.0))
        options = step.get("options", {})

        def transcribe() -> dict[str, Any]:
            engine.check_options(options)  # the runtime's first gate, then the engine's own
            return engine.transcribe(step["model"], audio, options).to_wire()

        return on_other_thread(transcribe)
    if op == "capabilities":
        return engine.capabilities()
    if op == "call":
        module_name, _, function = step["target"].partition(":")
        return getattr(importlib.import_module(module_name), function)(*step.get("args", []))
    raise ValueError(f"unknown op {op!r}")


def outcome(engine: Engine, step: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        value = run_step(engine, step)
        report: dict[str, Any] = {"ok": True, "value": value}
    except OrchestratorError as exc:
        report = {
            "ok": False,
            "error": {"type": type(exc).__name__, "code": str(exc.code), "message": exc.message},
        }
    except Exception as exc:  # an untyped error is itself a finding: tests assert on it
        report = {
            "ok": False,
            "error": {"type": type(exc).__name__, "code": None, "message": str(exc)},
            "traceback": traceback.format_exc(),
        }
    report["elapsed_s"] = round(time.perf_counter() - started, 4)
    return report


def main(plan_path: str, report_path: str) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # for "call" targets
    plan = json.loads(Path(plan_path).read_text())
    started = time.perf_counter()
    engine = load_engine_class(plan["engine"])(plan.get("engine_options", {}))
    import_s = time.perf_counter() - started
    steps = {step["id"]: outcome(engine, step) for step in plan["steps"]}
    report = {
        "engine_import_s": round(import_s, 4),
        "steps": steps,
        "versions": engine.versions(),
        "peak_rss_mb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / RU_MAXRSS_PER_MB, 1
        ),
    }
    engine.close()
    Path(report_path).write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
