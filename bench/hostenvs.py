"""Host envs: what ``nox -s hosts`` costs when nothing changed, and a rebuild with a warm uv cache.

* No-op: ``nox -s hosts`` on this checkout with every env current (else the row is skipped: a
  build is not a no-op). Baseline: ``nox --list``, i.e. nox starting and importing the noxfile,
  the floor of any session.
* Rebuild (``--full`` only): ``orchestrator.envs.build.build_host(HOST, root, force=True)`` into a
  temporary copy of the project (root pyproject, ``orchestrator/``, ``hosts/HOST/``), so the real
  ``envs/`` other people are using is never touched; uv's cache is the machine's, already warm
  from building the real env. Baseline: raw uv doing the same sync (``uv venv`` + ``uv pip sync``
  of the same lock) into another temporary folder -- what our build adds is the editable
  installs, ``uv pip check`` and the isolation probe.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import harness
from bench.profiles import Profile
from bench.report import Figure, Target, skipped
from orchestrator.envs import build as env_build
from orchestrator.envs import checks as envs
from orchestrator.errors import ConfigError, EnvError

GROUP = "envs"
NOOP_TARGET = Target("value", "<=", 3.0)
NOOP_TRIES = 2
#: The env rebuilt in --full: the smaller stack (the legacy one carries torch, 1.6 GB).
REBUILD_HOST = "mlx_host"
BUILD_TIMEOUT_S = 1800.0


def _nox() -> list[str]:
    found = shutil.which("nox")
    return [found] if found else [sys.executable, "-m", "nox"]


def _timed(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, check=False, timeout=BUILD_TIMEOUT_S,
        env=env_build.uv_environment(),
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-500:]}")
    return elapsed


def _stale() -> str:
    for host in envs.host_names(harness.REPO_ROOT):
        try:
            envs.check_env(host, harness.REPO_ROOT)
        except (EnvError, ConfigError) as exc:
            return f"{exc} -- a build is not a no-op"
    return ""


def noop() -> Figure:
    name = "`nox -s hosts` with every env current"
    reason = _stale()
    if reason:
        return skipped(GROUP, name, "s", reason, NOOP_TARGET)
    root = harness.REPO_ROOT
    ours = [_timed([*_nox(), "-s", "hosts"], root) for _ in range(NOOP_TRIES)]
    base = [_timed([*_nox(), "--list"], root) for _ in range(NOOP_TRIES)]
    return Figure(
        GROUP, name, "s", value=min(ours), baseline=min(base), baseline_label="`nox --list`",
        target=NOOP_TARGET, details={"runs_s": ours, "baseline_runs_s": base},
    )  # fmt: skip


def _project_copy(dest: Path, host: str) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    dest.mkdir(parents=True)
    shutil.copy2(harness.REPO_ROOT / "pyproject.toml", dest / "pyproject.toml")
    shutil.copytree(harness.REPO_ROOT / "orchestrator", dest / "orchestrator", ignore=ignore)
    shutil.copytree(harness.REPO_ROOT / "hosts" / host, dest / "hosts" / host, ignore=ignore)
    return dest


def rebuild(host: str = REBUILD_HOST) -> Figure:
    name = f"rebuild envs/{host} from its lock, warm uv cache"
    reason = _stale()
    if reason:
        return skipped(GROUP, name, "s", f"the real env must be built first (warm cache): {reason}")
    with tempfile.TemporaryDirectory(prefix="orc-bench-env-") as tmp:
        root = _project_copy(Path(tmp) / "project", host)
        started = time.perf_counter()
        env_build.build_host(host, root, force=True, progress=lambda line: None)
        ours = time.perf_counter() - started
        uv = env_build.uv_executable()
        venv = Path(tmp) / "raw-venv"
        base = _timed([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], Path(tmp))
        base += _timed(
            [uv, "pip", "sync", "--quiet", "--python", str(envs.venv_python(venv)),
             str(envs.lock_path(host, root))],
            Path(tmp),
        )  # fmt: skip
    return Figure(
        GROUP, name, "s", value=ours, baseline=base,
        baseline_label="raw `uv venv` + `uv pip sync` of the same lock",
        note="ours also installs orchestrator and the host package editable, runs `uv pip check` "
        "and imports the stack in the env to record the isolation table",
    )  # fmt: skip


def run(profile: Profile) -> list[Figure]:
    figures = [noop()]
    if profile.env_rebuild:
        figures.append(rebuild())
    else:
        figures.append(
            skipped(
                GROUP,
                f"rebuild envs/{REBUILD_HOST} from its lock, warm uv cache",
                "s",
                "--full only",
            )
        )
    return figures
