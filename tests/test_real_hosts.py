"""Both real stacks behind one coordinator: mlx-audio (hub 1.x) and qwen-asr (hub 0.x) side by side.

The hosts run from their real envs (built by the session fixture, as `nox -s hosts` does) and load
a tiny random-weight Qwen3-ASR checkpoint through each library's real loading code.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.coordinator.config import config_from_dict
from orchestrator.envs.checks import check_env, project_root
from orchestrator.errors import ModelUnavailableError
from support import FAST_RESTART, replica, running, wait_for

pytestmark = pytest.mark.slow

MAX_TOKENS = 8
#: Both stacks import torch/transformers or MLX at start: allow for a loaded 2-core machine.
READY_TIMEOUT_S = 240.0


def speech_like(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Voiced 'syllables' (a pitch with harmonics under a syllable envelope) and short pauses:
    enough for a voice-activity detector, meaningless to a model (this one has random weights)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 140 + 25 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    syllables = np.clip(np.sin(2 * np.pi * 2.2 * t), 0, None) ** 0.6
    audio = 0.25 * voiced * syllables + 0.003 * rng.standard_normal(t.size)
    return audio.astype(np.float32)


def build_checkpoint(root: Path, out: Path) -> Path:
    """The tiny Qwen3-ASR checkpoint, built by the legacy env (idempotent, about a second)."""
    python = check_env("legacy_host", root)
    # cwd: the builder is the top-level tiny_checkpoints package of this checkout, not installed.
    subprocess.run([str(python), "-m", "tiny_checkpoints", str(out)], check=True, cwd=root)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(
    host_pythons: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return build_checkpoint(project_root(), tmp_path_factory.mktemp("ckpt") / "tiny-qwen3-asr")


def real_config(checkpoint: Path, tmp: Path, **mlx_extra: Any) -> Any:
    options = {"qwen3-asr": {"max_tokens": MAX_TOKENS, "language": "English"}}
    common = {"ready_timeout_s": READY_TIMEOUT_S, "model_options": options}
    return config_from_dict(
        {
            "coordinator": {
                "runtime_dir": str(tmp),
                "request_timeout_s": 60.0,
                "stop_grace_s": 3.0,
            },
            "restart": FAST_RESTART,
            # The streaming test's bursts are synthetic syllables, made for the energy detector.
            "segmenter": {"vad": "energy"},
            "hosts": {
                "mlx_host": {
                    "env": "mlx_host",
                    "engine": "mlx_host.engine:MlxAudioEngine",
                    "models": {"qwen3-asr": str(checkpoint)},
                    **common,
                    **mlx_extra,
                },
                "legacy_host": {
                    "env": "legacy_host",
                    "engine": "legacy_host.engine:QwenAsrEngine",
                    "models": {"qwen3-asr": str(checkpoint)},
                    **common,
                },
            },
            "models": {"qwen3-asr": {"hosts": ["mlx_host", "legacy_host"], "aliases": ["qwen3"]}},
        }
    )


def test_both_stacks_serve_the_same_audio_side_by_side(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    pcm = (speech_like(2.0, 16_000) * 32767).astype(np.int16)
    with running(real_config(tiny_checkpoint, tmp_path)) as coord:
        client = coord.sync_client()
        results = {
            host: client.transcribe(pcm.tobytes(), sample_rate=16000, model="qwen3", host=host)
            for host in ("mlx_host", "legacy_host")
        }
        for host, result in results.items():
            assert result.host == host and result.replica == f"{host}.0"
            assert isinstance(result.text, str) and result.model == "qwen3-asr"
            assert result.timings.compute_s > 0
        assert results["mlx_host"].generation_tokens == MAX_TOKENS  # a tiny vocabulary never stops

        health = coord.health()  # one snapshot: both versions at the same moment
        versions = {r["host"]: r["versions"] for r in health["replicas"]}
        assert versions["mlx_host"]["huggingface-hub"].startswith("1.")
        assert versions["mlx_host"]["transformers"] == "5.0.0rc3"
        assert versions["legacy_host"]["huggingface-hub"].startswith("0.")
        assert versions["legacy_host"]["transformers"] == "4.57.6"
        assert all(r["state"] == "ready" for r in health["replicas"])

        # Fallback: with the MLX host stopped, qwen3-asr is served by the legacy host.
        client.control("stop", "mlx_host")
        wait_for(lambda: replica(coord, "mlx_host.0")["state"] == "stopped", what="mlx stopped")
        fallback = client.transcribe(pcm.tobytes(), sample_rate=16000, model="qwen3-asr")
        assert fallback.host == "legacy_host"
        client.close()


def test_offline_hub_id_not_in_cache_is_a_typed_model_unavailable_error_within_seconds(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    hf_home = tmp_path / "empty-hf-home"  # nothing cached here, and the hub is off
    config = real_config(
        tiny_checkpoint,
        tmp_path,
        on_demand_models={"ghost": "mlx-community/Qwen3-ASR-0.6B-8bit"},
        env_vars={"HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home)},
    )
    with running(config) as coord:
        client = coord.sync_client()
        started = time.monotonic()
        with pytest.raises(ModelUnavailableError) as info:
            client.transcribe(np.zeros(16000, np.int16).tobytes(), sample_rate=16000, model="ghost")
        assert time.monotonic() - started < 10
        assert "ghost" in str(info.value) or "Qwen3-ASR-0.6B-8bit" in str(info.value)
        unavailable = wait_for(
            lambda: replica(coord, "mlx_host.0")["unavailable"], what="announced"
        )
        assert "ghost" in unavailable
        # The host stays up and keeps serving what it has.
        assert (
            client.transcribe(
                np.zeros(16000, np.int16).tobytes(), sample_rate=16000, model="qwen3-asr"
            ).text
            is not None
        )
        assert replica(coord, "mlx_host.0")["restarts"] == 0
        client.close()


def test_streaming_through_each_real_stack_gives_partials_and_a_final_per_burst(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    rate = 16_000
    burst = (speech_like(1.2, rate) * 32767).astype(np.int16)
    pause = np.zeros(int(0.6 * rate), np.int16)
    audio = np.concatenate([pause, burst, pause, burst, pause])
    with running(real_config(tiny_checkpoint, tmp_path)) as coord:
        client = coord.sync_client()
        for host in ("mlx_host", "legacy_host"):
            with client.stream(model="qwen3-asr", sample_rate=rate, host=host) as stream:
                for i in range(0, audio.size, 320):  # 20 ms chunks, as fast as they go
                    stream.send(audio[i : i + 320])
                stream.close()
                events = list(stream)
            finals = [e for e in events if e.type == "final"]
            assert events[0].type == "opened" and events[-1].type == "closed"
            assert len(finals) == 2, [(e.type, e.start_s, e.end_s) for e in events]
            assert all(e.host == host for e in events if e.type in ("partial", "final"))
            assert any(e.type == "partial" for e in events)
            first, second = finals
            assert 0.5 <= first.start_s <= 0.7 and 1.7 <= first.end_s <= 1.9
            assert 2.3 <= second.start_s <= 2.5 and first.utterance < second.utterance
            assert not [e for e in events if e.type == "error"]
        client.close()
