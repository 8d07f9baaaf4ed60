"""The host's share of the routing rows, driven directly: where its CPU per request goes.

The routing rows charge the host process everything it does for a request. Here the real
:class:`~orchestrator.host.runtime.HostRuntime` (synthetic engine) runs in this process on a real
ipc socket: a batch of TRANSCRIBE messages is queued on its socket before it starts, and the CPU
time of this thread in its ``drain_socket`` calls is divided by the requests answered (ZeroMQ's
I/O threads are not counted). The signed floor's worker (``bench.signed.SignedWorker``) is driven
the same way as the baseline: it checks and answers each request as the protocol obliges and
neither decodes the audio nor runs an engine. Three variants of ours say what each part costs:

- as in the routing rows: the synthetic engine fingerprints the audio;
- the engine's answer computed once and returned for every request (the fingerprint's cost);
- that, and the audio taken as it is instead of decoded from PCM16 to float32 (the decode's).

What is left in the last is the runtime's own work: parsing and checking the request, the
model's hold, the job and its timed answer, and the protocol the floor does too.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import zmq

from bench import harness
from bench.bare import wire_calls
from bench.report import Figure
from bench.signed import SignedWorker
from orchestrator.host.runtime import HostRuntime
from orchestrator.wire.bodies import TranscribeRequest
from orchestrator.wire.contract import BootDocument, ModelSpec
from orchestrator.wire.protocol import Codec, Kind, Message, new_key

GROUP = "routing"
MODEL = "echo"
#: Everything a host may take at once from one batch, so no request waits on a full queue.
HWM = 100_000
#: How long to wait for the engine to load and for each batch's answers.
WAIT_S = 30.0

#: Variants of ours: (row label, replace the engine's work, replace the audio decode).
VARIANTS = (
    ("synthetic engine", False, False),
    ("engine's answer precomputed", True, False),
    ("engine's answer precomputed, no audio decode", True, True),
)


@contextlib.contextmanager
def _socket(kind: int, endpoint: str, *, bind: bool) -> Iterator[zmq.Socket[Any]]:
    """A socket of its own context, bound or connected to ``endpoint``, closed after."""
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    (sock.bind if bind else sock.connect)(endpoint)
    try:
        yield sock
    finally:
        sock.close()
        ctx.term()


def _header(n: int) -> dict[str, Any]:
    """The header our coordinator forwards for request ``n``."""
    return {
        "id": str(n),
        "model": MODEL,
        "sample_rate": harness.SAMPLE_RATE,
        "format": "pcm16",
        "options": {},
        "timeout_s": 30.0,
    }


def _requests(codec: Codec, payload: bytes, count: int) -> list[list[bytes]]:
    """Signed TRANSCRIBE messages, as our coordinator forwards them."""
    return [codec.encode(Message(Kind.TRANSCRIBE, _header(n), [payload])) for n in range(count)]


def _cpu_per_request(
    router: zmq.Socket[Any],
    identity: bytes,
    requests: list[list[bytes]],
    handle_waiting: Callable[[], None],
    server: zmq.Socket[Any],
    reader: Codec,
) -> float:
    """Queue ``requests`` to the server, let it handle them, collect every answer (each must be
    a RESULT: a bench of error answers measures nothing); the CPU seconds of this thread inside
    ``handle_waiting`` per request."""
    for frames in requests:
        router.send_multipart([identity, *frames])
    spent = 0.0
    answered = 0
    deadline = time.monotonic() + WAIT_S
    while answered < len(requests):
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {answered} of {len(requests)} requests were answered")
        if server.poll(10):
            started = time.thread_time()
            handle_waiting()
            spent += time.thread_time() - started
        while router.poll(0):
            answer = reader.decode(router.recv_multipart()[1:])
            if answer.kind is not Kind.RESULT:
                raise RuntimeError(f"request answered with {answer.kind}: {answer.header}")
            answered += 1
    return spent / len(requests)


def _ours(folder: str, payload: bytes, count: int, rounds: int) -> dict[str, list[float]]:
    key = new_key()
    endpoint = harness.ipc_endpoint(folder, "host-alone")
    boot = BootDocument(
        key=key,
        engine="orchestrator.host.synthetic:SyntheticEngine",
        models=(ModelSpec(MODEL, MODEL),),
        warmup=False,
    )
    with _socket(zmq.ROUTER, endpoint, bind=True) as router:
        runtime = HostRuntime(boot, "syn.0", endpoint, os.getppid())
        try:
            runtime.start_loading()
            deadline = time.monotonic() + WAIT_S
            while runtime.streams is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("the synthetic engine did not load")
                time.sleep(0.01)
                runtime.calls.run_pending()
            if not router.poll(int(WAIT_S * 1000)):
                raise RuntimeError("the host never said READY")
            identity = router.recv_multipart()[0]
            engine = runtime.engine
            assert engine is not None
            transcribe, prepare_audio = engine.transcribe, runtime.prepare_audio
            samples = prepare_audio(TranscribeRequest.from_header(_header(0)), [payload])
            answer = transcribe(MODEL, samples, {})
            codec, reader = Codec(key), Codec(key)
            spent: dict[str, list[float]] = {label: [] for label, _, _ in VARIANTS}
            for _ in range(rounds):
                for label, no_engine, no_decode in VARIANTS:
                    engine.transcribe = (  # type: ignore[method-assign]
                        (lambda *_: answer) if no_engine else transcribe
                    )
                    runtime.prepare_audio = (  # type: ignore[method-assign]
                        (lambda *_: samples) if no_decode else prepare_audio
                    )
                    spent[label].append(
                        _cpu_per_request(
                            router,
                            identity,
                            _requests(codec, payload, count),
                            runtime.drain_socket,
                            runtime.sock,
                            reader,
                        )
                    )
            return spent
        finally:
            runtime.close()


def _floor(folder: str, payload: bytes, count: int, rounds: int) -> list[float]:
    key = new_key()
    endpoint = harness.ipc_endpoint(folder, "signed-alone")
    with (
        _socket(zmq.ROUTER, endpoint, bind=True) as router,
        _socket(zmq.DEALER, endpoint, bind=False) as sock,
    ):
        sock.send(b"hello")
        if not router.poll(int(WAIT_S * 1000)):
            raise RuntimeError("the signed worker's socket never connected")
        identity = router.recv_multipart()[0]
        calls = wire_calls()
        worker = SignedWorker(sock, calls, key)
        codec, reader = Codec(key), Codec(key)

        def handle_waiting() -> None:
            for frames in calls.drain(sock):
                worker(frames)

        return [
            _cpu_per_request(
                router, identity, _requests(codec, payload, count), handle_waiting, sock, reader
            )
            for _ in range(rounds)
        ]


def figures(payload: bytes, count: int, rounds: int) -> list[Figure]:
    """One row per variant of ours against the signed worker, medians over ``rounds``."""
    with harness.socket_folder() as folder:
        _ours(folder, payload, max(100, count // 10), 1)  # warm-up: imports, caches
        ours = _ours(folder, payload, count, rounds)
        floor = _floor(folder, payload, count, rounds)
    baseline = float(np.median(floor))
    return [
        Figure(
            GROUP,
            f"host runtime driven directly, CPU per request: {label}",
            "s",
            float(np.median(ours[label])),
            baseline,
            "signed floor's worker, driven the same way",
            note=(
                f"{count} requests queued at once, {rounds} rounds; CPU of the handling thread "
                "only (not ZeroMQ's I/O threads); see bench/host_alone.py"
            ),
            details={"ours_s": ours[label], "floor_s": floor},
        )
        for label, _, _ in VARIANTS
    ]
