"""Which torch device and dtype the legacy engine loads a model onto.

Best available first (CUDA, then Apple's MPS, then CPU), each with the dtype it runs fastest
without losing accuracy: bfloat16 on CUDA cards that have it (float16 otherwise), float16 on MPS,
float32 on CPU (CPU half precision is slower, not faster). Both can be forced with the engine's
``device`` / ``dtype`` options. Called by :mod:`legacy_host.engine` after torch is imported.
"""

from __future__ import annotations

from typing import Any

from orchestrator.host.memory import release_freed_memory

DTYPE_NAMES = ("float32", "float16", "bfloat16")


def pick_device(torch: Any, requested: str | None = None) -> str:
    """The device to load onto: ``requested`` if it exists here, else the best one available."""
    if requested is None:
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {requested!r} is not a torch device ({exc})") from None
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available(),
    }
    if not available.get(device.type, False):
        raise ValueError(f"device {requested!r} is not available on this machine")
    if (
        device.type == "cuda"
        and device.index is not None
        and device.index >= torch.cuda.device_count()
    ):
        raise ValueError(
            f"device {requested!r} is not available: {torch.cuda.device_count()} CUDA device(s)"
        )
    return requested


def pick_dtype(torch: Any, device: str, requested: str | None = None) -> Any:
    """The torch dtype for ``device``: ``requested`` (a name from DTYPE_NAMES) or the default."""
    if requested is not None:
        if requested not in DTYPE_NAMES:
            raise ValueError(f"dtype {requested!r} is not one of {list(DTYPE_NAMES)}")
        return getattr(torch, requested)
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "mps":
        return torch.float16
    return torch.float32


def free_device_memory(devices: set[str]) -> None:
    """Return dropped models' memory: CPU tensors go back through malloc_trim, CUDA ones
    through torch's caching allocator (both engines of this host unload through here)."""
    release_freed_memory()
    if any(d.startswith("cuda") for d in devices):
        import torch

        torch.cuda.empty_cache()
