"""Builds the host envs from their locks and proves their isolation; driven by ``noxfile.py``.

``nox -s lock`` calls :func:`lock_host`; ``nox -s hosts`` calls :func:`build_host` for each host
and prints :func:`format_isolation_table`; the test suite's fixtures call :func:`build_host` too.

A build is ``uv venv`` + ``uv pip sync <lock>`` (the venv then holds exactly the lock) + an
editable ``--no-deps`` install of the root ``orchestrator`` package and the host's own package +
``uv pip check`` (catches a lock older than a pyproject) + the isolation probe run by the env's
own interpreter. Only after all of that succeeds is the stamp written, so an interrupted or
failed build never looks current. A host whose stamp matches its inputs is skipped without
running uv at all: that is what makes a second ``nox -s hosts`` a fast no-op.

Standard library only (plus the ``uv`` executable), so that nox can run it from a bare
interpreter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import fcntl
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from orchestrator.envs import checks as envs
from orchestrator.wire.errors import ConfigError, EnvError

logger = logging.getLogger(__name__)

LOCK_PYTHON_VERSION = "3.11"
"""Lowest Python the locks resolve for; ``--universal`` adds markers for every newer one."""

LOCK_COMPILE_COMMAND = "nox -s lock"
"""Recorded in each lock's header instead of the real command line, which holds temp paths."""

COMMON_PACKAGES = ("huggingface-hub", "transformers")
"""The distributions whose conflict is why the hosts need separate envs: shown for every host."""

PROBE_TIMEOUT_S = 600.0
"""Importing torch + transformers takes 10-15 s on a warm disk; a cold one can take minutes."""

PROBE_STDERR_TAIL_LINES = 25
"""How much of a failed probe's traceback the error message carries."""

BYTES_PER_MIB = 1024 * 1024

Progress = Callable[[str], None]


class BuildAction(enum.StrEnum):
    """What :func:`build_host` did."""

    UP_TO_DATE = "up to date"
    BUILT = "built"


@dataclasses.dataclass(frozen=True)
class BuildReport:
    """The outcome of one host build; ``commands`` is every uv command run (none if up to date)."""

    host: str
    action: BuildAction
    commands: tuple[tuple[str, ...], ...]
    elapsed_s: float
    isolation: dict[str, object]


@dataclasses.dataclass(frozen=True)
class IsolationSpec:
    """What the probe imports and reports for one host: its ``[tool.orchestrator.isolation]``."""

    imports: tuple[str, ...]
    packages: tuple[str, ...]
    facts: dict[str, str]

    def as_probe_argument(self) -> str:
        return json.dumps(
            {
                "imports": list(self.imports),
                "packages": [*COMMON_PACKAGES, *self.packages],
                "facts": self.facts,
            }
        )


def isolation_spec(host: str, root: Path) -> IsolationSpec:
    """Read the host's probe spec; the host's own package and ``orchestrator`` are always imported.

    Importing both proves the editable installs work inside the env, not only the stack.
    """
    pyproject = envs.host_dir(host, root) / envs.PYPROJECT_FILENAME
    with pyproject.open("rb") as f:
        table = tomllib.load(f).get("tool", {}).get("orchestrator", {}).get("isolation", {})
    try:
        imports = tuple(str(m) for m in table.get("imports", []))
        packages = tuple(str(p) for p in table.get("packages", []))
        facts = {str(k): str(v) for k, v in dict(table.get("facts", {})).items()}
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{pyproject}: [tool.orchestrator.isolation] must hold lists `imports`, `packages` "
            f"and a table `facts`: {exc}"
        ) from exc
    return IsolationSpec(imports=("orchestrator", host, *imports), packages=packages, facts=facts)


def uv_executable() -> str:
    """The ``uv`` binary: on PATH, else the one the ``uv`` Python package ships."""
    found = shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError(
            "the `uv` executable was not found; install it: `pip install uv`"
        ) from None
    return str(find_uv_bin())


def uv_environment() -> dict[str, str]:
    """The process environment for uv, with ``PIP_FIND_LINKS`` handed on as ``UV_FIND_LINKS``.

    uv ignores pip's variable; a machine that keeps a CPU torch build in a pip find-links folder
    must get that build, not PyPI's multi-GB CUDA one.
    """
    env = dict(os.environ)
    if env.get("PIP_FIND_LINKS") and not env.get("UV_FIND_LINKS"):
        env["UV_FIND_LINKS"] = env["PIP_FIND_LINKS"]
    return env


def _run(
    command: Sequence[str], *, cwd: Path, host: str, fix: str, ran: list[tuple[str, ...]]
) -> None:
    ran.append(tuple(command))
    result = subprocess.run(list(command), cwd=cwd, env=uv_environment(), check=False)
    if result.returncode != 0:
        raise EnvError(
            f"host {host!r}: `{' '.join(command)}` failed with exit code {result.returncode} "
            "(its output is above)",
            host=host,
            fix=fix,
        )


@contextlib.contextmanager
def _exclusive(host: str, root: Path) -> Iterator[None]:
    """Serialise builds of one host: several test runs or nox sessions may share a checkout."""
    lock_dir = root / envs.ENVS_DIRNAME / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / f"{host}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def lock_host(
    host: str, root: Path, *, extra_args: Sequence[str] = (), progress: Progress = logger.info
) -> Path:
    """Regenerate ``hosts/<host>/requirements.lock``: one universal lock for Linux and macOS.

    A ``uv pip compile --universal`` requirements file records versions and markers but no
    find-links path, unlike ``uv lock``. The root ``orchestrator`` package is left out: it is a
    path dependency, installed editable by the build. Pins already in the lock are kept unless
    ``extra_args`` says otherwise (``--upgrade``, ``--upgrade-package X``).
    """
    project = envs.host_dir(host, root)
    progress(f"[{host}] locking {project.relative_to(root)}/{envs.LOCK_FILENAME}")
    command = [
        uv_executable(),
        "pip",
        "compile",
        envs.PYPROJECT_FILENAME,
        "--universal",
        "--python-version",
        LOCK_PYTHON_VERSION,
        "--no-emit-package",
        "orchestrator",
        "--custom-compile-command",
        LOCK_COMPILE_COMMAND,
        "--quiet",
        "--output-file",
        envs.LOCK_FILENAME,
        *extra_args,
    ]
    _run(command, cwd=project, host=host, fix="fix the host's pyproject.toml", ran=[])
    return project / envs.LOCK_FILENAME


def python_version(python: Path) -> str:
    """The full version of an interpreter, e.g. ``3.11.7``."""
    if Path(python) == Path(sys.executable):
        return platform.python_version()
    out = subprocess.run(
        [str(python), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _venv_version(venv: Path) -> str | None:
    """The Python version a venv was made with, from its ``pyvenv.cfg``; None if it has none."""
    try:
        lines = (venv / "pyvenv.cfg").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition("=")
        if key.strip() in ("version_info", "version"):
            return value.strip()
    return None


def _stamp_is_current(
    stamp: dict[str, object], host: str, root: Path, inputs: dict[str, str], version: str
) -> bool:
    return (
        not envs.changed_inputs(stamp, inputs)
        and stamp.get("python") == version
        and envs.venv_python(envs.env_dir(host, root)).exists()
    )


def _venv_is_reusable(
    stamp: dict[str, object] | None, venv: Path, inputs: dict[str, str], version: str
) -> bool:
    """Whether syncing the existing venv is enough, or it must be made afresh.

    Afresh when it is absent, of another Python, moved (its scripts and editable installs point
    at the old place) or left by a build that never finished (its state is unknown).
    """
    built = stamp.get("inputs") if stamp else None
    return (
        isinstance(built, dict)
        and built.get(envs.ENV_LOCATION_KEY) == inputs[envs.ENV_LOCATION_KEY]
        and _venv_version(venv) == version
        and envs.venv_python(venv).exists()
    )


def _write_stamp(host: str, root: Path, stamp: dict[str, object]) -> None:
    path = envs.stamp_path(host, root)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(stamp, indent=2) + "\n")
    os.replace(partial, path)  # atomic: a reader sees the old stamp or the whole new one


def build_host(
    host: str,
    root: Path,
    *,
    python: Path | None = None,
    force: bool = False,
    progress: Progress = logger.info,
) -> BuildReport:
    """Make ``envs/<host>`` match the host's lock, or do nothing if its stamp says it already does.

    ``python`` is the interpreter the venv is made from (default: the one running this code).
    Raises ConfigError for an unknown host or a missing lock, EnvError naming the host when a
    step fails.
    """
    python = Path(python or sys.executable)
    started = time.monotonic()
    inputs = envs.stamp_inputs(host, root)
    version = python_version(python)
    with _exclusive(host, root):
        stamp = envs.read_stamp(host, root)
        if (
            not force
            and stamp is not None
            and _stamp_is_current(stamp, host, root, inputs, version)
        ):
            progress(f"[{host}] up to date (stamp matches the lock and pyprojects)")
            isolation = stamp.get("isolation")
            return BuildReport(
                host=host,
                action=BuildAction.UP_TO_DATE,
                commands=(),
                elapsed_s=time.monotonic() - started,
                isolation=isolation if isinstance(isolation, dict) else {},
            )
        reuse = _venv_is_reusable(stamp, envs.env_dir(host, root), inputs, version)
        ran = _build(host, root, python=python, fresh_venv=not reuse, progress=progress)
        isolation = probe_host(host, root, progress=progress)
        _write_stamp(
            host,
            root,
            {
                "format": envs.STAMP_FORMAT,
                "inputs": inputs,
                "python": version,
                "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "isolation": isolation,
            },
        )
    elapsed = time.monotonic() - started
    progress(f"[{host}] built in {elapsed:.1f} s")
    return BuildReport(
        host=host,
        action=BuildAction.BUILT,
        commands=tuple(ran),
        elapsed_s=elapsed,
        isolation=isolation,
    )


def _build(
    host: str, root: Path, *, python: Path, fresh_venv: bool, progress: Progress
) -> list[tuple[str, ...]]:
    """Run the uv steps of a build; returns the commands run."""
    uv = uv_executable()
    venv = envs.env_dir(host, root)
    venv_python = str(envs.venv_python(venv))
    lock = envs.lock_path(host, root)
    ran: list[tuple[str, ...]] = []
    envs.stamp_path(host, root).unlink(missing_ok=True)  # no stamp until this build succeeds

    def step(label: str, command: Sequence[str], fix: str) -> None:
        t0 = time.monotonic()
        progress(f"[{host}] {label} ...")
        _run(command, cwd=root, host=host, fix=fix, ran=ran)
        progress(f"[{host}] {label}: done in {time.monotonic() - t0:.1f} s")

    if fresh_venv:
        step(
            f"creating venv from {python}",
            [uv, "venv", "--quiet", "--clear", "--python", str(python), str(venv)],
            fix=f"check that {python} runs",
        )
    step(
        f"syncing {lock.relative_to(root)}",
        [uv, "pip", "sync", "--python", venv_python, str(lock)],
        fix="see uv's message above; for a +cpu torch wheel, set PIP_FIND_LINKS or UV_FIND_LINKS "
        "to a folder (or UV_EXTRA_INDEX_URL to an index) that holds it",
    )
    step(
        "installing orchestrator and the host package (editable)",
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            venv_python,
            "--no-deps",
            "-e",
            str(root),
            "-e",
            str(envs.host_dir(host, root)),
        ],
        fix="check the pyproject.toml of the root and of the host",
    )
    step(
        "checking installed requirements",
        [uv, "pip", "check", "--python", venv_python],
        fix="the lock is older than a pyproject.toml: run `nox -s lock`, then `nox -s hosts`",
    )
    return ran


def probe_host(host: str, root: Path, *, progress: Progress = logger.info) -> dict[str, object]:
    """Run the isolation probe with the host env's own interpreter; returns what it reported.

    Raises EnvError naming the host, with the tail of the traceback, if its stack fails to import.
    """
    spec = isolation_spec(host, root)
    python = envs.host_python(host, root)
    progress(f"[{host}] importing {', '.join(spec.imports)} inside the env ...")
    t0 = time.monotonic()
    env = {**os.environ, **envs.host_env_vars(root)}
    Path(env["NUMBA_CACHE_DIR"]).mkdir(parents=True, exist_ok=True)
    probe_script = Path(__file__).with_name("probe.py")
    try:
        result = subprocess.run(
            [str(python), str(probe_script), spec.as_probe_argument()],
            capture_output=True,
            text=True,
            env=env,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise EnvError(
            f"host {host!r}: importing its stack took over {PROBE_TIMEOUT_S:.0f} s", host=host
        ) from exc
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-PROBE_STDERR_TAIL_LINES:])
        raise EnvError(
            f"host {host!r}: its env cannot import its stack "
            f"(exit code {result.returncode}):\n{tail}\n",
            host=host,
            fix=f"rebuild with `nox -s hosts -- --force {host}`; if that fails too, fix "
            f"hosts/{host}/pyproject.toml and run `nox -s lock`",
        )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    progress(f"[{host}] imports done in {time.monotonic() - t0:.1f} s")
    return report


def _stack_cell(isolation: dict[str, object]) -> str:
    versions = dict(isolation.get("versions") or {})  # type: ignore[call-overload]
    facts = dict(isolation.get("facts") or {})  # type: ignore[call-overload]
    parts = [f"{name} {versions[name]}" for name in versions if name not in COMMON_PACKAGES]
    parts += [f"{label}: {value}" for label, value in facts.items()]
    return ", ".join(parts)


def isolation_row(host: str, isolation: dict[str, object]) -> dict[str, str]:
    """One table row: host, python, the conflicting pair, the stack's own packages, size."""
    versions = dict(isolation.get("versions") or {})  # type: ignore[call-overload]
    size = isolation.get("size_bytes")
    return {
        "host": host,
        "python": str(isolation.get("python", "?")),
        **{name: str(versions.get(name) or "-") for name in COMMON_PACKAGES},
        "stack": _stack_cell(isolation),
        "size": f"{size / BYTES_PER_MIB:,.0f} MiB" if isinstance(size, int) else "?",
    }


def format_isolation_table(reports: Sequence[BuildReport]) -> str:
    """A plain-text table with one row per host, columns aligned."""
    rows = [isolation_row(r.host, r.isolation) for r in reports]
    if not rows:
        return "(no hosts)"
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(row[c]) for row in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines.append("  ".join("-" * widths[c] for c in columns))
    lines += ["  ".join(row[c].ljust(widths[c]) for c in columns) for row in rows]
    return "\n".join(lines)
