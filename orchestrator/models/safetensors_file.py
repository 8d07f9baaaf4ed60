"""Writes a safetensors file with numpy alone: the format is a JSON header and raw bytes.

Layout (https://huggingface.co/docs/safetensors): a little-endian u64 header size, a JSON header
mapping each tensor name to its dtype, shape and ``[begin, end)`` byte offsets into the data that
follows (plus an optional ``__metadata__`` of strings), padded with spaces to a multiple of 8 so
the data stays aligned, then the tensors' C-ordered bytes back to back. The coordinator writes the
converted checkpoints itself so that it needs neither torch nor the ``safetensors`` package.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

#: numpy dtype -> safetensors dtype tag, for the dtypes converted checkpoints hold.
_DTYPE_TAGS = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16"}
_HEADER_ALIGNMENT = 8


def write_safetensors(
    path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``tensors`` (float32 or float16) to ``path`` in name order, flushed to disk."""
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    arrays = []
    offset = 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        tag = _DTYPE_TAGS.get(array.dtype.newbyteorder("<"))
        if tag is None:
            raise TypeError(
                f"tensor {name!r} has dtype {array.dtype}; only float32/float16 are written"
            )
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        header[name] = {
            "dtype": tag,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        arrays.append(array)
        offset += array.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % _HEADER_ALIGNMENT)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for array in arrays:
            handle.write(memoryview(array).cast("B"))
        handle.flush()
        os.fsync(handle.fileno())
