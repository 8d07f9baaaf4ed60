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
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from orchestrator.coordinator import Coordinator
from orchestrator.coordinator.config import Config, config_from_dict

REPO_ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC_ENGINE = "orchestrator.host.synthetic:SyntheticEngine"
#: A child that has not said it is ready by then is broken, not slow.
CHILD_READY_TIMEOUT_S = 60.0
#: SIGTERM, then this long for a standalone coordinator to stop its hosts, then SIGKILL.
CHILD_STOP_TIMEOUT_S = 15.0
#: Parent of the benchmark's socket folders: ipc paths must stay under ~100 bytes, and macOS's
#: per-user $TMPDIR is already longer than half of that.
SOCKET_TMP = "/tmp"
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
    return {
        "python": "current",
        "engine": SYNTHETIC_ENGINE,
        "models": {"echo": "synthetic"},
        **overrides,
    }


def raw_config(
    hosts: Mapping[str, Mapping[str, Any]],
    models: Mapping[str, Any] | None = None,
    runtime_dir: str | Path | None = None,
    **coordinator: Any,
) -> dict[str, Any]:
    """A config document with default timings and a private runtime folder."""
    runtime = str(runtime_dir or tempfile.mkdtemp(prefix="orc-bench-", dir=SOCKET_TMP))
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
        # stderr to a file, not a pipe: a chatty child must never block on a full pipe.
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by close()
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=child_env(env),
            cwd=cwd or REPO_ROOT,
            text=True,
        )
        self.lines: list[str] = []
        # A thread reads stdout: select() on a buffered text pipe misses lines already buffered.
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        try:
            self.wait_for(ready_prefix, timeout_s)
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, prefix: str, timeout_s: float) -> str:
        """Read stdout until a line starting with ``prefix``; fail with stderr if the child dies."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if line.startswith(prefix):
                return line
        self.proc.kill()
        self.proc.wait()
        err = self.stderr_text()
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
        self._stderr.close()

    def stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def standalone(raw: Mapping[str, Any], *serve_args: str) -> Iterator[tuple[Child, Path]]:
    """``python -m orchestrator serve`` on a config file: the child and its connection file."""
    runtime = Path(raw["coordinator"]["runtime_dir"])
    runtime.mkdir(parents=True, exist_ok=True)
    path = runtime / "bench.toml"
    path.write_text(to_toml(raw))
    try:
        with Child(
            ["-m", "orchestrator", "serve", "--config", str(path), *serve_args],
            ready_prefix="status:",
        ) as child:
            line = next(x for x in child.lines if x.startswith("connection file:"))
            yield child, Path(line.split(":", 1)[1].strip())
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def bare_child(*args: str) -> Child:
    """One of the bare-pyzmq baselines (``bench.bare``) in its own process."""
    return Child(["-m", "bench.bare", *args])


def signed_child(keys_env: Mapping[str, str], *args: str) -> Child:
    """A role of the signed floor (``bench.signed``); its keys in its environment, not argv."""
    return Child(["-m", "bench.signed", *args], env=keys_env)


def socket_folder() -> tempfile.TemporaryDirectory[str]:
    """A private temporary folder short enough for ipc socket paths."""
    return tempfile.TemporaryDirectory(prefix="orc-bench-", dir=SOCKET_TMP)


def ipc_endpoint(folder: str | Path, name: str) -> str:
    return f"ipc://{folder}/{name}.sock"


def startup_split(coord: Coordinator) -> dict[str, dict[str, float]]:
    """Per replica, from the coordinator's clock: spawn -> READY, split by the host's READY timings.

    ``spawn_s`` is what is left after the host's own ``import_s`` (engine class import) and
    ``load_s.*`` (model loads with warm-up): interpreter start, the runtime's imports (numpy,
    pyzmq), reading the boot document, connecting, and the READY message's trip. ``ready_at`` is
    on this process's monotonic clock (embedded coordinators only).
    """

    def read(broker: Any) -> dict[str, dict[str, float]]:
        out = {}
        for rep in broker.supervisor.replicas:
            timings = rep.ready_info.get("timings", {})
            total = rep.ready_at - rep.started_at
            import_s = float(timings.get("import_s", 0.0))
            load_s = sum(float(v) for k, v in timings.items() if k.startswith("load_s."))
            out[rep.name] = {
                "started_at": rep.started_at,
                "ready_at": rep.ready_at,
                "total_s": total,
                "import_s": import_s,
                "load_s": load_s,
                "spawn_s": total - import_s - load_s,
            }
        return out

    return dict(coord.call(read))


def python_start_s(python: str | Path, code: str, tries: int = 2) -> float:
    """Best wall time of ``python -c code``: the floor of starting a host's interpreter."""
    best = float("inf")
    for _ in range(tries):
        t = time.perf_counter()
        subprocess.run([str(python), "-c", code], check=True, env=child_env())
        best = min(best, time.perf_counter() - t)
    return best
