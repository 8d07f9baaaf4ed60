"""The host's model table: which models are loaded, which can be loaded, and who is using them.

A host loads its eager models before it reports ready and its on-demand models at their first
use. An operator can load or unload any model it serves (``MODEL`` messages), and with
``idle_unload_s`` set an on-demand model nobody used for that long is unloaded on its own, so a
rarely used 9B model gives its memory back. An unloaded model stays servable: it becomes
on-demand, and the next request that needs it loads it again (its reply says how long that took).

Every use of a model goes through :meth:`ModelTable.using`, which counts it: a model in use (a
request computing, a stream decoding) is never unloaded under its user. Loads and unloads take
one lock, so they run one at a time, and never while a user is inside the engine with that model.

Standard library only (host side): the engine does the real freeing in ``Engine.unload``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence

from orchestrator.host.engine import Engine, ModelSpec
from orchestrator.wire.errors import BadRequestError, ModelUnavailableError, UnknownModelError

log = logging.getLogger("orchestrator.host")


class ModelTable:
    """Loaded, loadable and unavailable models of one host; thread-safe."""

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        *,
        identity: str,
        warmup: bool,
        idle_unload_s: float,
        on_change: Callable[[], None],
    ) -> None:
        self.identity = identity
        self.warmup = warmup
        self.idle_unload_s = idle_unload_s
        self._on_change = on_change
        self.engine: Engine | None = None
        self.specs: dict[str, ModelSpec] = {m.name: m for m in specs}
        self.loaded: dict[str, ModelSpec] = {}
        self.unavailable: dict[str, str] = {}
        #: Seconds each model's last load took (and the engine import), reported in READY.
        self.timings: dict[str, float] = {}
        self._load_lock = threading.Lock()  # one load or unload at a time
        self._use_lock = threading.Lock()  # guards loaded / in-use counts / last use
        self._in_use: collections.Counter[str] = collections.Counter()
        self._last_used: dict[str, float] = {}

    # ----------------------------------------------------------------- what the host reports
    def loadable(self) -> dict[str, str]:
        """Models servable but not loaded now (loaded at their next use): name -> ref."""
        return {
            name: spec.ref
            for name, spec in self.specs.items()
            if name not in self.loaded and name not in self.unavailable
        }

    def is_loaded(self, model: str) -> bool:
        """Whether ``model`` is loaded now (its next use needs no load)."""
        with self._use_lock:
            return model in self.loaded

    def check(self, model: str) -> None:
        """Raise the typed error if this host cannot serve ``model`` (loaded or loadable)."""
        if model in self.unavailable:
            raise ModelUnavailableError(
                f"model {model!r} is unavailable on {self.identity}: {self.unavailable[model]}",
                model=model,
            )
        if model not in self.specs:
            raise UnknownModelError(
                f"model {model!r} is not served by {self.identity}", model=model
            )

    # ----------------------------------------------------------------- loading
    def load_eager(self, engine: Engine) -> None:
        """Load every model that is not on demand (engine-load thread, before READY)."""
        self.engine = engine
        for spec in self.specs.values():
            if not spec.on_demand:
                # A model that fails is recorded as unavailable; the host serves the others.
                with contextlib.suppress(ModelUnavailableError):
                    self._load(spec)

    def _load(self, spec: ModelSpec) -> float:
        """Load (and warm up) one model; caller holds the load lock or runs before READY."""
        assert self.engine is not None
        started = time.monotonic()
        try:
            self.engine.load(spec)
            if self.warmup:
                self.engine.warmup(spec.name)
        except ModelUnavailableError as exc:
            self.unavailable[spec.name] = exc.message
            log.warning("model %s unavailable: %s", spec.name, exc.message)
            raise
        except Exception as exc:  # a loader bug is still "this model is unavailable here"
            self.unavailable[spec.name] = f"{type(exc).__name__}: {exc}"
            log.warning("model %s failed to load: %s", spec.name, exc)
            raise ModelUnavailableError(
                f"model {spec.name!r} ({spec.ref}) failed to load: {type(exc).__name__}: {exc}",
                model=spec.name,
            ) from exc
        seconds = time.monotonic() - started
        with self._use_lock:
            self.loaded[spec.name] = spec
            self._last_used[spec.name] = time.monotonic()
        self.unavailable.pop(spec.name, None)
        self.timings[f"load_s.{spec.name}"] = seconds
        return seconds

    def load(self, model: str) -> float:
        """Load ``model`` if it is not loaded (worker thread); seconds spent loading, else 0."""
        self.check(model)
        with self._use_lock:
            if model in self.loaded:
                return 0.0
        with self._load_lock:
            if model in self.loaded:
                return 0.0
            log.info("loading model %s (%s)", model, self.specs[model].ref)
            try:
                return self._load(self.specs[model])
            finally:
                self._on_change()

    def using(self, model: str) -> ModelUse:
        """Hold ``model`` loaded for a ``with`` block (loading it first); the block gets the
        seconds loading took."""
        return ModelUse(self, model)

    def _hold(self, model: str) -> float:
        """Count one more user of ``model``, loading it first if needed; seconds spent loading."""
        load_s = 0.0
        while True:
            with self._use_lock:
                if model in self.loaded:
                    self._in_use[model] += 1
                    return load_s
            # Not loaded: load it (another thread may unload it again before we count ourselves
            # in, so count under the lock and loop until that succeeds).
            load_s += self.load(model)

    def _release(self, model: str) -> None:
        with self._use_lock:
            self._in_use[model] -= 1
            self._last_used[model] = time.monotonic()

    # ----------------------------------------------------------------- unloading
    def unload(self, model: str) -> bool:
        """Unload ``model`` now (an operator's call); False if it was not loaded.

        Refused while the model is in use: a request or a stream would lose it mid-decode.
        """
        self.check(model)
        with self._load_lock:
            with self._use_lock:
                if model not in self.loaded:
                    return False
                if self._in_use[model]:
                    raise BadRequestError(
                        f"model {model!r} is in use by {self._in_use[model]} job(s) on "
                        f"{self.identity}; unload it when they are done",
                        model=model,
                    )
                spec = self.loaded.pop(model)  # from here new users wait for the load lock
            self._unload(spec, "requested")
        return True

    def idle(self, now: float) -> list[str]:
        """On-demand models loaded, unused and idle for ``idle_unload_s`` or longer."""
        if self.idle_unload_s <= 0:
            return []
        with self._use_lock:
            return [name for name in self.loaded if self._is_idle(name, now)]

    def _is_idle(self, model: str, now: float) -> bool:
        """Caller holds the use lock."""
        return (
            model in self.loaded
            and self.loaded[model].on_demand
            and not self._in_use[model]
            and now - self._last_used.get(model, now) >= self.idle_unload_s
        )

    def unload_if_idle(self, model: str) -> bool:
        """Unload ``model`` if it is still idle (worker thread); True if it was unloaded."""
        with self._load_lock:
            with self._use_lock:
                if self.idle_unload_s <= 0 or not self._is_idle(model, time.monotonic()):
                    return False
                spec = self.loaded.pop(model)
            self._unload(spec, f"idle for {self.idle_unload_s:g}s")
        return True

    def _unload(self, spec: ModelSpec, why: str) -> None:
        """Let the engine free the model; the caller holds the load lock and took it out of
        ``loaded``. If the engine refuses, the model is still loaded and stays so."""
        assert self.engine is not None
        started = time.monotonic()
        try:
            self.engine.unload(spec.name)
        except BaseException:
            with self._use_lock:
                self.loaded[spec.name] = spec
            raise
        log.info("unloaded model %s (%s) in %.2fs", spec.name, why, time.monotonic() - started)
        self._on_change()


class ModelUse:
    """``with table.using(model) as load_s:``: the model stays loaded for the block.

    A class, not a generator context manager: every request enters one, and this costs a third.
    """

    __slots__ = ("_model", "_table")

    def __init__(self, table: ModelTable, model: str) -> None:
        self._table, self._model = table, model

    def __enter__(self) -> float:
        return self._table._hold(self._model)

    def __exit__(self, *exc: object) -> None:
        self._table._release(self._model)
