"""Giving freed memory back to the system, for engines that unload models.

Dropping the last reference to a model frees its tensors into the C allocator, but glibc's malloc
keeps freed blocks in its arenas (one per thread that allocated) rather than returning them: the
host's RSS would not fall, and "unloaded" would be a bookkeeping fiction. ``malloc_trim(0)``
asks glibc to return every free page it can. Standard library only (host side).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import sys

log = logging.getLogger("orchestrator.host")


def release_freed_memory() -> bool:
    """Collect garbage (reference cycles that hold tensors), then trim malloc's arenas.

    Returns True if the allocator was trimmed (glibc on Linux); elsewhere only the collection
    runs (macOS's allocator returns large blocks by itself).
    """
    gc.collect()
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # musl and other libcs have no malloc_trim
        log.debug("malloc_trim unavailable")
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True
