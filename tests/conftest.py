"""Fixtures shared by the whole suite: the real host envs, ready before any test uses them."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.envs import build as env_build
from orchestrator.envs import checks as envs


@pytest.fixture(scope="session")
def host_pythons() -> dict[str, Path]:
    """The interpreter of every host env, keyed by host name, each env current with its lock.

    Builds whatever is missing or stale through the same code as ``nox -s hosts`` (on a clean
    machine that takes minutes; pytest-timeout exempts fixtures). When the envs are current this
    only hashes a few files.
    """
    root = envs.project_root()
    for host in envs.host_names(root):
        env_build.build_host(host, root)
    return {host: envs.check_env(host, root) for host in envs.host_names(root)}
