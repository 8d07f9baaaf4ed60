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

``streams N`` (when the spec names a ``stream_npy``) plays that clip as N concurrent real-time
streams through the host's own streaming code (:class:`orchestrator.host.streams.HostStreams`
with its segmenter), the engine on one worker thread, replies taken on the feeding thread as the
host runtime's main loop takes them: everything a host does with a stream except the process,
its sockets and the coordinator. It prints when each chunk carrying an utterance's end was fed
and when each final came out.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import json
import queue
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.audio.pcm import pcm16_to_float
from orchestrator.host.engine import Engine, ModelSpec, load_engine_class
from orchestrator.host.streams import HostStreams
from orchestrator.wire.contract import SegmenterSettings
from orchestrator.wire.messages import EventType
from orchestrator.wire.protocol import Kind, Message

#: EchoPanel's (and the benchmark client's) chunk: 20 ms at 16 kHz.
CHUNK_SAMPLES = 320
CHUNK_S = 0.02
#: After the last chunk, how long the streams may take to close before the run is abandoned.
STREAM_DRAIN_TIMEOUT_S = 300.0


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
            if command == "run":
                _say({"latencies_s": worker.submit(batch, int(count)).result()})
            elif command == "streams":
                pcm16 = np.load(spec["stream_npy"]).astype("<i2")
                _say(play_streams(engine, worker, model, options, pcm16, int(count)))
            else:
                break
    return 0


class _LocalHost:
    """What HostStreams needs of a host runtime, in this process: one engine thread, and replies
    handed back to the feeding loop (the runtime's main thread does the same with its pipe)."""

    def __init__(self, worker: concurrent.futures.ThreadPoolExecutor) -> None:
        self.worker = worker
        self.done: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Any]] = (
            queue.SimpleQueue()
        )
        self.finals: list[dict[str, Any]] = []
        self.closed = 0

    def send(self, msg: Message) -> None:
        kind = msg.header.get("type")
        if kind == EventType.FINAL:
            self.finals.append({"sid": msg.header["sid"], "end_s": msg.header["end_s"],
                                "at": time.monotonic()})  # fmt: skip
        elif kind == EventType.CLOSED:
            self.closed += 1

    def check_model(self, model: str) -> None:
        """The model was loaded before the run."""

    def ensure_model(self, model: str) -> None:
        """The model was loaded before the run."""

    def submit(self, job_id: str, work: Callable[[], Any], reply: Any) -> None:
        future = self.worker.submit(work)
        future.add_done_callback(lambda f: self.done.put((f, reply)))

    def take_replies(self, until: float) -> None:
        """Run finished decodes' replies until the monotonic time ``until``."""
        while True:
            try:
                future, reply = self.done.get(timeout=max(0.0, until - time.monotonic()))
            except queue.Empty:
                return
            error = future.exception()
            reply(None if error else future.result(), error)


def play_streams(
    engine: Engine,
    worker: concurrent.futures.ThreadPoolExecutor,
    model: str,
    options: dict[str, Any],
    pcm16: np.ndarray,
    count: int,
) -> dict[str, Any]:
    """``count`` real-time streams of ``pcm16`` at once; when each chunk went in, each final out."""
    host = _LocalHost(worker)
    streams = HostStreams(host, engine, SegmenterSettings())
    sids = [f"s{i}" for i in range(count)]
    for sid in sids:
        streams.open(sid, {"model": model, "options": options, "sample_rate": 16_000})
    fed_at: list[float] = []
    start = time.monotonic()
    for seq, first in enumerate(range(0, pcm16.size, CHUNK_SAMPLES)):
        host.take_replies(until=start + seq * CHUNK_S)
        payload = pcm16[first : first + CHUNK_SAMPLES].tobytes()
        fed_at.append(time.monotonic())
        for sid in sids:
            streams.audio(streams.streams[sid], Message(Kind.STREAM_AUDIO, {"seq": seq}, [payload]))
    for sid in sids:
        streams.close(streams.streams[sid])
    deadline = time.monotonic() + STREAM_DRAIN_TIMEOUT_S
    while host.closed < count and time.monotonic() < deadline:
        host.take_replies(until=time.monotonic() + CHUNK_S)
    return {"chunk_fed_at": fed_at, "finals": host.finals, "closed": host.closed}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
