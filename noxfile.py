"""Developer commands. The logic lives in ``orchestrator.envs.build``; this file only wires it to nox.

nox -s hosts                    build every host env (no-op when current), print the isolation
nox -s hosts -- mlx_host        build one; add --force to rebuild, --probe to re-import now
nox -s lock                     regenerate hosts/*/requirements.lock (-- --upgrade to upgrade)
nox -s lock -- ct2_host         regenerate one host's lock only
nox -s tests                    build the host envs, then run pytest (-- <pytest args>)
nox -s lint                     ruff check + ruff format --check
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent

# The env tools are standard library only and the package's __init__ imports lazily, so nox's own
# interpreter can import them straight from the checkout: a machine needs only nox and uv.
sys.path.insert(0, str(ROOT))

from orchestrator.envs import build as env_build  # noqa: E402
from orchestrator.envs import checks as envs  # noqa: E402
from orchestrator.errors import ConfigError, EnvError  # noqa: E402

nox.options.sessions = ["lint", "tests"]
nox.options.default_venv_backend = "uv"

_FLAGS = ("--force", "--probe")


def _build_hosts(session: nox.Session, args: list[str]) -> None:
    """Build the hosts named in ``args`` (all if none), then print the isolation table."""
    unknown_flags = [a for a in args if a.startswith("-") and a not in _FLAGS]
    if unknown_flags:
        session.error(f"unknown option(s) {unknown_flags}; known: {', '.join(_FLAGS)}")
    names = [a for a in args if not a.startswith("-")] or envs.host_names(ROOT)
    try:
        reports = [
            env_build.build_host(name, ROOT, force="--force" in args, progress=session.log)
            for name in names
        ]
        if "--probe" in args:
            reports = [
                dataclasses.replace(
                    r, isolation=env_build.probe_host(r.host, ROOT, progress=session.log)
                )
                for r in reports
            ]
    except (ConfigError, EnvError) as exc:
        session.error(str(exc))
    probed = "now" if "--probe" in args else "by each env's interpreter at its build"
    print(f"\nIsolation (imported and measured {probed}):\n")
    print(env_build.format_isolation_table(reports) + "\n")


@nox.session(venv_backend="none")
def hosts(session: nox.Session) -> None:
    """Build envs/<host>/ from each host's lock and print the isolation table."""
    _build_hosts(session, list(session.posargs))


@nox.session(reuse_venv=True)
def demo(session: nox.Session) -> None:
    """The main job, offline: build the envs, then real speech through every stack, with WER."""
    session.install("-e", ".")
    _build_hosts(session, [])
    session.run("python", "-m", "orchestrator.cli.demo")


@nox.session(venv_backend="none")
def lock(session: nox.Session) -> None:
    """Regenerate the universal lock of the hosts named (every host if none); other args go to
    `uv pip compile`. Naming the host keeps a new host's lock from re-resolving the others'."""
    known = envs.host_names(ROOT)
    names = [a for a in session.posargs if a in known] or known
    extra = [a for a in session.posargs if a not in known]
    try:
        for name in names:
            env_build.lock_host(name, ROOT, extra_args=extra, progress=session.log)
    except (ConfigError, EnvError) as exc:
        session.error(str(exc))


@nox.session(reuse_venv=True)
def tests(session: nox.Session) -> None:
    """Build (or verify) every host env first, since the tests run inside them; then pytest."""
    session.install("-e", ".[dev]")
    _build_hosts(session, [])
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(reuse_venv=True)
def lint(session: nox.Session) -> None:
    """The style gate: ruff's lint rules and formatting, configured in pyproject.toml."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(reuse_venv=True)
def bench(session: nox.Session) -> None:
    """Benchmarks, each figure beside a baseline from the same run: table + JSON in bench-results/.

    nox -s bench                quick profile (about two minutes)
    nox -s bench -- --full      the long one; also --out FILE, --only GROUP ...
    Real-host rows need the host envs (`nox -s hosts`); without them they are skipped, not failed.
    """
    session.install("-e", ".[vad,http]", "httpx")  # the http group drives the HTTP face
    session.run("python", "-m", "bench", *session.posargs)
