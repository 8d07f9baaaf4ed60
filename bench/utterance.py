"""Streaming latency: end of an utterance to its final event, and the partial cadence achieved.

For 1 and 16 concurrent streams (synthetic engine, embedded coordinator), each stream sends
speech-like bursts (1.2 s of noise, then 0.8 s of silence) in 20 ms chunks at real-time pace.

* end-of-utterance -> final: from sending the burst's last speech chunk to the final event of
  that utterance arriving at the client;
* partial cadence: the median gap between consecutive partial events of one utterance.

Baseline, measured in the same run: the same audio pushed at the same pace through the same
:class:`orchestrator.host.segmenter.StreamSegmenter` in this process, with the synthetic engine called
inline. It has no sockets, no processes, no coordinator: what is left is the segmenter's own
hangover (``end_silence_ms``) and cadence (``partial_interval_ms``), the floor any streaming
design with this detector has. The ratio is what the orchestrator adds on top.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from typing import Any

import numpy as np

from bench.profiles import Profile
from bench.report import Figure
from orchestrator.coordinator import Coordinator
from orchestrator.coordinator.config import config_from_dict
from orchestrator.host.segmenter import (
    DecodeFinal,
    DecodePartial,
    SegmenterSettings,
    StreamSegmenter,
)
from orchestrator.host.synthetic import SyntheticEngine

GROUP = "streaming"
RATE = 16_000
CHUNK = RATE // 50  # 20 ms
BURST_S, PAUSE_S = 1.2, 0.8
STREAM_COUNTS = (1, 16)
#: The bursts are noise, not speech: both sides use the energy detector (the vad group measures
#: the model VAD on real speech).
SEGMENTER = SegmenterSettings(vad="energy")


def _audio(bursts: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """PCM16 with ``bursts`` noise bursts; returns it and each burst's last-sample index."""
    rng = np.random.default_rng(seed)
    parts, ends, pos = [], [], 0
    for _ in range(bursts):
        burst = rng.normal(0, 6000, int(BURST_S * RATE)).clip(-32768, 32767).astype(np.int16)
        pause = np.zeros(int(PAUSE_S * RATE), np.int16)
        parts += [burst, pause]
        pos += burst.size
        ends.append(pos)
        pos += pause.size
    return np.concatenate(parts), ends


def _chunk_index_of(sample: int) -> int:
    return (sample - 1) // CHUNK


async def _one_stream(client: Any, audio: np.ndarray, ends: list[int]) -> dict[str, list[float]]:
    burst_end_chunk = {_chunk_index_of(e): i for i, e in enumerate(ends)}
    sent_at: dict[int, float] = {}
    finals: list[float] = []
    gaps: list[float] = []
    async with client.stream(model="echo", sample_rate=RATE) as stream:

        async def feed() -> None:
            start = time.monotonic()
            for k, i in enumerate(range(0, audio.size, CHUNK)):
                await asyncio.sleep(max(0.0, start + k * 0.02 - time.monotonic()))
                await stream.send(audio[i : i + CHUNK])
                if k in burst_end_chunk:
                    sent_at[burst_end_chunk[k]] = time.monotonic()
            await stream.close()

        feeder = asyncio.ensure_future(feed())
        last_partial: dict[int, float] = {}
        utterance = 0
        async for event in stream:
            now = time.monotonic()
            if event.type == "partial" and event.utterance is not None:
                if event.utterance in last_partial:
                    gaps.append(now - last_partial[event.utterance])
                last_partial[event.utterance] = now
            elif event.type == "final":
                if utterance in sent_at:
                    finals.append(now - sent_at[utterance])
                utterance += 1
        await feeder
    return {"finals": finals, "gaps": gaps}


def _through_orchestrator(streams: int, bursts: int) -> dict[str, list[float]]:
    config = config_from_dict(
        {
            "coordinator": {"runtime_dir": tempfile.mkdtemp(prefix="orc-bench-", dir="/tmp")},
            "segmenter": {"vad": SEGMENTER.vad},
            "hosts": {
                "syn": {
                    "python": "current",
                    "engine": "orchestrator.host.synthetic:SyntheticEngine",
                    "models": {"echo": "synthetic"},
                    "max_streams": 64,
                }
            },
        }
    )
    with Coordinator(config) as coord:

        async def main() -> dict[str, list[float]]:
            client = coord.client()
            outs = await asyncio.gather(
                *(_one_stream(client, *_audio(bursts, seed)) for seed in range(streams))
            )
            await client.aclose()
            return {k: [x for o in outs for x in o[k]] for k in ("finals", "gaps")}

        return asyncio.run(main())


def _in_process(bursts: int) -> dict[str, list[float]]:
    """Same audio, same pace, the segmenter and engine inline: the floor of the design."""
    audio, ends = _audio(bursts, seed=0)
    seg, engine = StreamSegmenter(SEGMENTER), SyntheticEngine()
    from orchestrator.host.engine import ModelSpec

    engine.load(ModelSpec("echo", "synthetic"))
    burst_end_chunk = {_chunk_index_of(e): i for i, e in enumerate(ends)}
    sent_at: dict[int, float] = {}
    finals, gaps, last_partial = [], [], {}
    start = time.monotonic()
    for k, i in enumerate(range(0, audio.size, CHUNK)):
        time.sleep(max(0.0, start + k * 0.02 - time.monotonic()))
        chunk = audio[i : i + CHUNK].astype(np.float32) / 32768.0
        if k in burst_end_chunk:
            sent_at[burst_end_chunk[k]] = time.monotonic()
        for action in seg.push(chunk):
            engine.transcribe("echo", action.audio, {})
            now = time.monotonic()
            if isinstance(action, DecodeFinal) and action.utterance_id in sent_at:
                finals.append(now - sent_at[action.utterance_id])
            elif isinstance(action, DecodePartial):
                if action.utterance_id in last_partial:
                    gaps.append(now - last_partial[action.utterance_id])
                last_partial[action.utterance_id] = now
    return {"finals": finals, "gaps": gaps}


def _p(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def run(profile: Profile) -> list[Figure]:
    bursts = 3 if profile.name == "quick" else 8
    base = _in_process(bursts)
    base_final = _p(base["finals"], 50)
    base_gap = statistics.median(base["gaps"]) if base["gaps"] else None
    figures = []
    for n in STREAM_COUNTS:
        ours = _through_orchestrator(n, bursts)
        label = "segmenter + engine in-process, same audio and pace"
        figures.append(
            Figure(
                GROUP, f"end of utterance -> final, p50, {n} stream(s)", "s",
                value=_p(ours["finals"], 50), baseline=base_final, baseline_label=label,
                details={"p99_s": _p(ours["finals"], 99), "finals": len(ours["finals"])},
            )
        )  # fmt: skip
        figures.append(
            Figure(
                GROUP, f"partial cadence (median gap), {n} stream(s)", "s",
                value=statistics.median(ours["gaps"]) if ours["gaps"] else None,
                baseline=base_gap, baseline_label=label,
                details={"partials": len(ours["gaps"]) + len(ours["finals"])},
            )
        )  # fmt: skip
    return figures
