"""Shared helpers for tests that run a real coordinator with synthetic hosts.

Synthetic hosts run under the interpreter running the tests ("python = current"), with the real
host runtime, real subprocesses and real ZeroMQ sockets; only the model is fake.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import zmq

from orchestrator.coordinator import Coordinator
from orchestrator.coordinator.config import Config, config_from_dict
from orchestrator.host.engine import Word
from orchestrator.host.runtime import HostRuntime
from orchestrator.host.synthetic import fingerprint, parse_fingerprint
from orchestrator.longform.source import open_audio, pcm16_blocks
from orchestrator.speech.wer import normalize
from orchestrator.wire.contract import ENGINE_SAMPLE_RATE, BootDocument, ModelSpec
from orchestrator.wire.protocol import Codec, new_key

SYNTHETIC = "orchestrator.host.synthetic:SyntheticEngine"
#: Fast failure detection so fault tests take seconds, not minutes.
FAST_COORDINATOR = {
    "heartbeat_interval_s": 0.1,
    "heartbeat_liveness": 10,
    "host_orphan_timeout_s": 2.0,
    "stop_grace_s": 1.0,
    "term_grace_s": 1.0,
    "stuck_request_grace_s": 1.0,
}
FAST_RESTART = {
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.5,
    "max_restarts": 5,
    "restart_window_s": 30.0,
}


def synthetic_host(models: dict[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    host: dict[str, Any] = {
        "python": "current",
        "engine": SYNTHETIC,
        "models": models or {"echo": "synthetic"},
        "ready_timeout_s": 30.0,
    }
    host.update(overrides)
    return host


def make_config(
    hosts: dict[str, dict[str, Any]] | None = None,
    models: dict[str, Any] | None = None,
    remote: dict[str, Any] | None = None,
    **coordinator: Any,
) -> Config:
    runtime = tempfile.mkdtemp(prefix="orc-test-", dir="/tmp")
    raw: dict[str, Any] = {
        "coordinator": {**FAST_COORDINATOR, "runtime_dir": runtime, **coordinator},
        "restart": dict(FAST_RESTART),
        "hosts": copy.deepcopy(hosts or {"syn": synthetic_host()}),
        # The tests' streams are tones and noise bursts, not speech: the energy detector hears
        # them, the default model VAD rightly does not (tests/test_vad.py streams real speech).
        "segmenter": {"vad": "energy"},
    }
    if models:
        raw["models"] = models
    if remote:
        raw["remote"] = remote
    return config_from_dict(raw, root=os.getcwd())


@contextlib.contextmanager
def running(config: Config, **kwargs: Any) -> Iterator[Coordinator]:
    """A started coordinator that is always closed, and whose hosts are checked gone after."""
    coord = Coordinator(config, **kwargs)
    coord.start()
    pids: set[int] = set()
    try:
        yield coord
    finally:
        with contextlib.suppress(Exception):
            pids = {r["pid"] for r in coord.health()["replicas"] if r["pid"]}
        coord.close()
        assert_gone(pids)


def assert_gone(pids: set[int], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if _alive(p)}
        time.sleep(0.05)
    assert not alive, f"host processes still alive: {alive}"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for(predicate: Callable[[], Any], timeout_s: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def replica(coord: Coordinator, name: str) -> dict[str, Any]:
    return next(r for r in coord.health()["replicas"] if r["name"] == name)


def tone_pcm16(n: int, seed: int) -> np.ndarray:
    """Distinct, reproducible PCM16 audio per request (so mixed-up replies are caught)."""
    rng = np.random.default_rng(seed)
    return rng.integers(-20000, 20000, size=n, dtype=np.int16)


def expected_text_fields(pcm: np.ndarray) -> dict[str, float]:
    fp = fingerprint(pcm)
    return {k: float(v) for k, v in fp.items()}


def assert_fingerprint(text: str, pcm: np.ndarray) -> None:
    got = parse_fingerprint(text)
    want = expected_text_fields(pcm)
    assert got["n"] == want["n"] and got["sum"] == want["sum"], (got, want)
    assert got["first"] == want["first"] and got["last"] == want["last"], (got, want)
    assert abs(got["sq"] - want["sq"]) <= 1e-6 * max(1.0, want["sq"]), (got, want)


def check_word_times(words: Sequence[Any], text: str, start_s: float, end_s: float) -> None:
    """Timed words (anything with ``word``, ``start``, ``end``: ours or the openai SDK's) on
    real speech: the transcript's words, in order, with non-decreasing times inside
    ``[start_s, end_s]`` (the clip, or a final's audio)."""
    assert words, f"no words for {text!r}"
    assert [normalize(w.word) for w in words] == [[w] for w in normalize(text)], (words, text)
    assert all(start_s - 1e-3 <= w.start <= w.end <= end_s + 1e-3 for w in words), words
    assert all(a.end <= b.start + 1e-6 for a, b in itertools.pairwise(words)), words


def check_timed_words(words: tuple[Word, ...], text: str, start_s: float, end_s: float) -> None:
    """The Word contract on real speech: :func:`check_word_times`, and every word's
    probability in [0, 1]."""
    check_word_times(words, text, start_s, end_s)
    assert all(w.probability is not None and 0 <= w.probability <= 1 for w in words)


def assert_exact_cover(transcript: Any, path: Path) -> None:
    """The fingerprints of the pieces add up to the converted file: nothing lost or twice."""
    with open_audio(path) as audio:
        whole = np.concatenate(list(pcm16_blocks(audio)))
    fps = [parse_fingerprint(s.text) for s in transcript.segments]
    assert sum(fp["n"] for fp in fps) == whole.size
    assert sum(fp["sum"] for fp in fps) == int(whole.astype(np.int64).sum())
    starts = [s.start for s in transcript.segments]
    assert starts == sorted(starts) and starts[0] == 0.0
    offset = 0
    for seg, fp in zip(transcript.segments, fps):  # in order: each piece's first sample is the next
        assert seg.start == pytest.approx(offset / ENGINE_SAMPLE_RATE, abs=1e-3)
        assert fp["first"] == whole[offset]
        offset += int(fp["n"])


@contextlib.contextmanager
def host_on_router(
    folder: Path, **boot: Any
) -> Iterator[tuple[HostRuntime, zmq.Socket[Any], Codec]]:
    """A real host runtime in this process (synthetic engine, model ``echo``; ``boot`` overrides
    its boot document) dialled to a bare ROUTER standing in for the coordinator, and the codec
    that signs for it. Nothing runs until the test starts the runtime."""
    key = new_key()
    document = BootDocument(
        key=key,
        engine=SYNTHETIC,
        models=(ModelSpec("echo", "echo"),),
        **{"warmup": False, **boot},
    )
    endpoint = f"ipc://{folder}/host.sock"
    ctx: zmq.Context[Any] = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    runtime = HostRuntime(document, "syn.0", endpoint, os.getppid())
    try:
        yield runtime, router, Codec(key)
    finally:
        runtime.close()
        router.close()
        ctx.term()
