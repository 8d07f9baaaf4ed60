"""Coordinator configuration: dataclasses with units in their names, loaded from TOML.

Every timeout, interval and limit of the coordinator lives here with its default, so the whole
behaviour can be read (and tuned) in one place. ``load_config`` refuses a bad file at start with
one line naming the file, the key and the fix; nothing half-configured ever runs.

Shape of the file (see ``orchestrator.toml`` at the repo root for a full example)::

    [coordinator]
    heartbeat_interval_s = 0.25

    [hosts.mlx_host]
    env = "mlx_host"                         # envs/mlx_host, built by `nox -s hosts`
    engine = "mlx_host.engine:MlxAudioEngine"
    [hosts.mlx_host.models]
    qwen3-asr = "mlx-community/Qwen3-ASR-0.6B-8bit"

    [models.qwen3-asr]
    hosts = ["mlx_host", "legacy_host"]      # fallback order
    aliases = ["qwen3"]
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.wire.contract import (
    DEFAULT_HEARTBEAT_INTERVAL_S,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_ORPHAN_TIMEOUT_S,
    SegmenterSettings,
)
from orchestrator.wire.errors import ConfigError, OrchestratorError

CURRENT_PYTHON = "current"
#: Field metadata key of a numeric field's allowed range (see :func:`bounded`).
RANGE = "range"


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric config field accepts; ``None`` leaves that side open.

    Checked generically by ``_check_ranges`` from each field's metadata, so a new limit gets its
    check by declaring its range where it is declared, not by a hand-written ``if``.
    """

    low: float | None = None
    high: float | None = None
    #: ``low`` itself is refused (``> low`` rather than ``>= low``).
    low_open: bool = False

    def allows(self, value: float) -> bool:
        # Written so NaN fails every comparison and is refused.
        if self.low is not None and not (value > self.low if self.low_open else value >= self.low):
            return False
        return self.high is None or value <= self.high

    def __str__(self) -> str:
        low = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        high = "" if self.high is None else f"<= {self.high:g}"
        return " and ".join(part for part in (low, high) if part) or "any number"


#: Shorthands for the common ranges.
POSITIVE = Range(0, low_open=True)
AT_LEAST_ONE = Range(1)
NON_NEGATIVE = Range(0)
#: A whole day: longer than any honest timeout, short enough to catch a unit mistake (ms for s).
DAY_S = 86_400.0


def bounded(default: Any, allowed: Range) -> Any:
    """A dataclass field with a default and the range ``load_config`` enforces."""
    return dataclasses.field(default=default, metadata={RANGE: allowed})


def _seconds(default: float, high: float = DAY_S) -> Any:
    """A positive, finite duration in seconds."""
    return bounded(default, Range(0, high, low_open=True))


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    """When and how often a dead or hung host is restarted (jupyter_client's restarter, with backoff)."""

    backoff_initial_s: float = bounded(0.2, Range(0, DAY_S))  # 0: restart at once
    backoff_max_s: float = bounded(5.0, Range(0, DAY_S))
    backoff_factor: float = bounded(2.0, Range(1, 100))
    #: More restarts than this inside ``restart_window_s`` marks the host failed.
    max_restarts: int = bounded(5, NON_NEGATIVE)
    restart_window_s: float = _seconds(60.0)
    #: A host up this long is stable again: its backoff resets.
    stable_after_s: float = _seconds(10.0)


@dataclasses.dataclass(frozen=True)
class HostConfig:
    """One model host: where its env is, which engine it runs, what it serves and its limits."""

    name: str
    engine: str
    #: Model name -> hub id or local path, loaded (and warmed up) before the host is ready.
    models: Mapping[str, str]
    #: Loaded at their first request: big or rarely used models that should not slow start-up.
    on_demand_models: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Env name under envs/ (built by `nox -s hosts`); or leave empty and set ``python``.
    env: str = ""
    #: An interpreter to use instead of an env: a path, or "current" (tests and synthetic hosts).
    python: str = ""
    replicas: int = bounded(1, Range(1, 64))
    engine_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    model_options: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    #: Requests sent to one replica at once; more wait in the coordinator's bounded queue.
    max_inflight: int = bounded(4, Range(1, 4096))
    engine_threads: int = bounded(1, Range(1, 256))
    max_streams: int = bounded(32, Range(1, 100_000))
    ready_timeout_s: float = _seconds(120.0)
    #: RSS past this drains then recycles the replica; 0 disables the ceiling.
    memory_limit_mb: int = bounded(0, NON_NEGATIVE)
    #: A draining replica is recycled after this long even if streams still use it.
    drain_timeout_s: float = _seconds(30.0)
    #: An on-demand model nobody used this long is unloaded and its memory returned (the next
    #: request loads it again); 0 keeps loaded models until the host stops.
    idle_unload_s: float = bounded(0.0, Range(0, DAY_S))
    restart: RestartPolicy = dataclasses.field(default_factory=RestartPolicy)
    env_vars: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Started elsewhere (systemd, launchd, Kubernetes) and dialling in to ``[remote] listen``:
    #: never spawned or killed here; ``replicas`` is how many may be registered at once, and
    #: ``models`` what the coordinator routes to them (each host reports what it really serves).
    external: bool = False

    @property
    def all_models(self) -> dict[str, str]:
        return {**self.models, **self.on_demand_models}


@dataclasses.dataclass(frozen=True)
class ModelRoute:
    """A model name clients ask for: its fallback order of hosts and its other names."""

    name: str
    #: The fallback order, first host first. Loaded on macOS, this is ``hosts_macos`` when set.
    hosts: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    #: The fallback order on macOS, where MLX runs on Apple silicon's GPU (Metal) and is the
    #: fastest stack, while on Linux its CPU backend is the slowest. Empty: ``hosts`` everywhere.
    #: The same hosts as ``hosts`` in another order, so a route serves the same on every machine.
    hosts_macos: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class CoordinatorSettings:
    """The coordinator's own timings and limits."""

    #: Where ipc sockets and the connection file live; empty means a private per-user folder.
    runtime_dir: str = ""
    #: Client endpoint of a standalone coordinator: empty means ipc in runtime_dir; a tcp
    #: endpoint must name a loopback address unless ``allow_remote`` is set.
    client_endpoint: str = ""
    allow_remote: bool = False
    heartbeat_interval_s: float = _seconds(DEFAULT_HEARTBEAT_INTERVAL_S, high=60.0)
    #: Missed heartbeat intervals before a host is deemed hung (Paranoid Pirate's liveness).
    heartbeat_liveness: int = bounded(8, Range(1, 1000))
    #: A host waits this long without hearing the coordinator before it exits on its own.
    host_orphan_timeout_s: float = _seconds(DEFAULT_ORPHAN_TIMEOUT_S)
    request_timeout_s: float = _seconds(30.0)
    #: A request still running this long past its deadline gets its host recycled.
    stuck_request_grace_s: float = bounded(5.0, Range(0, DAY_S))
    #: Requests waiting for a free replica, across all models; full means "overloaded".
    max_queue: int = bounded(1024, AT_LEAST_ONE)
    max_message_bytes: int = bounded(DEFAULT_MAX_MESSAGE_BYTES, Range(4096, 2**31 - 1))
    max_audio_s: float = _seconds(600.0)
    max_streams: int = bounded(256, Range(1, 100_000))
    #: An operator's model load or unload waits this long for every replica's answer.
    model_op_timeout_s: float = _seconds(300.0)
    #: A stream whose host died waits this long for another replica before it fails.
    stream_failover_timeout_s: float = _seconds(30.0)
    #: A stream with no audio or close for this long is closed (its client is presumed gone).
    stream_idle_timeout_s: float = _seconds(120.0)
    #: Stop: ask, wait this long, SIGTERM, wait term_grace_s, SIGKILL.
    stop_grace_s: float = bounded(2.0, Range(0, 3600))
    term_grace_s: float = bounded(2.0, Range(0, 3600))
    tick_interval_s: float = _seconds(0.05, high=10.0)
    log_format: str = "text"
    metrics_port: int = bounded(0, Range(0, 65535))


@dataclasses.dataclass(frozen=True)
class HttpSettings:
    """The OpenAI-compatible HTTP face (``serve --http``, ``orchestrator.http``): the ``[http]``
    table."""

    #: Uploads over this many bytes are refused with 413 before they are read whole.
    max_upload_bytes: int = bounded(25 * 1024 * 1024, AT_LEAST_ONE)
    #: Uploads received and transcribed at once; one more is refused with 429.
    max_concurrent_uploads: int = bounded(8, Range(1, 100_000))
    #: The Retry-After (seconds) sent with a 429.
    retry_after_s: int = bounded(1, Range(0, 3600))
    #: A file of API keys, one per line; when set, every /v1 call needs ``Authorization: Bearer
    #: KEY``. Empty: no keys (the face listens on loopback unless told otherwise).
    api_keys_file: str = ""
    #: Audio streamed to the coordinator per message for ``stream=true`` answers.
    stream_chunk_ms: int = bounded(200, Range(10, 10_000))


@dataclasses.dataclass(frozen=True)
class RemoteSettings:
    """The ``[remote]`` table: where hosts on other machines dial in, and with which keys."""

    #: The host socket's TCP endpoint for external hosts, e.g. "tcp://0.0.0.0:5560"; empty: none.
    listen: str = ""
    #: Folder with coordinator.key_secret and the allow-lists hosts/*.key and clients/*.key
    #: (``python -m orchestrator keys``); relative to the config file.
    keys_dir: str = ""
    #: No Curve: only for a loopback ``listen`` (tests, one machine), never across machines.
    plaintext: bool = False
    #: A silent external replica is unhealthy after heartbeat_liveness missed heartbeats and
    #: gone (its slot free, its health row "stopped") after this long.
    gone_after_s: float = _seconds(30.0)
    #: Unregistered hosts repeat their hello this often until the coordinator welcomes them.
    hello_interval_s: float = _seconds(1.0)


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole configuration: coordinator settings, hosts and model routes."""

    coordinator: CoordinatorSettings
    hosts: Mapping[str, HostConfig]
    models: Mapping[str, ModelRoute]
    segmenter: SegmenterSettings = dataclasses.field(default_factory=SegmenterSettings)
    http: HttpSettings = dataclasses.field(default_factory=HttpSettings)
    remote: RemoteSettings = dataclasses.field(default_factory=RemoteSettings)
    source: str = "<memory>"
    #: The project root whose envs/ and hosts/ the host envs are looked up in.
    root: str = ""

    def resolve_model(self, name: str) -> ModelRoute | None:
        """The route for a model name or one of its aliases."""
        route = self.models.get(name)
        if route is not None:
            return route
        for candidate in self.models.values():
            if name in candidate.aliases:
                return candidate
        return None


def load_config(
    path: str | Path, *, root: str | Path | None = None, platform: str = sys.platform
) -> Config:
    """Read and validate a TOML config; raises ConfigError naming file, key and fix.

    ``platform`` (``sys.platform``'s spelling) picks each route's fallback order: ``darwin``
    takes ``hosts_macos`` where a route sets it."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (fix: pass --config PATH)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc} (fix: correct the syntax)") from None
    return config_from_dict(raw, source=str(path), root=root, platform=platform)


def config_from_dict(
    raw: Mapping[str, Any],
    *,
    source: str = "<memory>",
    root: str | Path | None = None,
    platform: str = sys.platform,
) -> Config:
    """Build a Config from already-parsed TOML data (tests use this directly)."""
    _check_keys(
        raw,
        {"coordinator", "hosts", "models", "segmenter", "restart", "remote", "http"},
        source,
        "",
    )
    default_restart = _build(RestartPolicy, raw.get("restart", {}), source, "restart")
    hosts: dict[str, HostConfig] = {}
    for name, table in _table(raw.get("hosts", {}), source, "hosts").items():
        hosts[name] = _build_host(
            name, _table(table, source, f"hosts.{name}"), default_restart, source
        )
    if not hosts:
        raise ConfigError(f"{source}: [hosts] is empty (fix: declare at least one [hosts.NAME])")
    models = _build_routes(raw.get("models", {}), hosts, source, macos=platform == "darwin")
    remote = _build(RemoteSettings, raw.get("remote", {}), source, "remote")
    _check_remote(remote, hosts, source)
    return Config(
        coordinator=_build(CoordinatorSettings, raw.get("coordinator", {}), source, "coordinator"),
        hosts=hosts,
        models=models,
        segmenter=_build(SegmenterSettings, raw.get("segmenter", {}), source, "segmenter"),
        http=_build(HttpSettings, raw.get("http", {}), source, "http"),
        remote=remote,
        source=source,
        root=str(root or _project_root()),
    )


def _project_root() -> Path:
    """Where hosts/ and envs/ live: $ORCHESTRATOR_ROOT, else this package's checkout."""
    from orchestrator.envs import (
        checks as envs,  # deferred: keeps this module importable on its own
    )

    return envs.project_root()


def _build_host(
    name: str, table: Mapping[str, Any], default_restart: RestartPolicy, source: str
) -> HostConfig:
    where = f"hosts.{name}"
    fields = dict(table)
    restart = default_restart
    if "restart" in fields:
        merged = {
            **dataclasses.asdict(default_restart),
            **_table(fields.pop("restart"), source, where),
        }
        restart = _build(RestartPolicy, merged, source, f"{where}.restart")
    models = _table(fields.get("models", {}), source, f"{where}.models")
    lazy = _table(fields.get("on_demand_models", {}), source, f"{where}.on_demand_models")
    if not models and not lazy:
        raise ConfigError(
            f"{source}: {where}.models is empty (fix: map model names to hub ids or paths)"
        )
    for table_name, table in (("models", models), ("on_demand_models", lazy)):
        for model, ref in table.items():
            if not isinstance(ref, str) or not ref:
                raise ConfigError(
                    f"{source}: {where}.{table_name}.{model} must be a hub id or path string"
                )
    both = sorted(set(models) & set(lazy))
    if both:
        raise ConfigError(f"{source}: {where}: {both[0]!r} is in both models and on_demand_models")
    fields.setdefault("models", {})
    fields.setdefault("engine", "")
    host = _build(HostConfig, {**fields, "name": name, "restart": restart}, source, where)
    if host.external:
        if host.env or host.python:
            raise ConfigError(
                f"{source}: {where} is external (started elsewhere): it takes no 'env' or "
                "'python' (fix: remove them, or external = false)"
            )
        if host.replicas < 1:
            raise ConfigError(f"{source}: {where}.replicas must be >= 1")
        return host
    if bool(host.env) == bool(host.python):
        raise ConfigError(
            f"{source}: {where} needs exactly one of 'env' (a built env under envs/) or 'python' "
            f'(fix: set env = "{name}")'
        )
    if host.python and host.python != CURRENT_PYTHON:
        _check_interpreter(Path(host.python), source, f"{where}.python")
    if ":" not in host.engine:
        raise ConfigError(
            f"{source}: {where}.engine must be 'package.module:Class', got {host.engine!r}"
        )
    return host


def _check_interpreter(python: Path, source: str, where: str) -> None:
    """A configured interpreter must exist and be executable, or no host could ever start."""
    if not python.is_file():
        problem = "does not exist"
    elif not os.access(python, os.X_OK):
        problem = "is not executable"
    else:
        return
    raise ConfigError(
        f"{source}: {where} = {str(python)!r} {problem} "
        f'(fix: name a Python interpreter, write "{CURRENT_PYTHON}", or use env = NAME)'
    )


def _check_remote(remote: RemoteSettings, hosts: Mapping[str, HostConfig], source: str) -> None:
    """External hosts need a listen endpoint; TCP needs keys unless plaintext on loopback."""
    from orchestrator.wire.curve import is_loopback_endpoint  # deferred: pyzmq

    external = sorted(h.name for h in hosts.values() if h.external)
    if external and not remote.listen:
        raise ConfigError(
            f"{source}: hosts.{external[0]} is external but [remote] listen is empty "
            '(fix: set listen = "tcp://0.0.0.0:5560" under [remote])'
        )
    if not remote.listen:
        return
    if not remote.listen.startswith("tcp://"):
        raise ConfigError(
            f"{source}: remote.listen must be a tcp:// endpoint, got {remote.listen!r} "
            '(fix: listen = "tcp://0.0.0.0:5560")'
        )
    if remote.plaintext and not is_loopback_endpoint(remote.listen):
        raise ConfigError(
            f"{source}: remote.plaintext is only allowed on loopback, not {remote.listen!r} "
            "(fix: remove plaintext and set keys_dir, or listen on tcp://127.0.0.1:PORT)"
        )
    if not remote.plaintext and not remote.keys_dir:
        raise ConfigError(
            f"{source}: remote.keys_dir is empty: TCP needs CurveZMQ keys "
            '(fix: python -m orchestrator keys init KEYS_DIR, then keys_dir = "KEYS_DIR")'
        )
    if not external:
        raise ConfigError(
            f"{source}: [remote] listen is set but no host is external "
            "(fix: set external = true on the [hosts.NAME] that dial in)"
        )


def resolve_config_path(config: Config, path: str) -> Path:
    """A path from the config, relative to the config file's folder (absolute stays as is)."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or config.source.startswith("<"):
        return candidate
    return Path(config.source).resolve().parent / candidate


def _build_routes(
    raw: Any, hosts: Mapping[str, HostConfig], source: str, *, macos: bool
) -> dict[str, ModelRoute]:
    routes: dict[str, ModelRoute] = {}
    for model, table in _table(raw, source, "models").items():
        where = f"models.{model}"
        route = _build(ModelRoute, {**_table(table, source, where), "name": model}, source, where)
        if not route.hosts:
            raise ConfigError(f"{source}: {where}.hosts is empty (fix: list the hosts serving it)")
        for host in route.hosts:
            if host not in hosts:
                raise ConfigError(
                    f"{source}: {where}.hosts names {host!r}, which is not a [hosts] entry "
                    f"(fix: one of {sorted(hosts)})"
                )
            if model not in hosts[host].all_models:
                raise ConfigError(
                    f"{source}: {where}.hosts names {host!r}, which does not serve {model!r} "
                    f"(fix: add it to [hosts.{host}.models])"
                )
        if route.hosts_macos and sorted(route.hosts_macos) != sorted(route.hosts):
            raise ConfigError(
                f"{source}: {where}.hosts_macos lists {sorted(route.hosts_macos)}, hosts lists "
                f"{sorted(route.hosts)} (fix: the same hosts, in macOS's order)"
            )
        order = route.hosts_macos if macos and route.hosts_macos else route.hosts
        routes[model] = dataclasses.replace(route, hosts=tuple(order))
    # Models a host serves without a [models] entry are routed to their hosts in file order.
    for host in hosts.values():
        for model in host.all_models:
            if model not in routes:
                serving = tuple(h.name for h in hosts.values() if model in h.all_models)
                routes[model] = ModelRoute(model, serving)
    names: dict[str, str] = {}
    for route in routes.values():
        for name in (route.name, *route.aliases):
            if name in names and names[name] != route.name:
                raise ConfigError(
                    f"{source}: name {name!r} is used by both {names[name]!r} and {route.name!r}"
                )
            names[name] = route.name
    return routes


def _table(value: Any, source: str, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: {where} must be a table, got {type(value).__name__}")
    return dict(value)


def _check_keys(table: Mapping[str, Any], allowed: set[str], source: str, where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"{source}: unknown key {prefix}{unknown[0]} (fix: remove it, or use one of {sorted(allowed)})"
        )


def _build(cls: type, table: Mapping[str, Any], source: str, where: str) -> Any:
    """Instantiate a config dataclass from a table, checking unknown keys and value types."""
    table = _table(table, source, where)
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    _check_keys(table, fields, source, where)
    values: dict[str, Any] = {}
    for key, value in table.items():
        expected = hints[key]
        values[key] = _coerce(value, expected, source, f"{where}.{key}")
    _check_ranges(cls, values, source, where)
    try:
        return cls(**values)
    except OrchestratorError as exc:  # a type's own check (the segmenter's) refused the values
        raise ConfigError(f"{source}: [{where}] {exc.message} (fix: change that value)") from None


def _check_ranges(cls: type, values: Mapping[str, Any], source: str, where: str) -> None:
    """Refuse a value outside its field's declared :class:`Range`, naming file, key and range."""
    for field in dataclasses.fields(cls):
        allowed = field.metadata.get(RANGE)
        if allowed is None or field.name not in values:
            continue
        value = values[field.name]
        if not allowed.allows(value):
            raise ConfigError(
                f"{source}: {where}.{field.name} = {value!r} is out of range "
                f"(fix: use a value {allowed})"
            )


#: How a fix names a type to write ("write an integer", not "write a int").
_TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    str: 'a "quoted string"',
    bool: "true or false",
}


def _coerce(value: Any, expected: Any, source: str, where: str) -> Any:
    origin = typing.get_origin(expected)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected in (int, float, str, bool):
        if type(value) is not expected:
            raise ConfigError(
                f"{source}: {where} must be {expected.__name__}, got {type(value).__name__} "
                f"{value!r} (fix: write {_TYPE_NAMES[expected]})"
            )
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{source}: {where} must be a list of strings")
        return tuple(value)
    if origin in (Mapping, dict) or expected is Mapping:
        table = _table(value, source, where)
        args = typing.get_args(expected)
        if len(args) == 2 and args[1] is str:  # e.g. env_vars: every value must be a string
            for key, item in table.items():
                if not isinstance(item, str):
                    raise ConfigError(
                        f"{source}: {where}.{key} must be a string, got "
                        f'{type(item).__name__} {item!r} (fix: quote it: {key} = "{item}")'
                    )
        return table
    if isinstance(expected, type) and dataclasses.is_dataclass(expected):
        if isinstance(value, expected):
            return value
        return _build(expected, value, source, where)
    if origin in (typing.Union, types.UnionType):
        return value
    return value


def host_python(host: HostConfig, root: str | Path) -> Path:
    """The interpreter that runs a host: its built env's python, or the configured one."""
    if host.python == CURRENT_PYTHON:
        return Path(sys.executable)
    if host.python:
        return Path(host.python)
    from orchestrator.envs import (
        checks as envs,  # deferred: envs is only needed for real env-backed hosts
    )

    return envs.host_python(host.env, root=Path(root))


def host_environment(host: HostConfig, root: str | Path) -> dict[str, str]:
    """The environment every process run inside a host's env gets: ours, the env defaults
    (numba's cache folder), then the host's own ``env_vars``."""
    import os

    from orchestrator.envs import checks as envs  # deferred, as in host_python

    return {**os.environ, **envs.host_env_vars(Path(root)), **host.env_vars}
