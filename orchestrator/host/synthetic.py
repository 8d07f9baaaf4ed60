"""The synthetic engine: no ML, output derived from the audio, faults on demand.

It serves the orchestrator's own tests and benchmarks. Its text is a fingerprint of the audio it
received, so a test can prove that audio arrived intact, complete and in order::

    "n=32000 sum=-1234 sq=5.67e+08 first=12 last=-3"

``n`` is the number of samples, ``sum`` the sum of their PCM16 values, ``sq`` the sum of squares,
``first``/``last`` the first and last sample values. Adding ``n`` and ``sum`` over a stream's
finals must give the totals of what the client sent: nothing lost, nothing twice.

Faults, from engine options (the host's whole life) or per request through the ``context``
option (``"hang"``, ``"crash"``, ``"delay=0.2"``, ``"leak=50"``, comma separated):
``delay_s`` sleeps per call, ``weights_mb`` (engine or model option) holds that much memory
per loaded model until it is unloaded, ``crash_on_start`` exits during load, ``crash_after_requests``
and ``hang_after_requests`` fail the N-th request, ``leak_mb_per_request`` grows memory.

``answer_once`` (engine option) fingerprints each model's first request only and gives every
later one that same answer without reading its audio: a model that costs nothing, for the routing
benchmark's like-for-like rows (the bare and signed baselines' workers answer without reading
the audio either), so what the host's runtime costs shows apart from what its model costs.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from orchestrator.host.engine import (
    ENGINE_SAMPLE_RATE,
    Engine,
    EngineResult,
    ModelSpec,
    Segment,
    Word,
    require_model,
)
from orchestrator.wire.errors import ModelUnavailableError

CRASH_EXIT_CODE = 70
#: Engine options that make requests sleep, hang, crash or leak.
_FAULT_OPTIONS = (
    "delay_s",
    "crash_after_requests",
    "hang_after_requests",
    "leak_mb_per_request",
)


def fingerprint(pcm16: np.ndarray) -> dict[str, int | float]:
    """The numbers the synthetic text is made of; tests compute the same on what they sent."""
    # float64 holds every sum of int16 values exactly up to 2**53 (hours of audio); the dot
    # product is one pass, where an int64 square-then-sum is two.
    # np.add.reduce: ndarray.sum's Python wrapper costs as much as the sum of a chunk.
    values = np.asarray(pcm16, dtype=np.float64)
    n = values.size
    return {
        "n": n,
        "sum": int(np.add.reduce(values)),
        "sq": float(values @ values),
        "first": int(values[0]) if n else 0,
        "last": int(values[-1]) if n else 0,
    }


#: Words in a fingerprint's text (its generation tokens): n, sum, sq, first, last.
_FINGERPRINT_WORDS = 5


def format_fingerprint(fp: Mapping[str, int | float]) -> str:
    return f"n={fp['n']} sum={fp['sum']} sq={fp['sq']:.6e} first={fp['first']} last={fp['last']}"


def parse_fingerprint(text: str) -> dict[str, float]:
    """Inverse of ``format_fingerprint`` (tests read results back with it)."""
    return {k: float(v) for k, v in (part.split("=", 1) for part in text.split())}


class SyntheticEngine(Engine):
    """An engine whose 'transcript' is a fingerprint of its input audio."""

    name = "synthetic"
    supported_options = frozenset(
        {"language", "context", "max_tokens", "temperature", "word_timestamps"}
    )
    reported_packages = ("numpy", "pyzmq")
    #: Fingerprinting takes microseconds; a request that may sleep or hang goes to the pool.
    inline = True

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self._models: dict[str, ModelSpec] = {}
        #: Requests so far (``next`` on it is one C call: atomic across the pool's threads).
        self._request_numbers = itertools.count(1)
        self._leaked: list[bytearray] = []
        #: Stand-in weights per model (``weights_mb``): memory that loading takes, unloading frees.
        self._weights: dict[str, bytearray] = {}
        self._faulty = any(self.options.get(name) for name in _FAULT_OPTIONS)
        #: With ``answer_once``: each model's first answer, given to every later request.
        self._answers: dict[str, EngineResult] | None = (
            {} if self.options.get("answer_once") else None
        )

    def _inject_faults(self, faults: Mapping[str, Any], count: int) -> None:
        """Crash, hang, leak or sleep as the request's ``context`` or the engine options say."""
        if faults.get("crash") or count == self.options.get("crash_after_requests"):
            os._exit(CRASH_EXIT_CODE)
        if faults.get("hang") or count == self.options.get("hang_after_requests"):
            threading.Event().wait()  # forever: the supervisor must notice and recycle us
        leak_mb = float(faults.get("leak", self.options.get("leak_mb_per_request", 0.0)))
        if leak_mb:
            self._leaked.append(_touched_block(leak_mb))
        delay = float(faults.get("delay", self.options.get("delay_s", 0.0)))
        if delay:
            time.sleep(delay)

    def runs_inline(self, options: Mapping[str, Any]) -> bool:
        # Faults (engine-wide, or per request in ``context``) may sleep or hang: the pool's
        # threads take those, so the host keeps heartbeating as it would around a real model.
        return not self._faulty and not options.get("context")

    def load(self, spec: ModelSpec) -> None:
        if self.options.get("crash_on_start"):
            os._exit(CRASH_EXIT_CODE)
        if spec.ref.startswith("missing:"):
            raise ModelUnavailableError(
                f"model {spec.name!r} ({spec.ref}): no such synthetic model", model=spec.name
            )
        time.sleep(float(self.options.get("load_delay_s", 0.0)))
        weights_mb = float(spec.options.get("weights_mb", self.options.get("weights_mb", 0.0)))
        if weights_mb:
            self._weights[spec.name] = _touched_block(weights_mb)
        self._models[spec.name] = spec

    def unload(self, model: str) -> None:
        require_model(self._models, model)
        del self._models[model]
        self._weights.pop(model, None)

    def warmup(self, model: str) -> None:
        # Warm-up must not count towards crash_after_requests / hang_after_requests.
        require_model(self._models, model)

    def transcribe(self, model: str, audio: np.ndarray, options: Mapping[str, Any]) -> EngineResult:
        if model not in self._models:
            require_model(self._models, model)
        count = next(self._request_numbers)
        context = options.get("context")
        if context or self._faulty:  # the routing benchmarks' hot path asks for no fault
            self._inject_faults(_parse_faults(str(context or "")), count)
        answers = self._answers
        if answers is not None:
            answer = answers.get(model)
            if answer is None:
                answer = answers[model] = self._fingerprinted(audio, options)
            return answer
        return self._fingerprinted(audio, options)

    def _fingerprinted(self, audio: np.ndarray, options: Mapping[str, Any]) -> EngineResult:
        """The answer whose text is the audio's fingerprint."""
        # PCM16 decodes as value / 32768, so this recovers the exact integers the client sent
        # (clipped in place, one pass each: the fingerprint is every routing benchmark's model).
        values = np.multiply(audio, 32768.0, dtype=np.float64)  # the fingerprint's float64
        np.rint(values, out=values)
        np.minimum(values, 32767.0, out=values)  # ufuncs: np.clip is a Python-level wrapper
        np.maximum(values, -32768.0, out=values)  # resampled streams may ring past full scale
        fp = fingerprint(values)
        text = format_fingerprint(fp)
        duration = audio.size / ENGINE_SAMPLE_RATE
        words = _even_words(text, duration) if options.get("word_timestamps") else ()
        return EngineResult(
            text,
            (Segment(0.0, duration, text, words),),
            str(options.get("language") or "en"),
            0,
            _FINGERPRINT_WORDS,
        )


def _touched_block(megabytes: float) -> bytearray:
    """A block whose every page is written, so RSS really grows by its size."""
    block = bytearray(int(megabytes * 1024 * 1024))
    block[::4096] = b"x" * len(block[::4096])
    return block


def _even_words(text: str, duration_s: float) -> tuple[Word, ...]:
    """The text's words spread evenly over the audio: word timing's plumbing, end to end."""
    tokens = text.split()
    step = duration_s / max(len(tokens), 1)
    return tuple(
        Word(token, round(i * step, 4), round((i + 1) * step, 4), 1.0)
        for i, token in enumerate(tokens)
    )


def _parse_faults(context: str) -> dict[str, Any]:
    faults: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in context.split(","))):
        key, _, value = part.partition("=")
        faults[key] = float(value) if value else True
    return faults
