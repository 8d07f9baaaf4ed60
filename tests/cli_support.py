"""Helpers for tests of the command line and the metrics endpoint.

They run ``python -m orchestrator ...`` as real subprocesses and coordinators with a public
endpoint and a connection file, as ops would meet them, and clean up every process they start.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from orchestrator.cli.serve import start_and_settle
from orchestrator.coordinator import Coordinator
from orchestrator.coordinator.config import Config
from support import FAST_COORDINATOR, FAST_RESTART, SYNTHETIC, assert_gone

REPO = Path(__file__).resolve().parent.parent
#: Generous: a CLI run imports numpy and zmq and may start hosts; the behaviour is not speed.
CLI_TIMEOUT_S = 60.0
SERVE_START_TIMEOUT_S = 60.0
SERVE_STOP_TIMEOUT_S = 20.0


def cli_env() -> dict[str, str]:
    """The environment of a CLI subprocess: this checkout first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_cli(*args: str, timeout_s: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """``python -m orchestrator ARGS`` to completion (killed if it outlives the timeout)."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=cli_env(),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def short_tmp_dir() -> Iterator[Path]:
    """A private folder with a short path: ipc socket paths must stay under ~100 characters."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="orc-cli-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """Just enough TOML for our configs: nested tables of scalars and lists."""
    scalars = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, Mapping)]
    out = [f"[{prefix}]", *scalars] if prefix and scalars else scalars
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.append(to_toml(value, f"{prefix}.{key}" if prefix else key))
    return "\n".join(out) + "\n"


def synthetic_toml(
    runtime_dir: Path,
    hosts: Mapping[str, Mapping[str, Any]],
    models: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A config document with fast failure detection and synthetic hosts."""
    raw: dict[str, Any] = {
        "coordinator": {**FAST_COORDINATOR, "runtime_dir": str(runtime_dir)},
        "restart": dict(FAST_RESTART),
        "hosts": {
            name: {"python": "current", "engine": SYNTHETIC, "ready_timeout_s": 30.0, **spec}
            for name, spec in hosts.items()
        },
    }
    if models:
        raw["models"] = models
    return raw


def write_config(folder: Path, raw: Mapping[str, Any]) -> Path:
    path = folder / "orchestrator.toml"
    path.write_text(to_toml(raw))
    return path


@contextlib.contextmanager
def public_coordinator(config: Config) -> Iterator[Coordinator]:
    """An in-process coordinator listening on ipc with a connection file, as ``serve`` runs one."""
    coord = Coordinator(config, client_endpoint="ipc")
    pids: set[int] = set()
    try:
        start_and_settle(coord, write_connection_file=True)
        yield coord
    finally:
        with contextlib.suppress(Exception):
            pids = {r["pid"] for r in coord.health()["replicas"] if r["pid"]}
        coord.close()
        if config.coordinator.runtime_dir:
            shutil.rmtree(config.coordinator.runtime_dir, ignore_errors=True)
        assert_gone(pids)


class ServeProcess:
    """``python -m orchestrator serve`` as a subprocess, with its stdout read line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=cli_env(),
            cwd=REPO,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(
                target=self._read, args=(self.proc.stdout, self.stdout, True), daemon=True
            ),
            threading.Thread(
                target=self._read, args=(self.proc.stderr, self.stderr, False), daemon=True
            ),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, sink: list[str], announce: bool) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))
            if announce:
                self.lines.put(line.rstrip("\n"))

    def wait_listening(self, timeout_s: float = SERVE_START_TIMEOUT_S) -> dict[str, str]:
        """The ``key: value`` lines printed up to the ``status:`` line that ends start-up."""
        info: dict[str, str] = {}
        deadline = time.monotonic() + timeout_s
        while "status" not in info:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"serve did not start: {self.stdout} {self.stderr[-20:]}"
                ) from None
            key, _, value = line.partition(": ")
            info[key] = value
        return info

    def stop(
        self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = SERVE_STOP_TIMEOUT_S
    ) -> int:
        """Signal, wait for the exit code; SIGKILL if it does not stop in time (then fail)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"serve ignored {sig.name} for {timeout_s}s") from None
        for reader in self._readers:
            reader.join(timeout_s)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
