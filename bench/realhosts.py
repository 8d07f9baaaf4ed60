"""Real hosts: cold start and isolation cost of the tiny Qwen3-ASR model in each stack's env.

For each real host (``mlx_host``, ``legacy_host``) whose env is built and whose engine exists:

1. the in-process baseline starts (``bench/inprocess.py`` under the env's own interpreter): the
   same engine class, the same model, no host runtime, no sockets; its start-up is timed alone;
2. a coordinator with only that host starts; its cold start is timed alone (the in-process
   baseline sits idle on stdin meanwhile);
3. the same 16 kHz PCM16 clip is transcribed, in alternating rounds, in process and through the
   host (client -> coordinator -> host -> back): sequentially for latency, and through the host
   also with two requests in flight, which keeps its engine busy back to back like the
   in-process loop, for throughput.

The tiny random-weight checkpoint is built with the shipped builder
(``envs/legacy_host/bin/python -m tiny_checkpoints DIR``); the model never emits an
end-of-sequence token, so every transcript is capped at ``TOKEN_CAP`` tokens on both sides.
Anything missing (env not built or stale, engine not written yet, builder absent) turns the
rows into "skipped" with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import harness, loops
from bench.profiles import Profile
from bench.report import Figure, Target, skipped
from bench.stats import percentile, summary
from orchestrator.coordinator import Coordinator
from orchestrator.envs import checks as envs
from orchestrator.errors import ConfigError, EnvError

ISOLATION, COLD = "isolation", "cold start"
ENGINES = {
    "mlx_host": "mlx_host.engine:MlxAudioEngine",
    "legacy_host": "legacy_host.engine:QwenAsrEngine",
}
#: The heavy modules each engine imports inside ``load``; the in-process baseline times them apart.
STACK_MODULES = {
    "mlx_host": ["mlx.core", "mlx_audio.stt.utils"],
    "legacy_host": ["torch", "qwen_asr"],
}
MODEL = "qwen3-asr"
TOKEN_CAP = 16
#: Requests in flight through the host for the throughput figure (the host runs one at a time).
THROUGHPUT_WINDOW = 2
#: Transcripts before measuring, on each side: the first few of a fresh torch model run several
#: times slower than the steady state (allocator and kernel warm-up).
WARMUP_REQUESTS = 5
#: Importing torch + transformers takes 10-30 s on a busy 2-core machine; loading adds more.
REAL_READY_TIMEOUT_S = 600.0
CHECKPOINT_TIMEOUT_S = 120.0
THROUGHPUT_TARGET = Target("ratio", ">=", 0.98)
#: Offline, quiet, numba's cache out of site-packages: what the engine tests use.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
RUNTIME_IMPORTS = "import numpy, zmq, orchestrator.host"
#: Env settings measured as a variant in --full: torch's OpenMP worker spins beside the engine
#: thread in the host (not in a plain process, where torch happens to stay on one thread for this
#: model), which on a busy 2-core machine slows the model several times; a passive wait fixes it.
HOST_ENV_VARIANTS = {"legacy_host": {"OMP_WAIT_POLICY": "PASSIVE"}}


def run(profile: Profile) -> list[Figure]:
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="orc-bench-real-") as tmp:
        folder = Path(tmp)
        checkpoint, why = _build_checkpoint(folder)
        clip = _write_clip(folder, profile.isolation_audio_s)
        alone: dict[str, float] = {}
        for host in ENGINES:
            reason = why or unavailable(host)
            if reason:
                figures += _skipped_rows(host, reason)
                continue
            assert checkpoint is not None
            python = envs.host_python(host, harness.REPO_ROOT)
            rows = _one_host(host, python, checkpoint, clip, folder, profile)
            alone[host] = float(rows[0].value or 0.0)
            figures += rows
            if profile.host_env_variants and host in HOST_ENV_VARIANTS:
                variant = HOST_ENV_VARIANTS[host]
                rows = _one_host(host, python, checkpoint, clip, folder, profile, variant)
                figures += [f for f in rows if f.group == ISOLATION]
        if profile.real_hosts_together:
            if len(alone) == len(ENGINES) and checkpoint is not None:
                figures.append(_together(checkpoint, alone))
            else:
                figures.append(
                    skipped(
                        COLD,
                        "all real hosts at once: start -> every host ready",
                        "s",
                        "not every real host is available",
                    )
                )
    return figures


# ---------------------------------------------------------------------------- availability
def unavailable(host: str, engine: str | None = None) -> str:
    """Why this host (with ``engine``, by default its Qwen3-ASR engine) cannot be measured here,
    or "" if it can."""
    try:
        envs.check_env(host, harness.REPO_ROOT)
    except (EnvError, ConfigError) as exc:
        return f"env: {exc}"
    engine = engine or ENGINES[host]
    module, _, cls = engine.partition(":")
    source = harness.REPO_ROOT / "hosts" / host / Path(*module.split(".")).with_suffix(".py")
    if not source.is_file() or f"class {cls}" not in source.read_text():
        return f"engine {engine} not written yet"
    return ""


def _build_checkpoint(folder: Path) -> tuple[Path | None, str]:
    builder = harness.REPO_ROOT / "tiny_checkpoints" / "__main__.py"
    if not builder.is_file():
        return None, "checkpoint builder tiny_checkpoints is missing"
    try:
        python = envs.check_env("legacy_host", harness.REPO_ROOT)
    except (EnvError, ConfigError) as exc:
        return None, f"the checkpoint builder runs in envs/legacy_host: {exc}"
    out = folder / "qwen3-asr-tiny"
    done = subprocess.run(
        [str(python), "-m", "tiny_checkpoints", str(out)],
        cwd=harness.REPO_ROOT,  # the builder package sits at the checkout's top level
        capture_output=True,
        text=True,
        timeout=CHECKPOINT_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        return None, f"tiny checkpoint build failed: {done.stderr.strip()[-300:]}"
    return out, ""


def _write_clip(folder: Path, seconds: float) -> Path:
    """Seeded noise at speech level: the tiny model's text is gibberish whatever it hears."""
    rng = np.random.default_rng(7)
    pcm = np.clip(rng.standard_normal(int(seconds * harness.SAMPLE_RATE)) * 3000, -32768, 32767)
    path = folder / "clip.npy"
    np.save(path, pcm.astype(np.int16))
    return path


def _skipped_rows(host: str, reason: str) -> list[Figure]:
    return [
        skipped(COLD, f"{host}: spawn -> ready", "s", reason),
        skipped(ISOLATION, f"{host}: transcript latency p50", "s", reason),
        skipped(ISOLATION, f"{host}: throughput", "req/s", reason, THROUGHPUT_TARGET),
    ]


# ---------------------------------------------------------------------------- one host
class InProcess:
    """The in-process baseline child: started, then asked for rounds of transcripts."""

    def __init__(self, python: Path, spec: Path, extra_env: dict[str, str]) -> None:
        self._started = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(python), str(Path(__file__).with_name("inprocess.py")), str(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=harness.child_env(
                {**OFFLINE_ENV, **envs.host_env_vars(harness.REPO_ROOT), **extra_env}
            ),
        )
        self.loaded: dict[str, Any] = {}
        self.start_to_loaded_s = 0.0

    def wait_loaded(self) -> InProcess:
        if not self.loaded:
            self.loaded = self._reply()
            self.start_to_loaded_s = time.perf_counter() - self._started
        return self

    def _reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"in-process baseline exited with {self.proc.wait()}")
        return dict(json.loads(line))

    def run(self, n: int) -> list[float]:
        """Latencies of ``n`` transcripts of the spec's clip in a row."""
        self._command(f"run {n}")
        return list(self._reply()["latencies_s"])

    def streams(self, n: int) -> dict[str, Any]:
        """``n`` real-time streams of the spec's ``stream_npy`` at once (see bench/inprocess.py):
        when each chunk went in and each final came out."""
        self._command(f"streams {n}")
        return self._reply()

    def _command(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _host_table(
    host: str, checkpoint: Path, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "env": host,
        "engine": ENGINES[host],
        "models": {MODEL: str(checkpoint)},
        "ready_timeout_s": REAL_READY_TIMEOUT_S,
        "env_vars": {**OFFLINE_ENV, **(extra_env or {})},
    }


def _one_host(
    host: str,
    python: Path,
    checkpoint: Path,
    clip: Path,
    folder: Path,
    profile: Profile,
    extra_env: dict[str, str] | None = None,
) -> list[Figure]:
    """Cold start and isolation rows of one host; ``extra_env`` goes to both sides alike."""
    extra_env = extra_env or {}
    label = host + "".join(f" [{k}={v}]" for k, v in extra_env.items())
    options = {"max_tokens": TOKEN_CAP}
    spec = folder / f"{host}.json"
    spec.write_text(
        json.dumps(
            {
                "engine": ENGINES[host],
                "model": MODEL,
                "ref": str(checkpoint),
                "options": options,
                "audio_npy": str(clip),
                "stack_modules": STACK_MODULES[host],
            }
        )
    )
    runtime_s = harness.python_start_s(python, RUNTIME_IMPORTS)
    pcm = np.load(clip)
    inproc = InProcess(python, spec, extra_env)
    if profile.real_start_alone:
        inproc.wait_loaded()
    try:
        raw = harness.raw_config({host: _host_table(host, checkpoint, extra_env)})
        cfg = harness.config(raw)
        started = time.monotonic()
        with harness.embedded(cfg) as coord:
            cold = harness.startup_split(coord)[f"{host}.0"]
            start_s = cold["ready_at"] - started
            inproc.wait_loaded()
            ours_lat, ours_compute, ours_rate, base_lat, base_rate = isolation_rounds(
                coord,
                inproc,
                pcm,
                options,
                rounds=profile.rounds,
                requests=profile.isolation_requests,
            )
            versions = coord.health()["replicas"][0]["versions"]
    finally:
        inproc.close()
    base_total = inproc.start_to_loaded_s
    loaded = inproc.loaded
    note = (
        f"in process: interpreter {runtime_s:.2f}s, stack import {loaded['stack_import_s']:.2f}s, "
        f"model load + warm-up {loaded['load_s']:.2f}s; the engines import their stacks inside "
        "load(), so the host's READY timings cannot split stack import from model load"
    )
    added = percentile(ours_lat, 50) - percentile(base_lat, 50)
    # Per request: round trip minus the engine call as the host timed it = what isolation adds
    # around the model (client, coordinator, two ipc hops, host runtime), whatever the model does.
    transport = [total - compute for total, compute in zip(ours_lat, ours_compute)]
    return [
        Figure(
            COLD, f"{label}: spawn -> ready", "s", value=cold["total_s"], baseline=base_total,
            baseline_label="in-process script start -> model loaded"
            + ("" if profile.real_start_alone else ", started side by side"),
            details={"coordinator_start_s": start_s, "versions": versions, **cold},
        ),
        Figure(
            COLD, f"{label}:   spawn + host runtime", "s", value=cold["spawn_s"], baseline=runtime_s,
            baseline_label="bare env python: " + RUNTIME_IMPORTS,
            note="spawn + runtime = (spawn -> ready) - READY's import_s - load_s: interpreter start, "
            "runtime imports (numpy, pyzmq), boot document, connect, READY message",
        ),
        Figure(
            COLD, f"{label}:   stack import + model load + warm-up", "s",
            value=cold["import_s"] + cold["load_s"],
            baseline=loaded["import_s"] + loaded["stack_import_s"] + loaded["load_s"],
            baseline_label="same, in process", note=note,
        ),
        Figure(
            ISOLATION, f"{label}: transcript latency p50 ({profile.isolation_audio_s:.0f}s clip)", "s",
            value=percentile(ours_lat, 50), baseline=percentile(base_lat, 50),
            baseline_label="engine called in process",
            note=f"p50 difference {added * 1e3:+.1f} ms; around the model the isolation path adds "
            f"{percentile(transport, 50) * 1e3:.1f} ms per transcript (p50 of round trip minus the "
            f"host-timed engine call), and the engine call itself took "
            f"{percentile(ours_compute, 50) * 1e3:.1f} ms in the host against "
            f"{percentile(base_lat, 50) * 1e3:.1f} ms in process",
            details={
                "ours": summary(ours_lat),
                "ours_compute_in_host": summary(ours_compute),
                "baseline": summary(base_lat),
                "added_s": added,
                "transport": summary(transport),
            },
        ),
        Figure(
            ISOLATION, f"{label}: throughput ({THROUGHPUT_WINDOW} in flight vs back to back)", "req/s",
            value=float(np.median(ours_rate)), baseline=float(np.median(base_rate)),
            baseline_label="engine called in process", target=THROUGHPUT_TARGET,
            details={"ours_rounds": ours_rate, "baseline_rounds": base_rate},
        ),
    ]  # fmt: skip


def isolation_rounds(
    coord: Coordinator,
    inproc: InProcess,
    pcm: np.ndarray,
    options: dict[str, Any],
    *,
    rounds: int,
    requests: int,
    model: str = MODEL,
    warmup: int = WARMUP_REQUESTS,
) -> tuple[list[float], list[float], list[float], list[float], list[float]]:
    """Alternating rounds of ``requests`` transcripts in process and through the host: latencies
    (ours, ours' engine call, in process) and throughputs (ours pipelined, in process)."""
    n = max(1, requests // rounds)
    client = coord.sync_client()

    computes: list[float] = []

    def round_trip() -> object:
        result = client.transcribe(pcm, sample_rate=harness.SAMPLE_RATE, model=model, **options)
        computes.append(result.timings.compute_s)  # the engine call alone, timed in the host
        return result

    ours_lat: list[float] = []
    ours_compute: list[float] = []
    base_lat: list[float] = []
    ours_rate: list[float] = []
    base_rate: list[float] = []
    if warmup:
        inproc.run(warmup)
    for _ in range(rounds):
        batch = inproc.run(n)
        base_lat += batch
        base_rate.append(len(batch) / sum(batch))
        ours_lat += loops.sync_round_trips(round_trip, n, warmup)
        ours_compute += computes[-n:]
        ours_rate.append(asyncio.run(_pipelined_rate(coord, pcm, options, n, model)))
    return ours_lat, ours_compute, ours_rate, base_lat, base_rate


async def _pipelined_rate(
    coord: Coordinator, pcm: np.ndarray, options: dict[str, Any], n: int, model: str
) -> float:
    client = coord.client(timeout_s=REAL_READY_TIMEOUT_S)

    async def request() -> object:
        return await client.transcribe(pcm, sample_rate=harness.SAMPLE_RATE, model=model, **options)

    result = await loops.pipelined(request, n, THROUGHPUT_WINDOW, 0)
    await client.aclose()
    return result.rate_per_s


def _together(checkpoint: Path, alone: dict[str, float]) -> Figure:
    """The whole real config at once: both stacks import and load side by side."""
    raw = harness.raw_config({h: _host_table(h, checkpoint) for h in ENGINES})
    started = time.monotonic()
    with harness.embedded(harness.config(raw)) as coord:
        split = harness.startup_split(coord)
    total = max(s["ready_at"] for s in split.values()) - started
    return Figure(
        COLD,
        "all real hosts at once: start -> every host ready",
        "s",
        value=total,
        baseline=max(alone.values()),
        baseline_label="slowest host started alone, this run",
        details={"replicas": split, "alone_s": alone},
    )
