"""Running things to measure: synthetic configs, embedded and standalone coordinators, children.

Benchmarks use the coordinator's default timings (what a user gets), except that every run gets
its own runtime folder, so a benchmark never touches the connection file of a coordinator the
user is running. Child processes run this interpreter with the repo root on ``PYTHONPATH`` (so
``bench`` and ``orchestrator`` import from any working directory) and are always reaped.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from orchestrator.config import Config, config_from_dict
from orchestrator.coordinator import Coordinator

REPO_ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC_ENGINE = "orchestrator.synthetic:SyntheticEngine"
#: A child that has not said it is ready by then is broken, not slow.
CHILD_READY_TIMEOUT_S = 60.0
#: SIGTERM, then this long for a standalone coordinator to stop its hosts, then SIGKILL.
CHILD_STOP_TIMEOUT_S = 15.0
#: Sample rate and chunk of the routing and streaming figures: 20 ms of 16 kHz PCM16.
SAMPLE_RATE = 16_000
CHUNK_SAMPLES = 320


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with the repo root first on PYTHONPATH."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.update(extra or {})
    return env


def synthetic_host(**overrides: Any) -> dict[str, Any]:
    """A host running the synthetic engine under this interpreter (no env, no model)."""
    return {"python": "current", "engine": SYNTHETIC_ENGINE, "models": {"echo": "synthetic"}, **overrides}


def raw_config(
    hosts: Mapping[str, Mapping[str, Any]],
    models: Mapping[str, Any] | None = None,
    runtime_dir: str | Path | None = None,
    **coordinator: Any,
) -> dict[str, Any]:
    """A config document with default timings and a private runtime folder."""
    runtime = str(runtime_dir or tempfile.mkdtemp(prefix="orc-bench-", dir="/tmp"))
    raw: dict[str, Any] = {
        "coordinator": {"runtime_dir": runtime, **coordinator},
        "hosts": {name: dict(table) for name, table in hosts.items()},
    }
    if models:
        raw["models"] = dict(models)
    return raw


def config(raw: Mapping[str, Any]) -> Config:
    return config_from_dict(raw, source="<bench>", root=REPO_ROOT)


@contextlib.contextmanager
def embedded(cfg: Config) -> Iterator[Coordinator]:
    """A started in-process coordinator, always closed (its hosts stopped and reaped)."""
    coord = Coordinator(cfg)
    try:
        coord.start()
        yield coord
    finally:
        coord.close()
        shutil.rmtree(cfg.coordinator.runtime_dir, ignore_errors=True)


def to_toml(doc: Mapping[str, Any], prefix: str = "") -> str:
    """A TOML rendering of a config document (strings, numbers, booleans, string lists, tables)."""
    scalars, tables = [], []
    for key, value in doc.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        else:
            scalars.append(f"{_toml_key(key)} = {_toml_value(value)}")
    out = []
    if scalars:
        if prefix:
            out.append(f"[{prefix}]")
        out += scalars
        out.append("")
    for key, value in tables:
        out.append(to_toml(value, f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key)))
    return "\n".join(out)


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


class Child:
    """A Python child process that prints a line when ready; stopped and reaped on close."""

    def __init__(
        self,
        args: list[str],
        *,
        ready_prefix: str = "ready",
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout_s: float = CHILD_READY_TIMEOUT_S,
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(env),
            cwd=cwd or REPO_ROOT,
            text=True,
        )
        self.lines: list[str] = []
        try:
            self.wait_for(ready_prefix, timeout_s)
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for(self, prefix: str, timeout_s: float) -> str:
        """Read stdout until a line starting with ``prefix``; fail with stderr if the child dies."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not sel.select(max(0.0, deadline - time.monotonic())):
                    break
                line = self.proc.stdout.readline()
                if not line:
                    break
                self.lines.append(line.rstrip("\n"))
                if line.startswith(prefix):
                    return line.rstrip("\n")
        self.proc.kill()
        err = self.proc.stderr.read() if self.proc.stderr else ""
        raise RuntimeError(
            f"{' '.join(self.proc.args[1:4])}: no {prefix!r} line within {timeout_s:.0f}s "
            f"(exit {self.proc.poll()}): {err[-2000:]}"
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(CHILD_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def standalone(raw: Mapping[str, Any]) -> Iterator[tuple[Child, Path]]:
    """``python -m orchestrator serve`` on a config file: the child and its connection file."""
    runtime = Path(raw["coordinator"]["runtime_dir"])
    runtime.mkdir(parents=True, exist_ok=True)
    path = runtime / "bench.toml"
    path.write_text(to_toml(raw))
    try:
        with Child(
            ["-m", "orchestrator", "serve", "--config", str(path)], ready_prefix="status:"
        ) as child:
            line = next(x for x in child.lines if x.startswith("connection file:"))
            yield child, Path(line.split(":", 1)[1].strip())
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def bare_child(*args: str) -> Child:
    """One of the bare-pyzmq baselines (``bench.bare``) in its own process."""
    return Child(["-m", "bench.bare", *args])


def ipc_endpoint(folder: Path, name: str) -> str:
    return f"ipc://{folder}/{name}.sock"
