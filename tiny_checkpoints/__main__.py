"""Build tiny random-weight checkpoints in the hub repos' file layouts, for tests and the demo.

No machine of this project reaches the model hub, so the engine tests and the demo load these
through the real public APIs of both stacks. Their text is gibberish; every file and code path
around them is the real one. Run::

    envs/legacy_host/bin/python -m tiny_checkpoints OUT_DIR                  # Qwen3-ASR
    envs/legacy_host/bin/python -m tiny_checkpoints --model whisper OUT_DIR  # MLX Whisper

The Qwen3-ASR checkpoint (:mod:`tiny_checkpoints.qwen3_asr`) loads in both qwen-asr and
mlx-audio; the Whisper one (:mod:`tiny_checkpoints.whisper`) in mlx-audio. Name a Whisper
directory so mlx-audio's type detection keeps working: the directory name's dash-separated parts
are matched against model types, so ``...-parakeet-...`` would load it as Parakeet.

A build needs only numpy, safetensors and tokenizers (no torch), takes well under a second, and
writes the same bytes for the same seed. A directory that already holds a complete build of the
same recipe is left alone, so callers can run this unconditionally.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from tiny_checkpoints import qwen3_asr, whisper
from tiny_checkpoints.files import write_json

logger = logging.getLogger(__name__)

#: Each recipe module has NAME, describe(seed) -> dict and write(target, seed).
RECIPES: dict[str, ModuleType] = {recipe.NAME: recipe for recipe in (qwen3_asr, whisper)}
DEFAULT_MODEL = qwen3_asr.NAME
DEFAULT_SEED = 0
#: Written last: its presence (with the matching recipe) is what "complete" means.
MANIFEST_NAME = "tiny_checkpoint.json"


def _read_manifest(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_complete(out_dir: Path, model: str = DEFAULT_MODEL, seed: int = DEFAULT_SEED) -> bool:
    """True if ``out_dir`` holds a whole build of this recipe (every file present, sizes right)."""
    manifest = _read_manifest(out_dir)
    expected = json.loads(json.dumps(RECIPES[model].describe(seed)))  # tuples read back as lists
    if manifest is None or manifest.get("recipe") != expected:
        return False
    files = manifest.get("files", {})
    return bool(files) and all(
        (out_dir / name).is_file() and (out_dir / name).stat().st_size == size
        for name, size in files.items()
    )


def build(out_dir: Path | str, model: str = DEFAULT_MODEL, seed: int = DEFAULT_SEED) -> Path:
    """Build ``model``'s checkpoint into ``out_dir`` unless a complete build of it is there.

    The files are written into a sibling temporary directory and moved into place at the end, so
    an interrupted build never leaves a directory that looks complete. A non-empty ``out_dir``
    that is not one of our builds is refused rather than overwritten.
    """
    recipe = RECIPES[model]
    out_dir = Path(out_dir).expanduser().resolve()
    if is_complete(out_dir, model, seed):
        logger.info("already built: %s", out_dir)
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()) and _read_manifest(out_dir) is None:
        raise FileExistsError(f"{out_dir} exists, is not empty and is not a tiny checkpoint build")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the model from other users
        recipe.write(staging, seed)
        files = {p.name: p.stat().st_size for p in sorted(staging.iterdir())}
        write_json(staging / MANIFEST_NAME, {"recipe": recipe.describe(seed), "files": files})
        if out_dir.exists():
            shutil.rmtree(out_dir)  # a stale or partial build of ours (checked above)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if is_complete(out_dir, model, seed):  # a concurrent builder won the race: fine
            return out_dir
        raise
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tiny_checkpoints",
        description="Build a tiny random-weight checkpoint in a real hub layout: Qwen3-ASR "
        "(transformers layout, loads in qwen-asr and mlx-audio) or Whisper (mlx-audio layout).",
    )
    parser.add_argument(
        "out_dir", type=Path, help="directory to create (left alone if already built)"
    )
    parser.add_argument(
        "--model", choices=sorted(RECIPES), default=DEFAULT_MODEL, help="which architecture"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed of the weights")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="tiny_checkpoint: %(message)s", stream=sys.stdout
    )
    started = time.perf_counter()
    try:
        out_dir = build(args.out_dir, args.model, args.seed)
    except FileExistsError as exc:
        print(f"tiny_checkpoint: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"tiny_checkpoint: {args.model} ready in {time.perf_counter() - started:.2f} s: {out_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
