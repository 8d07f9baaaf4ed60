"""Isolation probe: run by a host env's own interpreter to report what that env really holds.

:mod:`orchestrator.envs.build` runs this file as a script (``envs/<host>/bin/python
env_probe.py '<spec json>'``) after building the env. It imports the host's stack, so a broken
env fails here with the import's traceback, then prints one JSON object on stdout: Python
version, distribution versions, a few named facts (such as ``torch.version.cuda``) and the env's
size on disk. Run as a file rather than ``-m`` so that it works in any venv, whatever is
installed there.

Standard library only, and no import of the orchestrator package: this probes the env, it must
not depend on it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import os
import platform
import sys
from functools import reduce

BYTES_PER_BLOCK = 512
"""``st_blocks`` unit on Linux and macOS."""


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _fact(dotted: str) -> object:
    """Resolve ``module.attr.attr`` against the already imported modules, calling it if callable."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is not None:
            value = reduce(getattr, parts[cut:], module)
            value = value() if callable(value) else value  # e.g. mlx.core.default_device
            return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
    raise LookupError(f"fact {dotted!r} names no imported module")


def _disk_usage_bytes(top: str) -> int:
    """Bytes allocated under ``top``, each inode counted once and symlinks not followed (du -s)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * BYTES_PER_BLOCK
    return total


def probe(spec: dict[str, object]) -> dict[str, object]:
    """Import ``spec["imports"]``; report ``spec["packages"]`` versions and ``spec["facts"]``."""
    # Libraries print banners on import; keep stdout for the one JSON line.
    with contextlib.redirect_stdout(sys.stderr):
        for module in spec.get("imports", []):
            importlib.import_module(module)
        facts = {label: _fact(path) for label, path in dict(spec.get("facts", {})).items()}
    return {
        "python": platform.python_version(),
        "prefix": sys.prefix,
        "versions": {name: _version(name) for name in spec.get("packages", [])},
        "facts": facts,
        "size_bytes": _disk_usage_bytes(sys.prefix),
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    print(json.dumps(probe(spec)))


if __name__ == "__main__":
    main()
