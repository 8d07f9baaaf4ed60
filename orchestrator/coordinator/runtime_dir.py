"""Private runtime folders and connection files: where sockets live and how clients find them.

ipc sockets are files; anyone who can enter their folder can connect. So each coordinator gets a
folder only its user can enter (0700, owned by us, checked rather than trusted), and a standalone
coordinator writes a connection file (endpoint + client key, 0600) there, as jupyter_client does,
for clients in other processes to read. Keys never go into argv or the environment.

One live coordinator per connection file: a second ``serve`` on the same folder is refused with
the first one's pid, rather than given a file of its own, so ``health`` and ``Client.connect()``
keep needing no argument (two coordinators on one machine use two ``runtime_dir`` folders). The
claim is an ``flock`` held for the coordinator's lifetime: the kernel drops it when the process
dies, even by SIGKILL, so a dead coordinator never blocks the next one. Each run folder records
its owner's pid and start time; folders and connection files of owners that are gone are removed
by the next coordinator (and the connection file by the next client that finds it stale).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Any

import psutil

from orchestrator.wire.errors import ConnectionFileError, CoordinatorRunningError

CONNECTION_FILE = "coordinator.json"
#: Held (flock) by the coordinator that owns the connection file of its folder.
LOCK_FILE = "coordinator.lock"
#: Written into each run folder: who made it, so a later run can tell whether it is stale.
OWNER_FILE = "owner.json"
RUN_PREFIX, SHORT_RUN_PREFIX = "run-", "orc-"
#: ipc endpoints are Unix socket paths; longer than this the kernel refuses them.
MAX_IPC_PATH = 100
#: Process start times are compared to this precision (psutil rounds them differently per call).
START_TIME_TOLERANCE_S = 1.0
START_SERVE = "start one: python -m orchestrator serve --config FILE"


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


# ---------------------------------------------------------------------- owners (pid + start time)
def process_start_time(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch), or None if no such process runs."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except psutil.Error:
        return None


def owner_record(pid: int | None = None) -> dict[str, Any]:
    """Who we are, in a form :func:`owner_alive` can check later even if the pid is reused."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "started": process_start_time(pid)}


def owner_alive(record: Any) -> bool:
    """Whether the process of an owner record still runs (same pid, same start time)."""
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
        return False
    started = process_start_time(record["pid"])
    if started is None:
        return False
    expected = record.get("started")
    # A record without a start time (an older file) trusts the pid alone.
    return not isinstance(expected, int | float) or abs(started - expected) < START_TIME_TOLERANCE_S


# ---------------------------------------------------------------------- run folders
def run_dir(base: str | Path | None = None) -> Path:
    """A fresh private folder for one coordinator run, inside the private base folder."""
    root = private_dir(Path(base) if base else default_base())
    remove_stale_runs(root)
    run = Path(tempfile.mkdtemp(prefix=RUN_PREFIX, dir=root))
    os.chmod(run, 0o700)
    if len(str(run)) + len("/hosts.sock") > MAX_IPC_PATH:
        # Unix socket paths are short; fall back to a short private folder.
        run.rmdir()
        run = Path(tempfile.mkdtemp(prefix=SHORT_RUN_PREFIX, dir="/tmp"))
        os.chmod(run, 0o700)
    _write_private_json(run / OWNER_FILE, owner_record())
    return run


def remove_stale_runs(base: Path) -> list[Path]:
    """Remove run folders (in ``base``, and short ones in /tmp) whose owner is gone.

    Only folders that carry our owner file are touched: a folder without one is not ours to judge.
    """
    removed = []
    candidates = [*base.glob(RUN_PREFIX + "*"), *Path("/tmp").glob(SHORT_RUN_PREFIX + "*")]
    for folder in candidates:
        try:
            if folder.lstat().st_uid != os.getuid():
                continue
            record = json.loads((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not owner_alive(record):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


# ---------------------------------------------------------------------- connection files
def claim_connection_file(directory: Path) -> IO[str]:
    """Hold the folder's connection-file lock for as long as the returned handle stays open.

    Raises CoordinatorRunningError naming the running coordinator's pid if another holds it.
    """
    handle = open(directory / LOCK_FILE, "a+")  # noqa: SIM115 - held open for the run
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        holder = _read_json(directory / CONNECTION_FILE).get("pid", "unknown")
        raise CoordinatorRunningError(
            f"a coordinator (pid {holder}) already serves {directory / CONNECTION_FILE} "
            f"(fix: stop it first (kill {holder}), or give this one another "
            "coordinator.runtime_dir and pass its connection file to clients)"
        ) from None
    return handle


def write_connection_file(directory: Path, info: dict[str, Any]) -> Path:
    """Write endpoint + key readable by this user only (created 0600, never widened)."""
    path = directory / CONNECTION_FILE
    _write_private_json(path, info)
    return path


def read_connection_file(path: str | Path | None = None, *, local: bool = True) -> dict[str, Any]:
    """The connection info of a running standalone coordinator (default: the per-user folder).

    Raises ConnectionFileError, naming the file and the fix, if there is none, if the file is not
    one of ours, or (``local``) if the coordinator that wrote it is gone (the stale file is then
    removed). A copy on another machine (``local=False``, a remote client's) names a process of
    the coordinator's machine: its pid means nothing here and the file is never removed.
    """
    path = Path(path) if path else default_base() / CONNECTION_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConnectionFileError(
            f"no coordinator is running: {path} does not exist (fix: {START_SERVE}, "
            "or pass --connection-file of the one you mean)"
        ) from None
    except OSError as exc:
        raise ConnectionFileError(f"cannot read {path}: {exc.strerror} (fix: check it)") from None
    try:
        info = json.loads(text)
    except ValueError:
        info = None
    if not isinstance(info, dict) or "endpoint" not in info or "key" not in info:
        raise ConnectionFileError(
            f"{path} is not an orchestrator connection file (fix: delete it, then {START_SERVE})"
        )
    if (
        local
        and "pid" in info
        and not owner_alive({"pid": info["pid"], "started": info.get("started")})
    ):
        with contextlib.suppress(OSError):
            path.unlink()
        raise ConnectionFileError(
            f"no coordinator is running: {path} was left by pid {info['pid']}, which is gone "
            f"(removed it; fix: {START_SERVE})"
        )
    return info


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write_private_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(value, fh)
    os.replace(tmp, path)
