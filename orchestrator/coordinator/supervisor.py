"""The supervisor: spawns host processes, watches them, restarts them, stops them.

Modelled on gunicorn's arbiter (one loop that spawns, watches, reaps and signals) and
jupyter_client's restarter (restart limit, stable window). The coordinator's loop calls
:meth:`Supervisor.tick` every few tens of milliseconds; nothing here blocks.

The whole life of a replica is in :meth:`Supervisor._transition`::

    STARTING --ready--> READY <--> BUSY
       |                  |  \\--memory/stuck--> UNHEALTHY (draining, then recycled)
       |  exit/timeout    |  exit / missed heartbeats
       v                  v
    RESTARTING --backoff--> STARTING        ...too many restarts in the window --> FAILED
    any --stop--> STOPPED

External replicas (``[hosts.X] external = true``) are processes other machines run; they dial in
(``coordinator.remote``) and are never spawned, signalled or restarted here::

    STOPPED --dial-in--> STARTING --ready--> READY <--> BUSY
       ^                    |                  |  silent, replaced, recycled
       |                    +---silent-------->+--> UNHEALTHY (its work fails over at once)
       +----gone_after_s, or drained away------------------/       \\--dial-in--> STARTING
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import psutil

from orchestrator.coordinator.config import Config, HostConfig, host_environment, host_python
from orchestrator.wire.contract import EXIT_ENGINE_FAILED, BootDocument, ModelSpec
from orchestrator.wire.protocol import MAX_HEADER_BYTES

log = logging.getLogger("orchestrator.coordinator.supervisor")
#: How often each host's RSS and CPU% are read (and the memory ceiling checked).
RESOURCE_SAMPLE_INTERVAL_S = 1.0
host_log = logging.getLogger("orchestrator.hosts")


class HostState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    UNHEALTHY = "unhealthy"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"


#: States in which a replica takes new work.
SERVING = frozenset({HostState.READY, HostState.BUSY})
#: States a replica serves again from without anyone acting (a drained one is recycled): work for
#: it is worth waiting for, rather than refused as if no host could ever serve it.
COMING = frozenset({HostState.STARTING, HostState.RESTARTING, HostState.UNHEALTHY})
#: States a replica stays in until something happens (a message, an operator, an exit).
_SETTLED = SERVING | {HostState.FAILED, HostState.STOPPED}
#: Allowed transitions; anything else is a bug and is refused loudly.
_ALLOWED: dict[HostState, frozenset[HostState]] = {
    HostState.STARTING: frozenset(
        {HostState.READY, HostState.RESTARTING, HostState.FAILED, HostState.STOPPED}
    ),
    HostState.READY: frozenset(
        {
            HostState.BUSY,
            HostState.UNHEALTHY,
            HostState.RESTARTING,
            HostState.FAILED,
            HostState.STOPPED,
        }
    ),
    HostState.BUSY: frozenset(
        {
            HostState.READY,
            HostState.UNHEALTHY,
            HostState.RESTARTING,
            HostState.FAILED,
            HostState.STOPPED,
        }
    ),
    # UNHEALTHY -> STARTING: an external replica that dials in again while marked silent.
    HostState.UNHEALTHY: frozenset(
        {HostState.RESTARTING, HostState.FAILED, HostState.STOPPED, HostState.STARTING}
    ),
    HostState.RESTARTING: frozenset({HostState.STARTING, HostState.FAILED, HostState.STOPPED}),
    HostState.FAILED: frozenset({HostState.STARTING, HostState.STOPPED}),
    HostState.STOPPED: frozenset({HostState.STARTING}),
}


@dataclass
class Replica:
    """One running copy of a host: its process, state and counters."""

    host: HostConfig
    index: int
    state: HostState = HostState.STOPPED
    generation: int = 0
    proc: subprocess.Popen[bytes] | None = None
    ps: psutil.Process | None = None
    state_since: float = field(default_factory=time.monotonic)
    started_at: float = 0.0
    ready_at: float = 0.0
    last_heartbeat: float = 0.0
    heartbeat: dict[str, Any] = field(default_factory=dict)
    ready_info: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0
    restart_times: deque[float] = field(default_factory=deque)
    consecutive_failures: int = 0
    next_start_at: float = 0.0
    stop_deadline_term: float = 0.0
    stop_deadline_kill: float = 0.0
    stop_target: HostState | None = None
    last_exit: int | None = None
    last_reason: str = ""
    kill_reason: str = ""
    last_restart_reason: str = ""
    inflight: int = 0
    streams: int = 0
    cpu_percent: float | None = None
    rss_mb: float | None = None
    sampled_at: float = 0.0
    served: int = 0
    errors: int = 0
    #: External replicas: the routing id of the connection it dialled in on (None: no link),
    #: the name of the Curve key it proved, and the address and pid it reported.
    routing_id: bytes | None = None
    key_name: str = ""
    peer: str = ""
    remote_pid: int | None = None
    #: ``host.index``, fixed for the replica's life (routing reads it several times a request).
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = f"{self.host.name}.{self.index}"

    @property
    def identity(self) -> bytes:
        """Socket identity; the generation keeps a dead predecessor's frames apart. An external
        replica's is its connection's routing id, which ZeroMQ makes afresh per connection."""
        if self.host.external:
            return self.routing_id or b""
        return f"{self.name}#{self.generation}".encode()

    @property
    def linked(self) -> bool:
        """A process we spawned, or a connection an external host dialled in on."""
        return self.proc is not None or self.routing_id is not None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else self.remote_pid

    @property
    def models(self) -> Mapping[str, str]:
        return self.ready_info.get("models", {})

    def serves(self, model: str) -> bool:
        """Loaded, or loadable on first use."""
        return model in self.models or model in self.ready_info.get("on_demand", {})

    @property
    def has_capacity(self) -> bool:
        return self.state in SERVING and self.inflight < self.host.max_inflight


StateListener = Callable[[Replica, HostState, HostState, str], None]


class Supervisor:
    """Owns every replica's process and state machine."""

    def __init__(
        self,
        config: Config,
        *,
        endpoint: str,
        key: bytes,
        send_shutdown: Callable[[Replica], None],
    ) -> None:
        self.config = config
        self.settings = config.coordinator
        self.endpoint = endpoint
        self._key = key
        self._send_shutdown = send_shutdown
        self.replicas: list[Replica] = [
            Replica(host, i) for host in config.hosts.values() for i in range(host.replicas)
        ]
        self._by_identity: dict[bytes, Replica] = {}
        self.listeners: list[StateListener] = []
        self.closing = False

    # ------------------------------------------------------------------ queries
    def by_identity(self, identity: bytes) -> Replica | None:
        return self._by_identity.get(identity)

    def all_down(self) -> bool:
        return all(r.proc is None for r in self.replicas)

    # ------------------------------------------------------------------ the state machine
    def _transition(self, rep: Replica, new: HostState, reason: str = "") -> None:
        old = rep.state
        if new == old:
            return
        if new not in _ALLOWED[old]:
            raise RuntimeError(f"{rep.name}: illegal transition {old} -> {new} ({reason})")
        now = time.monotonic()
        rep.state, rep.state_since = new, now
        if reason:
            rep.last_reason = reason
        if new is HostState.READY and old is HostState.STARTING:
            rep.ready_at = now
        if new in (HostState.FAILED, HostState.UNHEALTHY, HostState.RESTARTING):
            level = logging.WARNING  # an operator must see every restart and its reason
        elif {old, new} == {HostState.READY, HostState.BUSY}:
            level = logging.DEBUG  # load flapping is routine, not news
        else:
            level = logging.INFO
        log.log(level, "host %s: %s -> %s%s", rep.name, old, new, f" ({reason})" if reason else "")
        for listener in self.listeners:
            listener(rep, old, new, reason)

    # ------------------------------------------------------------------ spawning
    def start_all(self) -> None:
        for rep in self.replicas:
            if rep.host.external:
                rep.last_reason = "waiting for it to dial in"
            else:
                self.spawn(rep)

    def spawn(self, rep: Replica) -> None:
        """Start a replica's process; its READY message moves it on."""
        host = rep.host
        if host.external:
            raise RuntimeError(f"{rep.name} is external: its own machine starts it")
        python = host_python(host, self.config.root)
        rep.generation += 1
        rep.heartbeat, rep.ready_info = {}, {}
        rep.cpu_percent = rep.rss_mb = None
        rep.sampled_at = 0.0
        rep.inflight = rep.streams = 0
        cmd = [
            str(python), "-m", "orchestrator.host",
            "--identity", rep.identity.decode(),
            "--endpoint", self.endpoint,
            "--parent-pid", str(os.getpid()),
            "--log-level", "INFO",
        ]  # fmt: skip
        env = host_environment(host, self.config.root)
        env.setdefault("PYTHONUNBUFFERED", "1")
        # Never through `uv run`: it swallows signals and leaves orphans (uv #6724, #12108).
        rep.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # our terminal's Ctrl-C is ours to handle, not theirs
            env=env,
            cwd=self.config.root or None,
        )
        self._by_identity[rep.identity] = rep
        rep.ps = _process(rep.proc.pid)
        rep.started_at = rep.last_heartbeat = time.monotonic()
        rep.stop_target = None
        rep.kill_reason = ""
        assert rep.proc.stdin is not None
        # The key goes through the pipe only we hold: not argv, not the environment.
        rep.proc.stdin.write(self._boot_document(host).to_json().encode() + b"\n")
        rep.proc.stdin.flush()
        for stream, level in ((rep.proc.stdout, logging.INFO), (rep.proc.stderr, logging.WARNING)):
            threading.Thread(
                target=_pump_output, args=(stream, rep.name, level), daemon=True,
                name=f"out-{rep.name}",
            ).start()  # fmt: skip
        self._transition(rep, HostState.STARTING, f"pid {rep.proc.pid}")

    def _boot_document(self, host: HostConfig) -> BootDocument:
        models = tuple(
            ModelSpec(name, ref, dict(host.model_options.get(name, {})), on_demand=lazy)
            for lazy, table in ((False, host.models), (True, host.on_demand_models))
            for name, ref in table.items()
        )
        return BootDocument(
            key=self._key,
            engine=host.engine,
            models=models,
            engine_options=dict(host.engine_options),
            engine_threads=host.engine_threads,
            heartbeat_interval_s=self.settings.heartbeat_interval_s,
            orphan_timeout_s=self.settings.host_orphan_timeout_s,
            # The coordinator re-frames a request with a few more header bytes: a message
            # the client was allowed to send must not become one the host drops.
            max_message_bytes=self.settings.max_message_bytes + MAX_HEADER_BYTES,
            segmenter=self.config.segmenter,
            idle_unload_s=host.idle_unload_s,
        )

    # ------------------------------------------------------------------ external replicas
    def register_external(
        self, rep: Replica, routing_id: bytes, key_name: str, peer: str, pid: int | None
    ) -> None:
        """A host dialled in (or again) on connection ``routing_id``: a new generation starts.

        A link it still had is dropped first, so whatever the old one held fails over: one
        connection per replica, and no answer from a connection the coordinator left counts.
        """
        if rep.routing_id is not None:
            self._drop_link(rep, "dialled in again on a new connection")
        rep.generation += 1
        rep.routing_id, rep.key_name, rep.peer, rep.remote_pid = routing_id, key_name, peer, pid
        rep.heartbeat, rep.ready_info = {}, {}
        rep.inflight = rep.streams = 0
        rep.stop_target = None
        rep.started_at = rep.last_heartbeat = time.monotonic()
        self._by_identity[routing_id] = rep
        self._transition(rep, HostState.STARTING, f"dialled in with key {key_name} from {peer}")

    def _drop_link(self, rep: Replica, reason: str) -> None:
        """Forget an external replica's connection; the state change fails its work over."""
        if rep.routing_id is None:
            return
        self._by_identity.pop(rep.routing_id, None)
        rep.routing_id = None
        rep.last_restart_reason = reason
        if rep.stop_target is not None or rep.state in (HostState.UNHEALTHY, HostState.STARTING):
            self._transition(rep, rep.stop_target or HostState.STOPPED, reason)
            rep.stop_target = None
        elif rep.state in SERVING:
            self._transition(rep, HostState.UNHEALTHY, reason)

    def _tick_external(self, rep: Replica, now: float, hb_timeout: float) -> None:
        """Silent past the heartbeat liveness: link lost (a cut cable or a dead process look the
        same from here); silent past ``gone_after_s`` more: gone, its slot free again."""
        if rep.routing_id is not None:
            if now - rep.last_heartbeat > hb_timeout:
                self._drop_link(rep, f"silent for {now - rep.last_heartbeat:.1f}s")
            elif (
                rep.state is HostState.STARTING and now - rep.started_at > rep.host.ready_timeout_s
            ):
                self._drop_link(rep, f"not ready after {rep.host.ready_timeout_s:.0f}s")
        elif (
            rep.state is HostState.UNHEALTHY
            and now - rep.state_since > self.config.remote.gone_after_s
        ):
            self._transition(
                rep, HostState.STOPPED, f"gone: silent for {now - rep.last_heartbeat:.0f}s"
            )

    # ------------------------------------------------------------------ events from the broker
    def on_ready(self, rep: Replica, info: dict[str, Any]) -> None:
        rep.ready_info = info
        rep.last_heartbeat = time.monotonic()
        if rep.state is HostState.STARTING:
            self._transition(rep, HostState.READY, f"{len(info.get('models', {}))} model(s)")

    def on_heartbeat(self, rep: Replica, info: dict[str, Any]) -> None:
        rep.last_heartbeat = time.monotonic()
        rep.heartbeat = info

    def update_load(self, rep: Replica) -> None:
        """Flip READY/BUSY as in-flight work changes (the broker calls this twice per request).

        Under load a replica flips on nearly every request, so this skips what ``_transition``
        adds for rarer moves (the legality table, a log line that was debug-level anyway);
        listeners still hear every flip.
        """
        state = rep.state
        if state is HostState.READY:
            if rep.inflight >= rep.host.max_inflight:
                self._flip_load(rep, HostState.BUSY)
        elif state is HostState.BUSY and rep.inflight < rep.host.max_inflight:
            self._flip_load(rep, HostState.READY)

    def _flip_load(self, rep: Replica, new: HostState) -> None:
        old = rep.state
        rep.state, rep.state_since = new, time.monotonic()
        for listener in self.listeners:
            listener(rep, old, new, "")

    def recycle(self, rep: Replica, reason: str) -> None:
        """Kill a misbehaving replica now; the exit path restarts it under the policy.

        An external one is not ours to kill: its link is dropped (its work fails over), it
        hears no more heartbeats, resets and dials in afresh.
        """
        if rep.host.external:
            self._drop_link(rep, reason)
            return
        if rep.proc is None or rep.state in (HostState.STOPPED, HostState.FAILED):
            return
        if rep.state in SERVING:
            self._transition(rep, HostState.UNHEALTHY, reason)
        rep.kill_reason = reason
        self._kill(rep, signal.SIGKILL)

    def drain(self, rep: Replica, reason: str) -> None:
        """Take a replica out of rotation; it is recycled once its in-flight work is done."""
        if rep.state in SERVING:
            self._transition(rep, HostState.UNHEALTHY, reason)

    def stop(self, rep: Replica, *, target: HostState = HostState.STOPPED) -> None:
        """Ask, wait, SIGTERM, wait, SIGKILL: the escalation runs in tick().

        An external replica is asked to drain and leave (its process manager decides what comes
        next) and is stopped when its link falls silent; when the coordinator itself closes,
        external hosts are not asked to leave: they dial in to the next coordinator.
        """
        if rep.host.external:
            self._stop_external(rep, target)
            return
        if rep.proc is None:
            if rep.state is not target and target in _ALLOWED[rep.state]:
                self._transition(rep, target, "stopped")
            return
        if rep.stop_target is not None:
            return
        now = time.monotonic()
        rep.stop_target = target
        rep.stop_deadline_term = now + self.settings.stop_grace_s
        rep.stop_deadline_kill = rep.stop_deadline_term + self.settings.term_grace_s
        try:
            self._send_shutdown(rep)
        except Exception:  # the socket may already be closed; escalation still runs
            log.debug("shutdown message to %s failed", rep.name, exc_info=True)

    def _stop_external(self, rep: Replica, target: HostState) -> None:
        if rep.routing_id is None or self.closing:
            self._by_identity.pop(rep.routing_id or b"", None)
            rep.routing_id = None
            if rep.state is not target and target in _ALLOWED[rep.state]:
                self._transition(rep, target, "coordinator closed" if self.closing else "stopped")
            return
        rep.stop_target = target
        with contextlib.suppress(Exception):  # the socket may already be closed
            self._send_shutdown(rep)
        if rep.state in SERVING:
            self._transition(rep, HostState.UNHEALTHY, "asked to drain and leave")

    def start(self, rep: Replica) -> None:
        """Start a stopped or failed replica again (an operator's action)."""
        if rep.host.external:
            return  # its own machine's process manager starts it; it dials in by itself
        if rep.proc is None and rep.state in (HostState.STOPPED, HostState.FAILED):
            rep.restart_times.clear()
            rep.consecutive_failures = 0
            self.spawn(rep)

    def restart(self, rep: Replica, reason: str) -> None:
        """An operator's restart: a fresh policy window, and a failed or stopped replica too."""
        rep.restart_times.clear()
        rep.consecutive_failures = 0
        if rep.proc is None:
            self.start(rep)
        else:
            self.recycle(rep, reason)

    # ------------------------------------------------------------------ the periodic check
    def settled(self) -> bool:
        """Whether every replica is where it stays until something happens (serving, failed,
        stopped): then nothing in :meth:`tick` is due before a heartbeat could be missed."""
        return all(r.state in _SETTLED and r.stop_target is None for r in self.replicas)

    def tick(self) -> None:
        now = time.monotonic()
        hb_timeout = self.settings.heartbeat_interval_s * self.settings.heartbeat_liveness
        for rep in self.replicas:
            if rep.host.external:
                self._tick_external(rep, now, hb_timeout)
                continue
            if rep.proc is not None:
                code = rep.proc.poll()
                if code is not None:
                    self._on_exit(rep, code)
                    continue
                if rep.stop_target is not None:
                    self._escalate_stop(rep, now)
                    continue
                # Liveness counts from the first message heard: starting the interpreter and
                # importing numpy can outlast it on a loaded machine (ready_timeout_s bounds that).
                heard = rep.last_heartbeat > rep.started_at
                if heard and now - rep.last_heartbeat > hb_timeout:
                    self.recycle(rep, f"no heartbeat for {now - rep.last_heartbeat:.1f}s")
                elif (
                    rep.state is HostState.STARTING
                    and now - rep.started_at > rep.host.ready_timeout_s
                ):
                    self.recycle(rep, f"not ready after {rep.host.ready_timeout_s:.0f}s")
                elif rep.state is HostState.UNHEALTHY and (
                    (rep.inflight == 0 and rep.streams == 0)
                    # Long streams would keep it draining forever; they fail over losslessly.
                    or now - rep.state_since > rep.host.drain_timeout_s
                ):
                    rep.kill_reason = rep.kill_reason or rep.last_reason
                    self._kill(rep, signal.SIGKILL)  # drained (or waited long enough): recycle
                if rep.state in SERVING and now - rep.ready_at > rep.host.restart.stable_after_s:
                    rep.consecutive_failures = 0
                if now - rep.sampled_at >= RESOURCE_SAMPLE_INTERVAL_S:
                    self._sample(rep, now)
            elif (
                rep.state is HostState.RESTARTING and now >= rep.next_start_at and not self.closing
            ):
                self.spawn(rep)

    def _sample(self, rep: Replica, now: float) -> None:
        """Read RSS and CPU% on one fixed cadence, so every reader sees the same window."""
        rep.sampled_at = now
        if rep.ps is None:
            return
        try:
            with rep.ps.oneshot():
                rep.rss_mb = round(rep.ps.memory_info().rss / 2**20, 1)
                rep.cpu_percent = round(rep.ps.cpu_percent(None), 1)
        except psutil.Error:
            return
        limit = rep.host.memory_limit_mb
        if limit and rep.rss_mb > limit and rep.state in SERVING:
            self.drain(rep, f"RSS {rep.rss_mb:.0f} MB over the {limit} MB limit")

    def _escalate_stop(self, rep: Replica, now: float) -> None:
        if now >= rep.stop_deadline_kill:
            self._kill(rep, signal.SIGKILL)
        elif now >= rep.stop_deadline_term:
            self._kill(rep, signal.SIGTERM)

    def _kill(self, rep: Replica, sig: signal.Signals) -> None:
        if rep.proc is None or rep.proc.returncode is not None:
            return
        try:
            # The host leads its own process group: take any children of its with it.
            os.killpg(rep.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                rep.proc.send_signal(sig)

    def _on_exit(self, rep: Replica, code: int) -> None:
        """Reap the child and decide: stopped, restart later, or failed for good."""
        proc = rep.proc
        assert proc is not None
        proc.wait()
        for pipe in (proc.stdin,):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._by_identity.pop(rep.identity, None)
        rep.proc, rep.ps, rep.last_exit = None, None, code
        rep.rss_mb = rep.cpu_percent = None
        if rep.stop_target is not None or self.closing:
            self._transition(rep, rep.stop_target or HostState.STOPPED, f"exit {code}")
            rep.stop_target = None
            return
        reason = rep.kill_reason or f"exited with {code}"
        rep.last_restart_reason = reason
        if code == EXIT_ENGINE_FAILED:
            self._transition(rep, HostState.FAILED, f"engine failed to start ({reason})")
            return
        self._schedule_restart(rep, reason)

    def _schedule_restart(self, rep: Replica, reason: str) -> None:
        policy = rep.host.restart
        now = time.monotonic()
        while rep.restart_times and now - rep.restart_times[0] > policy.restart_window_s:
            rep.restart_times.popleft()
        if len(rep.restart_times) >= policy.max_restarts:
            self._transition(
                rep, HostState.FAILED,
                f"{reason}; {len(rep.restart_times)} restarts in {policy.restart_window_s:.0f}s",
            )  # fmt: skip
            return
        delay = min(
            policy.backoff_max_s,
            policy.backoff_initial_s * policy.backoff_factor**rep.consecutive_failures,
        )
        rep.consecutive_failures += 1
        rep.restart_times.append(now)
        rep.restarts += 1
        rep.next_start_at = now + delay
        self._transition(rep, HostState.RESTARTING, f"{reason}; restart in {delay:.2f}s")

    # ------------------------------------------------------------------ shutdown
    def stop_all(self, timeout_s: float | None = None) -> None:
        """Stop every replica and reap it; blocks until all are gone (called on close)."""
        self.closing = True
        for rep in self.replicas:
            self.stop(rep)
        limit = time.monotonic() + (
            timeout_s or self.settings.stop_grace_s + self.settings.term_grace_s + 2.0
        )
        while any(r.proc is not None for r in self.replicas):
            self.tick()
            if time.monotonic() > limit:
                for rep in self.replicas:
                    self._kill(rep, signal.SIGKILL)
            time.sleep(0.02)
        for rep in self.replicas:
            if rep.state not in (HostState.STOPPED, HostState.FAILED):
                self._transition(rep, HostState.STOPPED, "coordinator closed")


def _process(pid: int) -> psutil.Process | None:
    try:
        proc = psutil.Process(pid)
        proc.cpu_percent(None)  # prime: the next call measures from here
        return proc
    except psutil.Error:
        return None


_LEVELS = {
    name: getattr(logging, name) for name in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
}


def _pump_output(stream: IO[bytes] | None, name: str, default_level: int) -> None:
    """Relay a host's output line by line, prefixed with its name, never mid-line.

    The host runtime logs "LEVEL logger: message"; such lines keep their level, anything else
    on stderr (a library's warning, a traceback) is a warning so it is seen by default.
    """
    if stream is None:
        return
    with stream:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            word = line.split(" ", 1)[0]
            level = _LEVELS.get(word, default_level)
            host_log.log(level, "[%s] %s", name, line, extra={"host": name})
