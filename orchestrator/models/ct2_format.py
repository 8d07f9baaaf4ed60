"""A reader of CTranslate2's ``model.bin``: named tensors, scalars and aliases, nothing else.

The format is documented by CTranslate2's own writer (``ModelSpec._serialize`` in
``ctranslate2/specs/model_spec.py``) and its C++ loader. Little-endian throughout:

    u32 binary version | string spec name | u32 spec revision | u32 variable count
    per variable: string name | u8 rank | u32 x rank dims | u8 dtype id | u32 byte count | bytes
    u32 alias count | per alias: string alias | string target name

where a string is a u16 length (counting a trailing NUL) then the UTF-8 bytes and the NUL, and
dtype ids follow CTranslate2's ``DataType`` enum: float32, int8, int16, int32, float16, bfloat16.

Only what a converter to another runtime can use is accepted: float tensors. Quantized models
(int8/int16 weight matrices with ``weight_scale`` tensors) are refused, because recovering float
weights from them would hand the other runtimes a different, lossy model. Standard library and
numpy only: the coordinator and nox's bare interpreter run it.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np

from orchestrator.wire.errors import ModelUnavailableError

#: The binary version this reader understands: the one ctranslate2 4.x writes.
SUPPORTED_BINARY_VERSION = 6

#: CTranslate2's DataType enum order (include/ctranslate2/types.h).
_DTYPES: tuple[tuple[str, np.dtype], ...] = (
    ("float32", np.dtype("<f4")),
    ("int8", np.dtype("i1")),
    ("int16", np.dtype("<i2")),
    ("int32", np.dtype("<i4")),
    ("float16", np.dtype("<f2")),
    ("bfloat16", np.dtype("<u2")),  # raw bits; widened to float32 by _as_float
)
_FLOAT_DTYPES = frozenset({"float32", "float16", "bfloat16"})


@dataclasses.dataclass(frozen=True)
class Ct2Model:
    """The contents of one ``model.bin``."""

    path: Path
    spec: str
    revision: int
    #: Float tensors by name (float32 or float16, as stored; bfloat16 widened to float32).
    tensors: dict[str, np.ndarray]
    #: Rank-0 integer or flag values by name (``num_heads``, ``activation``, ``pre_norm``, ...).
    scalars: dict[str, int | float]
    #: Alias -> the variable it names (e.g. a decoder projection sharing the embeddings).
    aliases: dict[str, str]

    def tensor(self, name: str) -> np.ndarray:
        """A tensor by name, following an alias; a missing one is a clear refusal."""
        target = self.aliases.get(name, name)
        try:
            return self.tensors[target]
        except KeyError:
            raise unavailable(self.path, f"has no variable {name!r}", REBUILD_FIX) from None


#: The fix for a model.bin that cannot be read: its source (a wheel or a folder) is damaged.
REBUILD_FIX = (
    "delete the file's folder so that it is fetched again, or point the ref at a good copy"
)


def unavailable(path: Path, problem: str, fix: str) -> ModelUnavailableError:
    """The one-line refusal every converter step raises: the file, what is wrong, the fix."""
    return ModelUnavailableError(f"{path}: {problem} (fix: {fix})", file=str(path))


class _Cursor:
    """Reads little-endian values from a bytes buffer, refusing to run past its end."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = memoryview(data)
        self.offset = 0
        self.path = path

    def take(self, size: int, what: str) -> memoryview:
        end = self.offset + size
        if end > len(self.data):
            raise unavailable(
                self.path,
                f"truncated or corrupt CTranslate2 model: {what} runs past the end of the file "
                f"at byte {self.offset} of {len(self.data)}",
                REBUILD_FIX,
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def unpack(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))[0]

    def string(self, what: str) -> str:
        length = self.unpack("H", f"the length of {what}")
        raw = bytes(self.take(length, what))
        if not raw.endswith(b"\0"):
            raise unavailable(
                self.path, f"corrupt CTranslate2 model: {what} is not NUL-terminated", REBUILD_FIX
            )
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise unavailable(
                self.path, f"corrupt CTranslate2 model: {what} is not UTF-8", REBUILD_FIX
            ) from None


def read_model_bin(path: Path) -> Ct2Model:
    """Parse ``path``; raises ModelUnavailableError naming the file for anything unsupported."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise unavailable(
            path, f"cannot read the CTranslate2 model: {exc.strerror}", REBUILD_FIX
        ) from None
    cursor = _Cursor(data, path)
    version = cursor.unpack("I", "the binary version")
    if version != SUPPORTED_BINARY_VERSION:
        raise unavailable(
            path,
            f"CTranslate2 binary version {version} is not supported (this reader reads version "
            f"{SUPPORTED_BINARY_VERSION}, written by ctranslate2 >= 3)",
            "re-convert the model with a current ctranslate2 (ct2-transformers-converter)",
        )
    spec = cursor.string("the spec name")
    revision = cursor.unpack("I", "the spec revision")
    tensors: dict[str, np.ndarray] = {}
    scalars: dict[str, int | float] = {}
    for index in range(cursor.unpack("I", "the variable count")):
        name = cursor.string(f"the name of variable {index}")
        rank = cursor.unpack("B", f"the rank of {name}")
        shape = tuple(cursor.unpack("I", f"a dimension of {name}") for _ in range(rank))
        type_id = cursor.unpack("B", f"the dtype of {name}")
        if type_id >= len(_DTYPES):
            raise unavailable(
                path,
                f"corrupt CTranslate2 model: {name} has unknown dtype id {type_id}",
                REBUILD_FIX,
            )
        dtype_name, dtype = _DTYPES[type_id]
        size = cursor.unpack("I", f"the byte count of {name}")
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if size != expected:
            raise unavailable(
                path,
                f"corrupt CTranslate2 model: {name} of shape {shape} ({dtype_name}) holds {size} "
                f"bytes, expected {expected}",
                REBUILD_FIX,
            )
        value = np.frombuffer(cursor.take(size, f"the data of {name}"), dtype=dtype).reshape(shape)
        if rank == 0:
            scalars[name] = (
                _as_float(value, dtype_name).item() if dtype_name in _FLOAT_DTYPES else int(value)
            )
        elif dtype_name in _FLOAT_DTYPES:
            tensors[name] = _as_float(value, dtype_name)
        else:
            raise unavailable(
                path,
                f"quantized CTranslate2 model ({name} is {dtype_name}): the converter needs float "
                "weights (float32, float16 or bfloat16)",
                "use a float model (ct2-transformers-converter --quantization float16), not an int8 one",
            )
    aliases: dict[str, str] = {}
    for index in range(cursor.unpack("I", "the alias count")):
        alias = cursor.string(f"alias {index}")
        aliases[alias] = cursor.string(f"the target of alias {alias!r}")
    if cursor.offset != len(data):
        raise unavailable(
            path,
            f"corrupt CTranslate2 model: {len(data) - cursor.offset} unexpected bytes after the aliases",
            REBUILD_FIX,
        )
    for alias, target in aliases.items():
        if target not in tensors and target not in scalars:
            raise unavailable(
                path,
                f"corrupt CTranslate2 model: alias {alias!r} names missing {target!r}",
                REBUILD_FIX,
            )
    return Ct2Model(path, spec, revision, tensors, scalars, aliases)


def _as_float(value: np.ndarray, dtype_name: str) -> np.ndarray:
    if dtype_name == "bfloat16":  # the top half of a float32
        return (value.astype(np.uint32) << 16).view(np.float32)
    return value
