"""The embedded default main job: both stacks transcribing the same audio, offline.

``nox -s demo`` builds the host envs, then runs ``python -m orchestrator.cli.demo``, which:

1. builds a tiny random-weight Qwen3-ASR checkpoint in the hub repo's layout (with the legacy
   env's interpreter, ``tiny_checkpoints``), since no machine here reaches the hub;
2. writes a speech-like WAV at 44.1 kHz (so the hosts' resampling is on the path too);
3. writes a config that serves ``qwen3-asr`` from that checkpoint on the MLX host first and the
   legacy host second, and runs ``python -m orchestrator transcribe --all-hosts`` with it.

The transcripts are gibberish (random weights); the hosts, envs, sockets, resampling and model
code are the real ones, and the health table shows huggingface-hub 1.x and 0.x serving side by
side. Everything lands in ``.cache/demo/`` under the project root.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from orchestrator.audio.wav import write_wav
from orchestrator.envs import checks as envs

DEMO_SAMPLE_RATE = 44_100
#: A random-weight vocabulary never produces an end token: every request must be capped.
DEMO_MAX_TOKENS = 24

_CONFIG = """\
# Written by orchestrator.cli.demo: both stacks serve the same tiny local checkpoint.
[coordinator]
request_timeout_s = 120.0

[hosts.mlx_host]
env = "mlx_host"
engine = "mlx_host.engine:MlxAudioEngine"
ready_timeout_s = 300.0
models = {{ qwen3-asr = "{checkpoint}" }}
model_options = {{ qwen3-asr = {{ max_tokens = {max_tokens}, language = "English" }} }}

[hosts.legacy_host]
env = "legacy_host"
engine = "legacy_host.engine:QwenAsrEngine"
ready_timeout_s = 300.0
env_vars = {{ OMP_WAIT_POLICY = "PASSIVE" }}
models = {{ qwen3-asr = "{checkpoint}" }}
model_options = {{ qwen3-asr = {{ max_tokens = {max_tokens}, language = "English" }} }}

[models.qwen3-asr]
hosts = ["mlx_host", "legacy_host"]
aliases = ["qwen3"]
"""


def speech_like(seconds: float = 3.0, rate: int = DEMO_SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """Voiced 'syllables' (a pitch with harmonics under a syllable envelope) and short pauses."""
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
    python = envs.check_env("legacy_host", root)
    # cwd: the builder is the top-level tiny_checkpoints package of this checkout, not installed.
    subprocess.run([str(python), "-m", "tiny_checkpoints", str(out)], check=True, cwd=root)
    return out


def prepare(root: Path, work: Path) -> tuple[Path, Path]:
    """Checkpoint, WAV and config for the demo; returns (config, wav)."""
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = build_checkpoint(root, work / "tiny-qwen3-asr")
    wav = work / "speech-like-44k.wav"
    write_wav(wav, speech_like(), DEMO_SAMPLE_RATE)
    config = work / "demo.toml"
    config.write_text(_CONFIG.format(checkpoint=checkpoint, max_tokens=DEMO_MAX_TOKENS))
    return config, wav


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.cli.demo", description=__doc__)
    parser.add_argument("--root", type=Path, default=envs.project_root())
    args = parser.parse_args(argv)
    root = args.root.resolve()
    config, wav = prepare(root, root / ".cache" / "demo")
    print(f"demo: checkpoint, {wav.name} and {config.name} ready in {config.parent}", flush=True)
    # Offline on purpose: the demo must never reach for the hub, here or on a laptop.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ORCHESTRATOR_ROOT": str(root)}
    command = [
        sys.executable, "-m", "orchestrator", "transcribe", str(wav),
        "--config", str(config), "--model", "qwen3-asr", "--all-hosts",
    ]  # fmt: skip
    return subprocess.run(command, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
