"""The in-process baseline of the isolation figures: one engine called directly, no host around it.

Run with a host env's own interpreter (``envs/<host>/bin/python bench/inprocess.py SPEC.json``),
so the stack, its versions and its threads are exactly those the host process has. It imports
the engine class by entry point, imports the stack's heavy modules (timed apart, because both
engines import their stack lazily inside ``load``), loads the model with its warm-up (as the host
does before READY) and prints one JSON line with those times. Then, for every ``run N`` line on
stdin, it transcribes the benchmark's clip N times in a row and prints the latencies; it exits at
end of input. The benchmark alternates these runs with runs through the host, so both sides see
the same machine.

The clip is decoded exactly as the host runtime decodes a request (PCM16 / 32768), so both sides
feed the model identical samples, and transcripts run on one worker thread, as the host runtime
runs them: the comparison is about the process boundary, not about threads. Standard library,
numpy and orchestrator only.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from orchestrator.audio.pcm import pcm16_to_float
from orchestrator.host.engine import ModelSpec, load_engine_class


def _say(doc: dict[str, object]) -> None:
    print(json.dumps(doc), flush=True)


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    pcm = np.load(spec["audio_npy"])
    samples = pcm16_to_float(pcm.astype("<i2").tobytes())
    model, options = spec["model"], spec["options"]
    t0 = time.perf_counter()
    engine = load_engine_class(spec["engine"])(spec.get("engine_options") or {})
    import_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    for name in spec.get("stack_modules", ()):
        importlib.import_module(name)
    stack_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    engine.load(ModelSpec(model, spec["ref"], spec.get("model_options") or {}))
    engine.warmup(model)
    load_s = time.perf_counter() - t2
    _say(
        {
            "import_s": import_s,
            "stack_import_s": stack_s,
            "load_s": load_s,
            "versions": engine.versions(),
        }
    )

    def batch(n: int) -> list[float]:
        latencies = []
        for _ in range(n):
            t = time.perf_counter()
            engine.transcribe(model, samples, options)
            latencies.append(time.perf_counter() - t)
        return latencies

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as worker:
        for line in sys.stdin:
            command, _, count = line.strip().partition(" ")
            if command != "run":
                break
            _say({"latencies_s": worker.submit(batch, int(count)).result()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
