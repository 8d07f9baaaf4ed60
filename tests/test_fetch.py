"""`python -m orchestrator fetch`: pre-fetching models with each env's own huggingface-hub."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = """
[hosts.mlx_host]
env = "mlx_host"
engine = "mlx_host.engine:MlxAudioEngine"
models = {{ qwen3-asr = "{local}" }}
on_demand_models = {{ whisper-base = "mlx-community/whisper-base" }}

[hosts.legacy_host]
env = "legacy_host"
engine = "legacy_host.engine:QwenAsrEngine"
models = {{ qwen3-asr = "Qwen/Qwen3-ASR-0.6B" }}
"""


def fetch(config: Path, hf_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home)}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "fetch", "--config", str(config), *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_fetch_checks_local_paths_and_reports_offline_misses_per_host(
    host_pythons: dict[str, Path], tmp_path: Path
) -> None:
    local = tmp_path / "local-model"
    local.mkdir()
    config = tmp_path / "fetch.toml"
    config.write_text(CONFIG.format(local=local))

    only_local = fetch(config, tmp_path / "hf", "--model", "qwen3-asr")
    # The MLX host's copy is a local path (present); the legacy host's is a hub id not cached.
    assert f"mlx_host: qwen3-asr: local path {local} present" in only_local.stdout
    assert "legacy_host: qwen3-asr: FAILED" in only_local.stdout
    assert "HF_HUB_OFFLINE" in only_local.stderr
    assert only_local.returncode == 1

    on_demand = fetch(config, tmp_path / "hf", "--model", "whisper-base")
    assert "mlx_host: whisper-base: fetching mlx-community/whisper-base" in on_demand.stdout
    assert "legacy_host" not in on_demand.stdout
    assert on_demand.returncode == 1

    unknown = fetch(config, tmp_path / "hf", "--model", "nope")
    assert unknown.returncode == 1 and "unknown model 'nope'" in unknown.stderr
