"""Private runtime folders and connection files: where sockets live and how clients find them.

ipc sockets are files; anyone who can enter their folder can connect. So each coordinator gets a
folder only its user can enter (0700, owned by us, checked rather than trusted), and a standalone
coordinator writes a connection file (endpoint + client key, 0600) there, as jupyter_client does,
for clients in other processes to read. Keys never go into argv or the environment.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

CONNECTION_FILE = "coordinator.json"
#: ipc endpoints are Unix socket paths; longer than this the kernel refuses them.
MAX_IPC_PATH = 100


def default_base() -> Path:
    """$XDG_RUNTIME_DIR/orchestrator, else <tmp>/orchestrator-<uid>."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and Path(xdg).is_dir():
        return Path(xdg) / "orchestrator"
    return Path(tempfile.gettempdir()) / f"orchestrator-{os.getuid()}"


def private_dir(path: Path) -> Path:
    """Create ``path`` (0700) or check an existing one is ours and closed to others."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(f"{path} is not a folder owned by this user; refusing to use it")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def run_dir(base: str | Path | None = None) -> Path:
    """A fresh private folder for one coordinator run, inside the private base folder."""
    root = private_dir(Path(base) if base else default_base())
    run = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    os.chmod(run, 0o700)
    if len(str(run)) + len("/hosts.sock") > MAX_IPC_PATH:
        # Unix socket paths are short; fall back to a short private folder.
        run = Path(tempfile.mkdtemp(prefix="orc-", dir="/tmp"))
        os.chmod(run, 0o700)
    return run


def write_connection_file(directory: Path, info: dict[str, Any]) -> Path:
    """Write endpoint + key readable by this user only (created 0600, never widened)."""
    path = directory / CONNECTION_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(info, fh)
    os.replace(tmp, path)
    return path


def read_connection_file(path: str | Path | None = None) -> dict[str, Any]:
    """The connection info of a standalone coordinator (default: the per-user base folder)."""
    path = Path(path) if path else default_base() / CONNECTION_FILE
    info = json.loads(Path(path).read_text())
    if not isinstance(info, dict) or "endpoint" not in info or "key" not in info:
        raise ValueError(f"{path} is not an orchestrator connection file")
    return info
