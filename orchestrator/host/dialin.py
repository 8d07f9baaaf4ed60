"""A host that dials in: started by systemd, launchd or Kubernetes on any machine, not spawned.

    python -m orchestrator.host --connect tcp://COORDINATOR:5560 --host-kind mlx_host \\
        --engine mlx_host.engine:MlxAudioEngine --model qwen3-asr=mlx-community/Qwen3-ASR-0.6B-8bit \\
        --keys /etc/orchestrator/keys
    python -m orchestrator.host --config /etc/orchestrator/host.toml    (the same, from a file)

It loads its engine and models at once, and meanwhile connects over TCP with CurveZMQ (its key
pair ``KEYS/host.key_secret``, the coordinator's public key ``KEYS/coordinator.key``) and says
HELLO until the coordinator WELCOMEs it with its replica name, the signing key and the timings
(``wire.dialin``). From then on it is the ordinary host runtime.

It never exits because the coordinator went away (the coordinator is not its parent; its
process manager is). When the coordinator falls silent or the connection drops, it resets:
every in-flight answer and open stream of that registration is dropped (the coordinator has
failed them over), and it says HELLO again until welcomed: a partition heals by itself, and no
answer from before it can arrive twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import socket
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import zmq

from orchestrator.host.runtime import HostRuntime, RuntimeState
from orchestrator.wire import curve
from orchestrator.wire.contract import (
    DEFAULT_ORPHAN_TIMEOUT_S,
    EXIT_ORPHANED,
    BootDocument,
    ModelSpec,
)
from orchestrator.wire.dialin import Welcome, hello, registration_codec
from orchestrator.wire.errors import ConfigError, ProtocolError, error_from_wire
from orchestrator.wire.handshake import HandshakeWatch, Party
from orchestrator.wire.protocol import Codec, Kind, Message, new_key
from orchestrator.wire.sockets import send_frames

log = logging.getLogger("orchestrator.host.dialin")

#: Until the first WELCOME, HELLO is repeated this often (the WELCOME then says how often).
DEFAULT_HELLO_INTERVAL_S = 1.0
DEFAULT_KEY_NAME = "host"
#: A refused handshake repeats at every reconnect: log the first and then every this many.
REFUSAL_LOG_EVERY = 30
#: After a refusal libzmq never dials again by itself; the host does, this often, so a key an
#: operator authorizes later gets in without restarting the host.
REFUSED_REDIAL_INTERVAL_S = 5.0
_CONFIG_KEYS = {
    "connect", "host_kind", "engine", "keys", "key_name", "plaintext", "models",
    "on_demand_models", "engine_options", "engine_threads", "warmup", "log_level",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class DialInSettings:
    """Everything a dial-in host is told on its command line or in its TOML file."""

    connect: str
    host_kind: str
    engine: str
    models: tuple[ModelSpec, ...]
    keys: str = ""
    key_name: str = DEFAULT_KEY_NAME
    #: No Curve: refused unless ``connect`` is a loopback address.
    plaintext: bool = False
    engine_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    engine_threads: int = 1
    warmup: bool = True
    log_level: str = "INFO"

    def check(self) -> DialInSettings:
        where = "dial-in host"
        if not self.connect.startswith("tcp://"):
            raise ConfigError(
                f"{where}: --connect must be tcp://HOST:PORT, got {self.connect!r} "
                "(fix: the coordinator's [remote] listen address as this machine reaches it)"
            )
        for name in ("host_kind", "engine"):
            if not getattr(self, name):
                raise ConfigError(f"{where}: --{name.replace('_', '-')} is required")
        if ":" not in self.engine:
            raise ConfigError(
                f"{where}: --engine must be 'package.module:Class', got {self.engine!r}"
            )
        if not self.models:
            raise ConfigError(f"{where}: no --model NAME=REF given (fix: name what it serves)")
        if self.plaintext and not curve.is_loopback_endpoint(self.connect):
            raise ConfigError(
                f"{where}: --plaintext is only allowed to a loopback address, not {self.connect} "
                "(fix: drop --plaintext and pass --keys DIR)"
            )
        if not self.plaintext and not self.keys:
            raise ConfigError(
                f"{where}: --keys DIR is required over TCP "
                "(fix: python -m orchestrator keys generate DIR --name host, and copy the "
                "coordinator's coordinator.key into DIR)"
            )
        return self


class DialInRuntime(HostRuntime):
    """The host runtime over a Curve TCP link, registering (and re-registering) itself."""

    def __init__(self, settings: DialInSettings) -> None:
        self.settings = settings
        self._keys = None
        self._server_public = b""
        if not settings.plaintext:
            folder = Path(settings.keys)
            self._keys = curve.load_keypair(folder, settings.key_name)
            self._server_public = curve.load_public_key(
                folder / f"{curve.COORDINATOR_KEY_NAME}{curve.PUBLIC_SUFFIX}"
            )
        # Until WELCOME: a throwaway key (nothing signed with it is ever sent) and defaults.
        boot = BootDocument(
            key=new_key(),
            engine=settings.engine,
            models=settings.models,
            engine_options=settings.engine_options,
            engine_threads=settings.engine_threads,
            warmup=settings.warmup,
        )
        self.registered = False
        self.replica = ""
        self.session = 0
        self.resets = 0
        self.refusals = 0
        self._hello_codec = registration_codec()
        self._hello_interval_s = DEFAULT_HELLO_INTERVAL_S
        self._last_hello = 0.0
        self._link: HandshakeWatch | None = None
        self._refused_at = 0.0  # when the last refusal (or redial after one) happened
        super().__init__(boot, identity="", endpoint=settings.connect, parent_pid=0)

    # ----------------------------------------------------------------- the link
    def connect(self, endpoint: str) -> None:
        """No identity of our own: ZeroMQ gives each connection a fresh one at the coordinator."""
        timings = curve.LinkTimings(
            heartbeat_interval_s=self.boot.heartbeat_interval_s,
            heartbeat_timeout_s=DEFAULT_ORPHAN_TIMEOUT_S,
        )
        curve.set_link_timings(self.sock, timings)
        # Queue nothing for a connection that is not up: a stale frame is worse than none.
        self.sock.setsockopt(zmq.IMMEDIATE, 1)
        if self._keys is not None:
            curve.make_curve_client(self.sock, self._keys, self._server_public)
        keys_dir = None if self.settings.plaintext else Path(self.settings.keys)
        self._link = HandshakeWatch(self.sock, endpoint, Party("host", keys_dir, self._keys))
        self.sock.connect(endpoint)
        log.info("dialling %s as a %s host", endpoint, self.settings.host_kind)

    def decode(self, frames: list[zmq.Frame]) -> Message:
        try:
            return super().decode(frames)
        except ProtocolError as exc:
            if exc.details.get("reason") != "signature":
                raise
            msg = self._hello_codec.decode([f.buffer for f in frames])
            if msg.kind is not Kind.WELCOME:
                raise
            return msg

    def frames_of(self, msg: Message) -> list[bytes] | None:
        if msg.kind is Kind.HELLO:
            return self._hello_codec.encode(msg)
        if not self.registered:
            return None  # nobody to tell yet: READY goes out again once welcomed
        return self.codec.encode(msg)

    def transmit(self, frames: list[bytes], kind: Kind) -> None:
        try:
            send_frames(self.sock, frames)
        except zmq.Again:
            log.debug("link not up; dropped %s", kind)

    def heartbeat(self) -> Message:
        """Registered: the ordinary heartbeat. Not yet: HELLO, at its own pace."""
        now = time.monotonic()
        if self.registered:
            return super().heartbeat()
        if now - self._last_hello >= self._hello_interval_s:
            self._last_hello = now
            return hello(self.settings.host_kind, os.getpid(), socket.gethostname())
        return Message(Kind.HEARTBEAT, {})  # dropped by send(): not registered

    def handle(self, msg: Message) -> None:
        if msg.kind is Kind.WELCOME:
            self._on_welcome(msg.header)
        elif self.registered:
            super().handle(msg)

    def _on_welcome(self, header: dict[str, Any]) -> None:
        if "error" in header:
            err = error_from_wire(header["error"])
            log.error("the coordinator refused this host: %s", err.message)
            self._last_hello = time.monotonic() + 10 * self._hello_interval_s  # back off
            return
        welcome = Welcome.from_header(header)
        self.codec = Codec(welcome.key, max_message_bytes=welcome.max_message_bytes)
        self.boot = dataclasses.replace(
            self.boot,
            heartbeat_interval_s=welcome.heartbeat_interval_s,
            orphan_timeout_s=welcome.orphan_timeout_s,
            max_message_bytes=welcome.max_message_bytes,
            segmenter=welcome.segmenter,
        )
        self._hello_interval_s = welcome.hello_interval_s
        self.replica, self.identity = welcome.replica, welcome.replica
        self.registered = True
        self.last_heard = time.monotonic()
        if self.engine is not None:
            self.new_streams()
            self.send(self.ready_message())
        log.info("registered as %s", welcome.replica)

    def _reset(self, reason: str) -> None:
        """Forget this registration: its answers and streams now belong to other hosts."""
        if not self.registered:
            return
        log.warning("link to the coordinator lost (%s); dialling in again", reason)
        self.registered = False
        self.session += 1
        self.resets += 1
        self._last_hello = 0.0
        if self.streams is not None and self.engine is not None:
            self.new_streams()

    def submit(
        self, job_id: str, work: Callable[[], Any], reply: Callable[[Any, Any], None]
    ) -> None:
        session = self.session

        def answer_if_current(result: Any, error: Any) -> None:
            if session == self.session:  # else the coordinator gave this work to another host
                reply(result, error)

        super().submit(job_id, work, answer_if_current)

    def orphaned(self, now: float) -> str | None:
        """Never: the coordinator is not our parent. Silence or a dropped link only resets."""
        self._poll_monitor()
        if self.registered and now - self.last_heard > self.boot.orphan_timeout_s:
            self._reset(f"coordinator silent for {now - self.last_heard:.1f}s")
        return None

    def _poll_monitor(self) -> None:
        if self._link is None:
            return
        now = time.monotonic()
        refused = self._link.refusal is not None
        if (
            refused
            and now - self._refused_at >= REFUSED_REDIAL_INTERVAL_S
            and self._link.dial_again()
        ):
            self._refused_at = now
        for event in self._link.poll():
            if event.refusal is not None:
                self._refused_at = now
                self.refusals += 1
                if self.refusals % REFUSAL_LOG_EVERY == 1:
                    log.error("refused %d time(s): %s", self.refusals, event.refusal.message)
            elif event.kind == zmq.EVENT_DISCONNECTED:
                # The coordinator knows us by that connection's routing id: it is gone for good.
                self._reset("connection dropped")
            elif event.kind == zmq.EVENT_HANDSHAKE_SUCCEEDED and not self.registered:
                self._last_hello = 0.0  # a fresh connection: say hello now, not at the next beat

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
        super().close()


# --------------------------------------------------------------------------- configuration
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="a TOML file with these same settings (flags win)")
    parser.add_argument("--connect", help="the coordinator's [remote] listen, tcp://HOST:PORT")
    parser.add_argument("--host-kind", help="which [hosts.NAME] of the coordinator this is")
    parser.add_argument("--engine", help="package.module:Class of the engine")
    parser.add_argument(
        "--model", action="append", default=[], metavar="NAME=REF", help="a model to load"
    )
    parser.add_argument(
        "--on-demand-model", action="append", default=[], metavar="NAME=REF",
        help="a model loaded at its first request",
    )  # fmt: skip
    parser.add_argument("--keys", help="folder with host.key_secret and coordinator.key")
    parser.add_argument(
        "--key-name", help=f"this host's key pair name (default {DEFAULT_KEY_NAME})"
    )
    parser.add_argument("--engine-threads", type=int)
    parser.add_argument(
        "--plaintext", action="store_true", default=None, help="no Curve (loopback only)"
    )
    parser.add_argument("--log-level")


def settings_from_args(args: argparse.Namespace) -> DialInSettings:
    """Flags over the TOML file over defaults; every mistake is one ConfigError line."""
    table: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        try:
            table = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(
                f"{path}: cannot read ({exc}) (fix: pass a TOML host config)"
            ) from None
        unknown = sorted(set(table) - _CONFIG_KEYS)
        if unknown:
            raise ConfigError(
                f"{path}: unknown key {unknown[0]} (fix: use one of {sorted(_CONFIG_KEYS)})"
            )
        if table.get("keys"):  # relative to the file, as the coordinator's keys_dir is
            table["keys"] = str((path.parent / Path(table["keys"]).expanduser()).resolve())
    for name in ("connect", "host_kind", "engine", "keys", "key_name", "engine_threads",
                 "plaintext", "log_level"):  # fmt: skip
        value = getattr(args, name)
        if value is not None:
            table[name] = value
    models = {**_table(table.pop("models", {}), "models"), **_pairs(args.model, "--model")}
    lazy = {
        **_table(table.pop("on_demand_models", {}), "on_demand_models"),
        **_pairs(args.on_demand_model, "--on-demand-model"),
    }
    specs = tuple(ModelSpec(n, r) for n, r in models.items()) + tuple(
        ModelSpec(n, r, on_demand=True) for n, r in lazy.items()
    )
    try:
        settings = DialInSettings(
            connect=str(table.pop("connect", "")),
            host_kind=str(table.pop("host_kind", "")),
            engine=str(table.pop("engine", "")),
            models=specs,
            **table,
        )
    except TypeError as exc:
        raise ConfigError(f"dial-in host: {exc} (fix: check the setting's name and type)") from None
    return settings.check()


def _table(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(f"dial-in host: [{where}] must map names to hub ids or paths")
    return value


def _pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, ref = value.partition("=")
        if not sep or not name or not ref:
            raise ConfigError(
                f"dial-in host: {flag} {value!r} must be NAME=REF (fix: qwen3-asr=org/repo)"
            )
        pairs[name] = ref
    return pairs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.host",
        description="A model host that dials in to a coordinator.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(f"orchestrator host: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        runtime = DialInRuntime(settings)
    except ConfigError as exc:
        print(f"orchestrator host: {exc}", file=sys.stderr)
        return 2

    def on_term(signum: int, frame: object) -> None:
        runtime.stop()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # run by hand, Ctrl-C stops it
    code = EXIT_ORPHANED
    try:
        code = runtime.run()
    finally:
        runtime.close()
        sys.stderr.flush()
        os._exit(code)  # engine threads may be stuck in native code
    return code


def is_dial_in(argv: Sequence[str]) -> bool:
    """``python -m orchestrator.host`` serves both: spawned hosts get --identity, dial-ins not."""
    return any(a.split("=", 1)[0] in ("--connect", "--config") for a in argv)


__all__ = ["DialInRuntime", "DialInSettings", "RuntimeState", "is_dial_in", "main"]
