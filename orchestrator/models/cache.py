"""The per-user model cache: where prepared models live, built once, atomically, under a lock.

Each entry is a folder holding a stamp (``.orchestrator-stamp.json``): what it was built from and
by which converter, and the size of every file it holds. An entry whose stamp matches what is
wanted is reused after a size check (milliseconds); one with another stamp is stale and rebuilt;
one whose files no longer match its own stamp is damaged and refused with the fix, rather than
silently rebuilt, because something outside the orchestrator changed it. Builds go into a
temporary sibling folder that is renamed into place only when complete, under an exclusive file
lock, so concurrent coordinators (or test workers) build an entry once and never see half of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from orchestrator.wire.errors import ModelUnavailableError

#: Overrides the cache location (tests, shared machines, read-only homes).
MODELS_DIR_ENV = "ORCHESTRATOR_MODELS_DIR"
STAMP_NAME = ".orchestrator-stamp.json"
#: How long to wait for another process building the same entry (a wheel download at worst).
LOCK_TIMEOUT_S = 900.0
LOCK_POLL_INTERVAL_S = 0.1


def models_dir() -> Path:
    """``$ORCHESTRATOR_MODELS_DIR``, else ``$XDG_CACHE_HOME/orchestrator/models``, else ``~/.cache/...``."""
    override = os.environ.get(MODELS_DIR_ENV)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "orchestrator" / "models"


def read_stamp(entry: Path) -> dict | None:
    try:
        return json.loads((entry / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def check_files(entry: Path, stamp: Mapping) -> None:
    """Every file the stamp lists is there with its size; else ModelUnavailableError with the fix."""
    for name, size in dict(stamp.get("files", {})).items():
        path = entry / name
        try:
            actual = path.stat().st_size
        except OSError:
            actual = None
        if actual != size:
            found = "is missing" if actual is None else f"has {actual} bytes, its stamp says {size}"
            raise ModelUnavailableError(
                f"{path}: {found}: the cached model is damaged (fix: delete {entry}; it is "
                "rebuilt at the next start or by `python -m orchestrator fetch`)",
                file=str(path),
            )


def _file_sizes(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != STAMP_NAME
    }


@contextlib.contextmanager
def exclusive(entry: Path) -> Iterator[None]:
    """Hold the entry's build lock, waiting at most LOCK_TIMEOUT_S for another builder."""
    lock_dir = entry.parent / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    lock_path = lock_dir / f"{entry.name}.lock"
    with lock_path.open("w") as handle:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ModelUnavailableError(
                        f"{lock_path}: another process has been preparing {entry.name} for more "
                        f"than {LOCK_TIMEOUT_S:.0f} s (fix: stop it, or delete {entry} and retry)",
                        file=str(lock_path),
                    ) from None
                time.sleep(LOCK_POLL_INTERVAL_S)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_entry(
    entry: Path, wanted: Mapping[str, object], build: Callable[[Path], None]
) -> tuple[Path, bool]:
    """The folder ``entry``, built by ``build(tmp_folder)`` unless its stamp already matches.

    ``wanted`` is what the stamp must say besides the file list (source hash, converter version,
    ...). Returns the folder and whether it was built now.
    """
    stamp = read_stamp(entry)
    if stamp is not None and _matches(stamp, wanted):
        check_files(entry, stamp)
        return entry, False
    with exclusive(entry):
        stamp = read_stamp(entry)  # another process may have built it while we waited
        if stamp is not None and _matches(stamp, wanted):
            check_files(entry, stamp)
            return entry, False
        staging = entry.with_name(f".{entry.name}.building-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            build(staging)
            stamp = {**wanted, "files": _file_sizes(staging)}
            (staging / STAMP_NAME).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
            shutil.rmtree(entry, ignore_errors=True)
            staging.rename(entry)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return entry, True


def _matches(stamp: Mapping, wanted: Mapping[str, object]) -> bool:
    return all(stamp.get(key) == value for key, value in wanted.items())
