"""The engine interface: the small contract between the host runtime and a speech-to-text stack.

An engine is an adapter over one real library (mlx-audio, qwen-asr) or the synthetic engine. The
host runtime (``orchestrator.host``) imports it by entry point (``package.module:Class``) inside
the host's own env, calls :meth:`Engine.load` once per configured model before reporting ready,
then calls :meth:`Engine.transcribe` from a worker thread for each request. The runtime owns
sockets, heartbeats, deadlines, resampling and streaming; the engine only turns float32 audio into
text. Keep this module standard-library + numpy: it is installed into environments we do not
control.

Writing an engine::

    class MyEngine(Engine):
        name = "my-stack"
        supported_options = frozenset({"language", "max_tokens"})

        def load(self, spec: ModelSpec) -> None:
            self._models[spec.name] = my_stack.load(spec.ref)

        def unload(self, model: str) -> None:
            del self._models[model]        # and give the memory back (see Engine.unload)

        def transcribe(self, model, audio, options) -> EngineResult:
            out = self._models[model].run(audio)
            return EngineResult(text=out.text, language=out.language)
"""

from __future__ import annotations

import abc
import importlib
import importlib.metadata
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

# Engines import these two from here: the rate they receive, what a model is.
from orchestrator.wire.contract import ENGINE_SAMPLE_RATE as ENGINE_SAMPLE_RATE
from orchestrator.wire.contract import ModelSpec
from orchestrator.wire.errors import BadRequestError, ModelUnavailableError, UnknownModelError
from orchestrator.wire.messages import BOOL_OPTIONS as BOOL_OPTIONS
from orchestrator.wire.messages import KNOWN_OPTIONS as KNOWN_OPTIONS
from orchestrator.wire.messages import EngineResult as EngineResult
from orchestrator.wire.messages import Segment as Segment
from orchestrator.wire.messages import Word as Word
from orchestrator.wire.messages import check_bool_options


class Engine(abc.ABC):
    """Base class of every engine. Subclasses set ``name`` and ``supported_options``.

    Thread model: ``load`` runs before the host reports ready; ``transcribe`` runs on worker
    threads (one at a time unless the host's ``engine_threads`` says otherwise). Raise
    ``ModelUnavailableError`` from ``load`` when a model cannot be loaded, naming the cause:
    the host then serves its other models and reports this one unavailable.
    """

    #: Short name reported in the host's ready message.
    name: str = "engine"
    #: Request options this engine honours (a subset of KNOWN_OPTIONS).
    supported_options: frozenset[str] = frozenset()
    #: True if the engine streams natively (it then may implement ``open_stream``).
    native_streaming: bool = False
    #: True only for an engine whose ``transcribe`` takes microseconds (the synthetic one): the
    #: host then runs one-shot requests on its socket thread, skipping the worker pool's two
    #: thread hand-offs. Heartbeats wait while it runs, so a real model keeps the default. Such
    #: an engine must also be safe to call from that thread while stream decodes use the pool.
    inline: bool = False
    #: Distributions whose versions the host reports (what ops want to see per env).
    reported_packages: tuple[str, ...] = ("huggingface-hub", "transformers", "numpy", "pyzmq")

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options: dict[str, Any] = dict(options or {})

    @abc.abstractmethod
    def load(self, spec: ModelSpec) -> None:
        """Load one model so that ``transcribe(spec.name, ...)`` can serve it."""

    @abc.abstractmethod
    def transcribe(self, model: str, audio: np.ndarray, options: Mapping[str, Any]) -> EngineResult:
        """Transcribe mono float32 audio at ENGINE_SAMPLE_RATE, values in [-1, 1]."""

    def runs_inline(self, options: Mapping[str, Any]) -> bool:
        """Whether this request may run on the host's socket thread (see ``inline``).

        Only the transcript's cost counts here: the runtime asks this only of a request whose
        model is loaded now, and one that must load its model first always goes to the pool.
        """
        return self.inline

    def warmup(self, model: str) -> None:
        """Run one short transcript so that 'ready' means 'has served', not 'has imported'."""
        self.transcribe(model, np.zeros(ENGINE_SAMPLE_RATE // 2, dtype=np.float32), {})

    def capabilities(self) -> dict[str, Any]:
        """What the ready message advertises beyond the model list."""
        return {
            "streaming": True,  # the host runtime streams for every engine
            "native_streaming": self.native_streaming,
            "options": sorted(self.supported_options),
            "sample_rate": ENGINE_SAMPLE_RATE,
        }

    def versions(self) -> dict[str, str]:
        """Versions of the packages that matter, read from inside this env."""
        return package_versions(self.reported_packages)

    def unload(self, model: str) -> None:
        """Free one model's memory for real: the next ``transcribe`` of it needs a ``load``.

        Called only when no request or stream is using the model. Engines drop every reference
        to it and return the memory to the system (their framework's cache, the allocator), so
        the host's RSS falls. The default refuses: an engine that cannot unload says so.
        """
        raise BadRequestError(
            f"engine {self.name!r} cannot unload models; restart its host instead", model=model
        )

    def close(self) -> None:
        """Release models before the host exits. Default: nothing to do."""

    def load_options(
        self, spec: ModelSpec, load_only: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        """Engine options overlaid with the model's own; names that neither a request nor a load
        takes make the model unavailable (a typo in a config must not load silently)."""
        options = {**self.options, **spec.options}
        known = self.supported_options | load_only
        unknown = set(options) - known
        if unknown:
            raise ModelUnavailableError(
                f"model {spec.name!r}: unknown option(s) {sorted(unknown)}; known: {sorted(known)}",
                model=spec.name,
            )
        return options

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Refuse options this engine does not honour, rather than silently ignoring them."""
        if not options:  # most requests name none
            return
        unknown = set(options) - self.supported_options
        if unknown:
            raise BadRequestError(
                f"engine {self.name!r} does not support option(s) {sorted(unknown)}; "
                f"supported: {sorted(self.supported_options)}",
                options=sorted(unknown),
            )
        check_bool_options(options)


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions of ``names``; a missing distribution reads as ``"absent"``."""
    found: dict[str, str] = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def load_engine_class(entry_point: str) -> type[Engine]:
    """Import ``package.module:Class`` and check it is an Engine."""
    module_name, sep, attr = entry_point.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"engine entry point {entry_point!r} is not of the form package.module:Class"
        )
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise TypeError(f"{entry_point!r} is not a subclass of orchestrator.host.engine.Engine")
    return cls


def require_model(models: Mapping[str, Any], model: str) -> Any:
    """Look a loaded model up, raising the typed error engines share."""
    try:
        return models[model]
    except KeyError:
        raise UnknownModelError(
            f"model {model!r} is not loaded on this host", model=model
        ) from None


def timed_words(
    raw: Iterable[tuple[str, float, float, float | None]], start_s: float, end_s: float
) -> tuple[Word, ...]:
    """A stack's ``(word, start, end, probability)`` items as Words that keep the Word contract.

    Whisper stacks (faster-whisper, mlx-audio) write each word with its leading space and time it
    from cross-attention, which can put a word a few ms before the previous one's end or outside
    its segment's span: words are stripped (empty ones dropped), and times rounded to the ms and
    clamped into ``[start_s, end_s]``, never before the previous word's end.
    """
    words: list[Word] = []
    for text, start, end, probability in raw:
        word = text.strip()
        if not word:
            continue
        floor = words[-1].end if words else start_s
        begin = min(max(round(float(start), 3), floor), end_s)
        finish = min(max(round(float(end), 3), begin), end_s)
        p = None if probability is None else round(float(probability), 4)
        words.append(Word(word, begin, finish, p))
    return tuple(words)
