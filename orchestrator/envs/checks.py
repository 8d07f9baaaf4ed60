"""Where each host's venv lives and whether it still matches the lock it was built from.

The supervisor calls :func:`check_env` before it spawns ``envs/<host>/bin/python -m
orchestrator.host``, so a host never starts inside a venv that is missing or was built from
another lock; the error names the fix (``nox -s hosts``). The build side
(:mod:`orchestrator.envs.build`, driven by ``noxfile.py``) writes the stamp this module reads.

A host is a directory ``hosts/<name>/`` holding its own ``pyproject.toml`` and a committed
``requirements.lock``; its venv is ``envs/<name>/``. The stamp records a digest of every file
that decides what the venv contains: the lock (versions) and the two pyprojects whose packages
are installed editable into it (the host's and the root ``orchestrator`` one).

Standard library only: the coordinator imports this before any host env exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from orchestrator.wire.errors import ConfigError, EnvMissingError, EnvStaleError

ROOT_ENV_VAR = "ORCHESTRATOR_ROOT"
"""Overrides the project root when the package is not imported from its checkout."""

HOSTS_DIRNAME = "hosts"
ENVS_DIRNAME = "envs"
LOCK_FILENAME = "requirements.lock"
PYPROJECT_FILENAME = "pyproject.toml"
STAMP_FILENAME = ".orchestrator-stamp.json"
ENV_LOCATION_KEY = "env location"
STAMP_FORMAT = 1
"""Bump when the digest recipe changes, so every env built by the old recipe reads as stale."""

# Only these pyproject entries decide what an editable install puts into a venv (and what the
# isolation probe checks). Editing a description, the dev extras or lint settings must not make
# every env stale.
_STAMPED_PROJECT_KEYS = ("name", "requires-python", "dependencies", "scripts", "entry-points")
_STAMPED_TOOL_TABLES = ("hatch", "uv", "orchestrator")


def project_root() -> Path:
    """The checkout holding ``hosts/`` and ``envs/``: ``$ORCHESTRATOR_ROOT``, else the package's parent.

    The host envs install this package editable, so the parent directory is the checkout both in
    the coordinator's interpreter and inside every host env.
    """
    override = os.environ.get(ROOT_ENV_VAR)
    if override:
        return Path(override).resolve()
    return Path(__file__).resolve().parents[2]


def _root(root: Path | None) -> Path:
    return project_root() if root is None else Path(root)


def host_names(root: Path | None = None) -> list[str]:
    """Every host project under ``hosts/``: a directory with a ``pyproject.toml``, sorted."""
    hosts_dir = _root(root) / HOSTS_DIRNAME
    if not hosts_dir.is_dir():
        return []
    return sorted(p.name for p in hosts_dir.iterdir() if (p / PYPROJECT_FILENAME).is_file())


def host_dir(host: str, root: Path | None = None) -> Path:
    """The host's project directory; a name that is not a host is a configuration error."""
    base = _root(root)
    known = host_names(base)
    if host not in known:
        raise ConfigError(
            f"unknown host {host!r}: no {HOSTS_DIRNAME}/{host}/{PYPROJECT_FILENAME} under {base} "
            f"(known hosts: {', '.join(known) or 'none'})"
        )
    return base / HOSTS_DIRNAME / host


def env_dir(host: str, root: Path | None = None) -> Path:
    """Where the host's venv lives (it may not exist yet)."""
    return _root(root) / ENVS_DIRNAME / host


def lock_path(host: str, root: Path | None = None) -> Path:
    """The host's committed lock, the only source of its package versions."""
    return host_dir(host, root) / LOCK_FILENAME


def stamp_path(host: str, root: Path | None = None) -> Path:
    return env_dir(host, root) / STAMP_FILENAME


def venv_python(venv: Path) -> Path:
    """The interpreter of a venv (POSIX layout: the hosts run on Linux and macOS)."""
    return venv / "bin" / "python"


def host_python(host: str, root: Path | None = None) -> Path:
    """The interpreter of the host's venv; raises EnvMissingError if the venv has none.

    Returns the venv's own ``bin/python`` (not its resolved target), because only that path makes
    Python pick up the venv's site-packages.
    """
    host_dir(host, root)  # an unknown host is a ConfigError, not a missing env
    python = venv_python(env_dir(host, root))
    if not python.exists():
        raise EnvMissingError(f"host {host!r} has no env: {python} does not exist", host=host)
    return python


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pyproject_digest(path: Path) -> str:
    """Digest of the pyproject entries that define the installed package, canonically serialised."""
    with path.open("rb") as f:
        doc = tomllib.load(f)
    project, tool = doc.get("project", {}), doc.get("tool", {})
    stamped = {
        "project": {key: project.get(key) for key in _STAMPED_PROJECT_KEYS},
        "build-system": doc.get("build-system"),
        "tool": {name: tool.get(name) for name in _STAMPED_TOOL_TABLES},
    }
    canonical = json.dumps(stamped, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def stamp_inputs(host: str, root: Path | None = None) -> dict[str, str]:
    """What a build depends on: file digests keyed by path from the root, and the env's location.

    Raises ConfigError when the host has no lock: nothing can be built or checked without it.
    """
    base = _root(root)
    project = host_dir(host, base)
    lock = project / LOCK_FILENAME
    if not lock.is_file():
        raise ConfigError(
            f"host {host!r} has no lock {lock.relative_to(base)}; create it with `nox -s lock`"
        )
    return {
        # A venv cannot move: its scripts and editable installs point at where it was built.
        ENV_LOCATION_KEY: str(env_dir(host, base).resolve()),
        lock.relative_to(base).as_posix(): _file_digest(lock),
        (project / PYPROJECT_FILENAME).relative_to(base).as_posix(): _pyproject_digest(
            project / PYPROJECT_FILENAME
        ),
        PYPROJECT_FILENAME: _pyproject_digest(base / PYPROJECT_FILENAME),
    }


def read_stamp(host: str, root: Path | None = None) -> dict[str, object] | None:
    """The stamp the last successful build wrote, or None if there is none (or it is unreadable)."""
    try:
        stamp = json.loads(stamp_path(host, root).read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def changed_inputs(stamp: Mapping[str, object] | None, current: Mapping[str, str]) -> list[str]:
    """The build inputs that differ between a stamp and the files now; all of them if no stamp."""
    built = stamp.get("inputs") if stamp and stamp.get("format") == STAMP_FORMAT else None
    if not isinstance(built, dict):
        return sorted(current)
    names = current.keys() | built.keys()
    return sorted(name for name in names if built.get(name) != current.get(name))


def check_env(host: str, root: Path | None = None) -> Path:
    """Return the host's interpreter if its env was built from the current lock and pyprojects.

    Raises EnvMissingError when the env does not exist, EnvStaleError when it exists but has no
    stamp (its build did not finish) or was built from other inputs; both name the fix.
    """
    python = host_python(host, root)
    current = stamp_inputs(host, root)
    stamp = read_stamp(host, root)
    if stamp is None:
        raise EnvStaleError(
            f"host {host!r}: env {env_dir(host, root)} has no build stamp (its build did not "
            "finish)",
            host=host,
        )
    changed = changed_inputs(stamp, current)
    if changed:
        raise EnvStaleError(
            f"host {host!r}: env was built from other inputs; changed since: {', '.join(changed)}",
            host=host,
        )
    return python


def host_env_vars(root: Path | None = None) -> dict[str, str]:
    """Environment variables every process running inside a host env should get.

    librosa (used by both stacks) compiles numba functions with ``cache=True``; numba writes that
    cache next to the package in site-packages unless told otherwise, which fails on read-only
    installs and races between host replicas. Give it a cache directory of its own.
    """
    return {"NUMBA_CACHE_DIR": str(_root(root) / ".cache" / "numba")}
