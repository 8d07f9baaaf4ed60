"""Idle unload on a real engine: the legacy host (torch + qwen-asr) frees a Qwen3-ASR model.

The checkpoint is the tiny random-weight one (no weights can be downloaded here), so the memory a
load takes is mostly torch's and transformers' import, which no unload can give back; what the
model itself holds must come back, and load/unload cycles must not grow the host. The RSS is read
from the host's pid with psutil.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from orchestrator.cli.demo import build_checkpoint, speech_like
from orchestrator.coordinator.config import config_from_dict
from orchestrator.envs.checks import project_root
from support import replica, running, wait_for

pytestmark = pytest.mark.slow

IDLE_UNLOAD_S = 2.0
CYCLES = 3
#: Slack for allocator noise between cycles (one transcript's buffers).
CYCLE_SLACK_MB = 8.0
MODEL = "qwen3-asr"


def test_idle_unload_returns_the_models_memory_and_cycles_do_not_grow(tmp_path: Path) -> None:
    checkpoint = build_checkpoint(project_root(), tmp_path / "tiny-qwen3-asr")
    config = config_from_dict(
        {
            "coordinator": {"runtime_dir": str(tmp_path), "request_timeout_s": 120.0},
            "hosts": {
                "legacy_host": {
                    "env": "legacy_host",
                    "engine": "legacy_host.engine:QwenAsrEngine",
                    "models": {},
                    "on_demand_models": {MODEL: str(checkpoint)},
                    "idle_unload_s": IDLE_UNLOAD_S,
                    "ready_timeout_s": 240.0,
                    "model_options": {MODEL: {"max_tokens": 4, "language": "English"}},
                }
            },
        },
        root=project_root(),
    )
    pcm = (speech_like(2.0, 16_000) * 32767).astype(np.int16).tobytes()
    with running(config) as coord:
        client = coord.sync_client()
        pid = replica(coord, "legacy_host.0")["pid"]

        def rss_mb() -> float:
            return psutil.Process(pid).memory_info().rss / 2**20

        def unloaded() -> bool:
            return MODEL not in replica(coord, "legacy_host.0")["models"]

        loaded_rss, unloaded_rss = [], []
        for cycle in range(CYCLES):
            result = client.transcribe(pcm, sample_rate=16_000, model=MODEL, timeout=120)
            assert result.timings.load_s > 0, f"cycle {cycle}: the request did not pay the load"
            assert not unloaded()
            loaded_rss.append(rss_mb())
            wait_for(unloaded, IDLE_UNLOAD_S + 10, f"idle unload, cycle {cycle}")
            time.sleep(0.2)  # the READY that reported it went out after the engine freed it
            unloaded_rss.append(rss_mb())
            assert MODEL in replica(coord, "legacy_host.0")["on_demand"]
        print(f"RSS loaded {loaded_rss} MB, after idle unload {unloaded_rss} MB")
        # Every unload gave memory back, and a load after an unload did not grow the host.
        assert all(after < before for before, after in zip(loaded_rss, unloaded_rss))
        assert unloaded_rss[-1] <= unloaded_rss[0] + CYCLE_SLACK_MB, unloaded_rss
        assert loaded_rss[-1] <= loaded_rss[0] + CYCLE_SLACK_MB, loaded_rss
        client.close()
