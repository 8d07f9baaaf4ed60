"""The HTTP face: what a request through ``POST /v1/audio/transcriptions`` costs beside the
Python client's ``transcribe`` of the same audio, in the same run, against the same coordinator.

``python -m orchestrator serve --http 127.0.0.1:0`` runs in a child with a synthetic host (no
model: the figure is the path, not the engine). The HTTP side is a blocking httpx client (what
the openai SDK is built on) uploading the 2 s clip as a WAV (multipart form, WAV decode and the
one-shot request inside the server); the baseline is ``Client.transcribe`` of the same PCM16
over the serve's ipc endpoint. Sequential requests, the two sides alternating per round so load
on the shared machine hurts both alike; p50 and p95 of the pooled samples.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench import harness
from bench.profiles import Profile
from bench.report import Figure
from bench.stats import percentile
from orchestrator.audio.wav import write_wav
from orchestrator.client import Client

GROUP = "http"
MODEL = "echo"
RATE = 16_000
CLIP_S = 2.0
#: Sequential requests per side and round: an HTTP request costs milliseconds, not microseconds.
MAX_REQUESTS = 300
WARMUP_REQUESTS = 20


def _clip() -> tuple[np.ndarray, bytes]:
    rng = np.random.default_rng(14)
    pcm = rng.integers(-8000, 8000, int(RATE * CLIP_S), dtype=np.int16)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.wav"
        write_wav(path, pcm.astype(np.float32) / 32768.0, RATE)
        return pcm, path.read_bytes()


def run(profile: Profile) -> list[Figure]:
    requests = min(profile.round_trips, MAX_REQUESTS)
    pcm, wav = _clip()
    raw = harness.raw_config({"syn": harness.synthetic_host()})
    samples: dict[str, list[float]] = {"http": [], "python": []}
    with harness.standalone(raw, "--http", "127.0.0.1:0") as (child, connection_file):
        url = next(x for x in child.lines if x.startswith("http:")).split(": ", 1)[1]
        with (
            httpx.Client(base_url=url, timeout=60) as http,
            Client.connect(connection_file) as client,
        ):

            def over_http() -> None:
                reply = http.post(
                    "/v1/audio/transcriptions",
                    data={"model": MODEL},
                    files={"file": ("clip.wav", wav, "audio/wav")},
                )
                reply.raise_for_status()

            def over_python() -> None:
                client.transcribe(pcm, sample_rate=RATE, model=MODEL)

            sides = {"http": over_http, "python": over_python}
            for call in sides.values():
                for _ in range(WARMUP_REQUESTS):
                    call()
            for _ in range(profile.rounds):
                for side, call in sides.items():
                    for _ in range(requests):
                        started = time.perf_counter()
                        call()
                        samples[side].append(time.perf_counter() - started)
    return [
        Figure(
            GROUP,
            f"transcription request p{q}, {CLIP_S:g} s WAV, HTTP face vs Python client",
            "s",
            value=percentile(samples["http"], q),
            baseline=percentile(samples["python"], q),
            baseline_label="Client.transcribe, same standalone coordinator",
            details={"requests": len(samples["http"]), "clip_s": CLIP_S},
        )
        for q in (50, 95)
    ]
