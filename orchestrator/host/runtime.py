"""Model host runtime: the process the supervisor starts inside each host env.

    envs/<host>/bin/python -m orchestrator.host --identity mlx_host.0 --endpoint ipc://... \
        --parent-pid 1234

The boot document (signing key, engine entry point, models, timings) arrives as one JSON line on
stdin, so the key is never in argv or the environment. The runtime then:

- loads the engine and its models on a worker thread, heartbeating all the while, and says READY
  only after every model loaded (or was found unavailable) and ran a warm-up transcript;
- runs one-shot requests and stream decodes on a bounded worker pool, so the main thread keeps
  answering heartbeats while a model computes (an engine that declares itself cheap, such as the
  synthetic one, answers one-shot requests on the main thread instead: no hand-off);
- exits by itself when the coordinator is gone: PR_SET_PDEATHSIG on Linux, its parent pid
  changing, stdin closing (macOS has no death signal), or the coordinator falling silent.

Standard library, pyzmq and numpy only: this file is installed into envs we do not control.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import ctypes
import enum
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from orchestrator.audio.pcm import decode_payload
from orchestrator.audio.resample import resample
from orchestrator.call_queue import CallQueue
from orchestrator.host.engine import ENGINE_SAMPLE_RATE, Engine, load_engine_class
from orchestrator.host.models import ModelTable
from orchestrator.host.streams import HostStreams
from orchestrator.host.vad import VadFactory
from orchestrator.wire.bodies import HostResult, ModelRequest, TranscribeRequest
from orchestrator.wire.contract import (
    EXIT_ENGINE_FAILED,
    EXIT_OK,
    EXIT_ORPHANED,
    BootDocument,
)
from orchestrator.wire.errors import (
    BadRequestError,
    DeadlineExceededError,
    InternalError,
    OrchestratorError,
)
from orchestrator.wire.protocol import Codec, DropCounter, Kind, Message, error_message
from orchestrator.wire.sockets import HeldSends, poll_timeout_ms, send_frames, waiting_messages

log = logging.getLogger("orchestrator.host")


def _nothing() -> None:
    """What :meth:`HostRuntime.wake` queues by default: the wake-up is the point."""


#: Longest the main loop goes between its checks (orphaned? models idle?). They run when it wakes
#: to heartbeat (every 0.25 s by default), so an idle host wakes only for that; what must act at
#: once wakes it through its call queue instead (stdin closing, SIGTERM).
MAX_CHECK_INTERVAL_S = 1.0
#: How often loaded on-demand models are checked against ``idle_unload_s``.
IDLE_CHECK_INTERVAL_S = 1.0
#: Messages read per turn of the main loop before heartbeats and completions get their turn.
MAX_MESSAGES_PER_TURN = 200
_PR_SET_PDEATHSIG = 1

#: How long a TRANSCRIBE that names no timeout may take (the coordinator always names one).
DEFAULT_REQUEST_TIMEOUT_S = 30.0


class RuntimeState(enum.StrEnum):
    """The host process's own life, reported in its heartbeats."""

    LOADING = "loading"  # engine and models loading on a worker thread; heartbeats go on
    READY = "ready"
    DRAINING = "draining"  # told to shut down: finishing in-flight work, taking none
    STOPPING = "stopping"  # leaving the loop now (SIGTERM, or the engine could not start)


class HostRuntime:
    """One host process: a socket loop on the main thread, engine work on a worker pool."""

    def __init__(self, boot: BootDocument, identity: str, endpoint: str, parent_pid: int) -> None:
        self.boot = boot
        self.identity = identity
        self.parent_pid = parent_pid
        self.codec = Codec(boot.key, max_message_bytes=boot.max_message_bytes)
        self.drops = DropCounter()
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 10_000)
        self.sock.setsockopt(zmq.RCVHWM, 10_000)
        self.connect(endpoint)
        self.engine: Engine | None = None
        self.state = RuntimeState.LOADING
        self.models = ModelTable(
            boot.models,
            identity=identity,
            warmup=boot.warmup,
            idle_unload_s=boot.idle_unload_s,
            # Models changed: tell the coordinator (from the main thread, which owns the socket).
            on_change=lambda: self.call_soon(self.announce_models),
        )
        self.load_timings: dict[str, float] = {}
        self._reaping: set[str] = set()  # idle unloads submitted and not yet done
        self._next_idle_check = 0.0
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=boot.engine_threads, thread_name_prefix="engine"
        )
        self.calls = CallQueue()  # finished work, handed from worker threads to the main thread
        self.inflight: dict[str, float] = {}  # request or decode id -> start (monotonic)
        self.served = 0
        self.errors = 0
        self.exit_code = EXIT_OK
        self.last_heard = time.monotonic()
        self.streams: HostStreams | None = None  # created once the engine is loaded
        self.vad: VadFactory | None = None  # loaded with the engine (the Silero model, if any)
        #: (frames, kind) to send, held while a batch is handled (see drain_socket).
        self._sends: HeldSends[tuple[list[bytes], Kind]] = HeldSends(self._transmit)

    def new_streams(self) -> None:
        """A fresh stream table under the current segmenter settings (the VAD follows them: a
        dial-in host learns its settings from the coordinator only after its engine loaded)."""
        assert self.engine is not None
        if self.vad is None or self.vad.settings != self.boot.segmenter:
            self.vad = VadFactory(self.boot.segmenter)
        self.streams = HostStreams(self, self.engine, self.boot.segmenter, self.vad)

    # ----------------------------------------------------------------- plumbing
    def connect(self, endpoint: str) -> None:
        """Connect the socket as the supervisor's child: under the identity it was given."""
        self.sock.setsockopt(zmq.IDENTITY, self.identity.encode())
        self.sock.connect(endpoint)

    def decode(self, frames: list[zmq.Frame]) -> Message:
        """Check and decode one message (raises ProtocolError, counted by the caller)."""
        return self.codec.decode([f.buffer for f in frames])

    def send(self, msg: Message) -> None:
        """Send now, or at the end of the batch being handled (see :meth:`drain_socket`)."""
        frames = self.frames_of(msg)
        if frames is not None:
            self._sends.send((frames, msg.kind))

    def frames_of(self, msg: Message) -> list[bytes] | None:
        """The signed frames of ``msg`` (None: nobody to send it to yet)."""
        return self.codec.encode(msg)

    def _transmit(self, send: tuple[list[bytes], Kind]) -> None:
        self.transmit(*send)

    def transmit(self, frames: list[bytes], kind: Kind) -> None:
        try:
            send_frames(self.sock, frames)
        except zmq.Again:
            log.warning("coordinator queue full; dropped %s", kind)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the main thread (worker threads never touch the socket)."""
        self.calls.put(fn)

    def stop(self) -> None:
        """Leave the loop now (SIGTERM, or an engine that cannot start): from any thread."""
        self.state = RuntimeState.STOPPING
        self.wake()

    def parent_lost(self) -> None:
        """Our stdin closed (the coordinator is gone): the loop exits at once (any thread)."""
        self.wake(self._leave_orphaned)

    def _leave_orphaned(self) -> None:
        log.warning("exiting, coordinator gone: stdin closed")
        self.exit_code = EXIT_ORPHANED
        self.stop()

    def wake(self, then: Callable[[], None] = _nothing) -> None:
        """End the loop's wait now (running ``then`` on it), so it sees what another thread (or
        a signal) changed."""
        with contextlib.suppress(RuntimeError):  # closed: the loop is over anyway
            self.calls.put(then)

    def submit(
        self, job_id: str, work: Callable[[], Any], reply: Callable[[Any, Any], None]
    ) -> None:
        """Run ``work`` on the pool; ``reply(result, error)`` later runs on the main thread."""
        self.inflight[job_id] = time.monotonic()

        def run() -> None:
            result, error = self._execute(job_id, work)
            self.call_soon(lambda: self._finish(job_id, result, error, reply))

        self.pool.submit(run)

    def run_inline(
        self, job_id: str, work: Callable[[], Any], reply: Callable[[Any, Any], None]
    ) -> None:
        """Run ``work`` here on the main thread and reply at once: for engines that take
        microseconds, where the pool's two thread hand-offs and wake-up pipe cost more than the
        work (the main thread is busy meanwhile, so never for a real model). Not entered in
        ``inflight``: the heartbeats that report it are built on this thread, never during it."""
        result, error = self._execute(job_id, work)
        self._finish(job_id, result, error, reply)

    @staticmethod
    def _execute(job_id: str, work: Callable[[], Any]) -> tuple[Any, OrchestratorError | None]:
        """``work()`` as (result, error): a typed error as is, an engine bug as InternalError."""
        try:
            return work(), None
        except OrchestratorError as exc:
            return None, exc
        except Exception as exc:  # an engine bug must reach the caller, not kill the host
            log.exception("engine failed on %s", job_id)
            return None, InternalError(f"{type(exc).__name__}: {exc}")

    def _finish(
        self, job_id: str, result: Any, error: Any, reply: Callable[[Any, Any], None]
    ) -> None:
        """Main thread: count the job done and send its answer."""
        self.inflight.pop(job_id, None)
        if error is None:
            self.served += 1
        else:
            self.errors += 1
        reply(result, error)

    # ----------------------------------------------------------------- models
    def check_model(self, model: str) -> None:
        """Raise the typed error if this host cannot serve ``model`` (loaded or loadable)."""
        self.models.check(model)

    def using_model(self, model: str) -> contextlib.AbstractContextManager[float]:
        """Hold ``model`` loaded while the block runs (worker thread); yields seconds of loading."""
        return self.models.using(model)

    def announce_models(self) -> None:
        if self.engine is not None and self.state is not RuntimeState.STOPPING:
            self.send(self.ready_message())

    def on_model(self, msg: Message) -> None:
        """An operator's load or unload of one model, run on the engine pool."""
        try:
            body = ModelRequest.from_header(msg.header)
            action, model = body.action, body.model
            if self.engine is None:
                raise InternalError("host is still loading")
            if action not in ("load", "unload"):
                raise BadRequestError(f"model action must be load or unload, got {action!r}")
            self.models.check(model)
        except OrchestratorError as exc:
            self.reply_error(msg, exc, control=True)
            return

        def work() -> dict[str, Any]:
            if action == "load":
                return {"loaded": True, "load_s": self.models.load(model)}
            return {"unloaded": self.models.unload(model)}

        def reply(out: Any, error: Any) -> None:
            if error is not None:
                self.reply_error(msg, error, control=True)
            else:
                self.send(Message(Kind.CONTROL_REPLY, {"id": body.id, "model": model, **out}))

        self.submit(f"model:{body.id}", work, reply)

    def reap_idle_models(self, now: float) -> None:
        """Unload on-demand models idle past ``idle_unload_s`` (checked once a second)."""
        if now < self._next_idle_check or self.engine is None:
            return
        self._next_idle_check = now + IDLE_CHECK_INTERVAL_S
        for model in self.models.idle(now):
            if model in self._reaping:
                continue
            self._reaping.add(model)

            def reap(model: str = model) -> None:
                try:
                    self.models.unload_if_idle(model)
                except Exception:
                    log.exception("idle unload of %s failed", model)
                finally:
                    self.call_soon(lambda: self._reaping.discard(model))

            # Not counted as in-flight work: nobody waits for it.
            self.pool.submit(reap)

    def start_loading(self) -> None:
        def load() -> dict[str, Any]:
            t0 = time.monotonic()
            cls = load_engine_class(self.boot.engine)
            engine = cls(self.boot.engine_options)
            self.load_timings["import_s"] = time.monotonic() - t0
            t_vad = time.monotonic()
            self.vad = VadFactory(self.boot.segmenter)
            self.load_timings["vad_load_s"] = time.monotonic() - t_vad
            self.models.load_eager(engine)
            self.engine = engine
            return self.load_timings

        def loaded(timings: Any, error: Any) -> None:
            if error is not None or self.engine is None:
                log.error("engine %s failed to start: %s", self.boot.engine, error)
                self.send(error_message(InternalError(f"engine failed to start: {error}"), None))
                self.exit_code = EXIT_ENGINE_FAILED
                self.stop()
                return
            self.new_streams()
            if self.state is RuntimeState.LOADING:  # not if told to drain or stop meanwhile
                self.state = RuntimeState.READY
            self.send(self.ready_message())

        def run() -> None:
            try:
                result, error = load(), None
            except BaseException as exc:
                result, error = None, exc
            self.call_soon(lambda: loaded(result, error))

        threading.Thread(target=run, name="engine-load", daemon=True).start()

    def ready_message(self) -> Message:
        """What this host serves; sent once loaded, and again whenever its models change."""
        assert self.engine is not None
        versions = self.engine.versions()
        versions["python"] = ".".join(map(str, sys.version_info[:3]))
        return Message(
            Kind.READY,
            {
                "pid": os.getpid(),
                "engine": self.engine.name,
                "models": {name: spec.ref for name, spec in self.models.loaded.items()},
                "on_demand": self.models.loadable(),
                "unavailable": dict(self.models.unavailable),
                "idle_unload_s": self.boot.idle_unload_s,
                "capabilities": self.engine.capabilities(),
                **(self.vad.report() if self.vad is not None else {}),
                "versions": versions,
                "timings": {**self.load_timings, **self.models.timings},
            },
        )

    # ----------------------------------------------------------------- requests
    def handle(self, msg: Message) -> None:
        kind = msg.kind
        if kind is Kind.HEARTBEAT:
            return
        if kind is Kind.TRANSCRIBE:
            self.on_transcribe(msg)
        elif kind in (Kind.STREAM_OPEN, Kind.STREAM_AUDIO, Kind.STREAM_CLOSE):
            if self.streams is None:
                self.reply_error(msg, InternalError("host is still loading"))
            else:
                self.streams.handle(msg)
        elif kind is Kind.MODEL:
            self.on_model(msg)
        elif kind is Kind.SHUTDOWN:
            # Finish what is in flight, then exit; the supervisor's SIGTERM bounds the wait.
            log.info("shutdown requested; draining %d job(s)", len(self.inflight))
            if self.state is not RuntimeState.STOPPING:
                self.state = RuntimeState.DRAINING
        else:
            log.debug("ignored %s", kind)

    def reply_error(self, msg: Message, err: OrchestratorError, **extra: Any) -> None:
        """Answer ``msg`` with a typed error; a stream message's answer names its stream."""
        if msg.header.get("sid") is not None:
            extra.setdefault("sid", msg.header["sid"])
        self.send(error_message(err, msg.header.get("id"), **extra))

    def prepare_audio(self, body: TranscribeRequest, payloads: list[bytes]) -> np.ndarray:
        """Decode and resample a request's audio to what engines take."""
        if len(payloads) != 1:
            raise BadRequestError(f"expected one audio payload frame, got {len(payloads)}")
        samples = decode_payload(payloads[0], body.format, body.sample_rate)
        if body.sample_rate == ENGINE_SAMPLE_RATE:  # the usual case: nothing to resample
            return samples
        return resample(samples, body.sample_rate, ENGINE_SAMPLE_RATE)

    def on_transcribe(self, msg: Message) -> None:
        received = time.monotonic()
        try:
            if self.engine is None:
                raise InternalError("host is still loading")
            body = TranscribeRequest.from_header(msg.header)
            request_id = "" if body.id is None else str(body.id)
            model, options = body.model, body.options
            self.models.check(model)
            self.engine.check_options(options)
            samples = self.prepare_audio(body, msg.payloads)
            timeout_s = DEFAULT_REQUEST_TIMEOUT_S if body.timeout_s is None else body.timeout_s
        except OrchestratorError as exc:
            self.errors += 1
            self.reply_error(msg, exc)
            return
        deadline = received + timeout_s
        engine = self.engine

        def work() -> HostResult:
            started = time.monotonic()
            if started > deadline:
                raise DeadlineExceededError("deadline passed while queued on the host")
            with self.using_model(model) as load_s:
                computing = time.monotonic()
                result = engine.transcribe(model, samples, options)
            return HostResult(
                request_id,
                result.to_wire(),
                host_queued_s=started - received,
                load_s=load_s,
                compute_s=time.monotonic() - computing,
            )

        def reply(out: Any, error: OrchestratorError | None) -> None:
            if error is not None:
                self.reply_error(msg, error)
            else:
                self.send(Message(Kind.RESULT, out.to_header()))

        job_id = f"req:{request_id}"
        # Inline only when the model is loaded now: a model that must load first (on demand, or
        # unloaded when idle) may take seconds, which the pool takes while heartbeats go on.
        # (Should an idle unload slip in between, using_model still reloads it, only here.)
        if engine.runs_inline(options) and self.models.is_loaded(model):
            self.run_inline(job_id, work, reply)
        else:
            self.submit(job_id, work, reply)

    # ----------------------------------------------------------------- main loop
    def heartbeat(self) -> Message:
        now = time.monotonic()
        oldest = min(self.inflight.values(), default=now)
        header: dict[str, Any] = {
            "state": str(self.state),
            "inflight": len(self.inflight),
            "oldest_inflight_s": round(now - oldest, 3),
            "served": self.served,
            "errors": self.errors,
            "dropped": self.drops.total,
        }
        if self.streams is not None:
            header.update(self.streams.stats())
        return Message(Kind.HEARTBEAT, header)

    def orphaned(self, now: float) -> str | None:
        if os.getppid() != self.parent_pid:
            return "parent process changed"
        if now - self.last_heard > self.boot.orphan_timeout_s:
            return f"coordinator silent for {now - self.last_heard:.1f}s"
        return None

    def run(self) -> int:
        self.start_loading()
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.calls.fd, zmq.POLLIN)
        next_beat = next_check = time.monotonic()
        while self.state is not RuntimeState.STOPPING:
            now = time.monotonic()
            if now >= next_beat:
                self.send(self.heartbeat())
                # Read each time: a dial-in host learns the interval when it registers.
                next_beat = now + self.boot.heartbeat_interval_s
            if now >= next_check:  # not every turn: under load a turn is one request
                # With the heartbeat: one wake-up serves both (each costs CPU on an idle core).
                next_check = min(next_beat, now + MAX_CHECK_INTERVAL_S)
                self.reap_idle_models(now)
                reason = self.orphaned(now)
                if reason:
                    log.warning("exiting, coordinator gone: %s", reason)
                    return EXIT_ORPHANED
            events = dict(poller.poll(poll_timeout_ms(min(next_beat, next_check) - now)))
            if self.sock in events:
                self.drain_socket()
            if self.calls.fd in events:
                self.calls.run_pending()
            if self.state is RuntimeState.DRAINING and not self.inflight:
                break
        self.calls.run_pending()
        return self.exit_code

    def drain_socket(self) -> None:
        """Handle the messages waiting (bounded, so a flood of audio cannot starve heartbeats
        and finished decodes; the rest is read on the next turn of the loop).

        What the batch answers is sent at its end, back to back (see ``HeldSends``); a lone
        request is answered as soon as it is done.
        """
        self._sends.hold()
        try:
            self._handle_waiting()
        finally:
            self._sends.release()

    def _handle_waiting(self) -> None:
        for frames in waiting_messages(self.sock, MAX_MESSAGES_PER_TURN):
            self.last_heard = time.monotonic()
            try:
                msg = self.decode(frames)
            except OrchestratorError as exc:
                self.drops.add(exc)  # counted, reported in heartbeats, never fatal
                continue
            # A bug, or a header nobody foresaw: answer it, never die of it.
            try:
                self.handle(msg)
            except Exception as exc:
                log.exception("failed to handle %s", msg.kind)
                self.errors += 1
                self.reply_error(msg, InternalError(f"{type(exc).__name__}: {exc}"))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.sock.close(linger=200)
        self.ctx.term()
        self.calls.close()


def _set_parent_death_signal() -> None:
    """Ask Linux to SIGKILL us when the spawning thread's process dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable")


def _watch_stdin(gone: Callable[[], None]) -> None:
    """stdin is our pipe from the coordinator: EOF means it died (the macOS safety net)."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    gone()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.host", description=__doc__)
    parser.add_argument(
        "--identity", required=True, help="name.replica the coordinator knows us by"
    )
    parser.add_argument("--endpoint", required=True, help="coordinator's host socket")
    parser.add_argument("--parent-pid", type=int, required=True, help="exit when this pid is gone")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    _set_parent_death_signal()
    if os.getppid() != args.parent_pid:  # parent died before prctl took effect
        return EXIT_ORPHANED
    line = sys.stdin.readline()
    if not line:
        return EXIT_ORPHANED
    boot = BootDocument.from_json(line)
    runtime = HostRuntime(boot, args.identity, args.endpoint, args.parent_pid)
    threading.Thread(target=_watch_stdin, args=(runtime.parent_lost,), daemon=True).start()

    def on_term(signum: int, frame: object) -> None:
        runtime.stop()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator, not the terminal, stops us
    code = EXIT_ORPHANED
    try:
        code = runtime.run()
    except BaseException:
        log.exception("host runtime crashed")  # os._exit below would swallow the traceback
        raise
    finally:
        runtime.close()
        # Engine threads may be stuck in native code; do not wait for them.
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
