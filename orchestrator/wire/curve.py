"""CurveZMQ on TCP links: key files, and the socket options every TCP socket of ours gets.

Key files are ZeroMQ certificates (the format of pyzmq's ``zmq.auth``, read with its
``load_certificate``), one pair per party::

    NAME.key          public key: hand it out (the coordinator's goes to hosts and clients; a
                      host's or client's goes into the coordinator's allow-list)
    NAME.key_secret   public + secret key, created 0600; refused when others can read it or
                      anyone but its owner can write it (group read is let through: that is
                      how Kubernetes mounts a Secret for a non-root pod with an fsGroup)

The coordinator's key folder holds ``coordinator.key_secret`` plus its allow-list:
``hosts/*.key`` (hosts that may dial in) and ``clients/*.key`` (remote clients). Each file's name
(without ``.key``) is how health and logs name that party.

Curve encrypts and authenticates each TCP connection; the HMAC of ``wire.protocol`` stays inside
it. A cut link is not a dead process: ZeroMQ's own heartbeats (``ZMQ_HEARTBEAT_IVL``,
``_TIMEOUT``, ``_TTL``) drop a connection whose peer fell silent, so the dialling side reconnects
as soon as the link is back. pyzmq and the standard library only: hosts import this.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import zmq
import zmq.auth

from orchestrator.wire.errors import ConfigError

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
COORDINATOR_KEY_NAME = "coordinator"
#: Allow-list folders inside the coordinator's key folder.
HOSTS_DIR = "hosts"
CLIENTS_DIR = "clients"
#: ZAP domains: which allow-list a connection is checked against.
HOSTS_DOMAIN = "hosts"
CLIENTS_DOMAIN = "clients"
#: Names become file names and health labels: keep them plain.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_BANNER = "#   ZeroMQ CURVE {kind} certificate, made by `python -m orchestrator keys generate`\n"


@dataclasses.dataclass(frozen=True, slots=True)
class KeyPair:
    """One party's Curve keys, Z85 text as ZeroMQ takes them."""

    name: str
    public: bytes
    secret: bytes = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True, slots=True)
class LinkTimings:
    """ZeroMQ's own keepalive on a TCP connection; derived from the heartbeat settings."""

    heartbeat_interval_s: float
    #: No traffic from the peer this long closes the connection (then the dialler reconnects).
    heartbeat_timeout_s: float
    #: Reconnect attempts back off up to this.
    reconnect_max_s: float = 1.0


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(
            f"key name {name!r} must be letters, digits, '.', '_' or '-' (at most 64) "
            "(fix: pick a plain name such as gpu-box-1)"
        )
    return name


def generate_keypair(directory: str | Path, name: str, *, overwrite: bool = False) -> KeyPair:
    """Write ``NAME.key`` (0644) and ``NAME.key_secret`` (0600) into ``directory`` (made 0700)."""
    check_name(name)
    folder = Path(directory)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    public_path, secret_path = folder / f"{name}{PUBLIC_SUFFIX}", folder / f"{name}{SECRET_SUFFIX}"
    if not overwrite and (public_path.exists() or secret_path.exists()):
        raise ConfigError(
            f"{secret_path} already exists (fix: choose another name, or pass --force to replace it)"
        )
    public, secret = zmq.curve_keypair()
    _write_certificate(secret_path, public, secret, mode=0o600)
    _write_certificate(public_path, public, None, mode=0o644)
    return KeyPair(name, public, secret)


def write_public_key(path: str | Path, public: bytes) -> Path:
    """A public-only certificate (what ``keys authorize`` drops into an allow-list)."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_certificate(path, public, None, mode=0o644)
    return path


def _write_certificate(path: Path, public: bytes, secret: bytes | None, *, mode: int) -> None:
    lines = [_BANNER.format(kind="secret" if secret else "public"), "curve\n"]
    lines.append(f'    public-key = "{public.decode()}"\n')
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"\n')
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(lines)
    os.chmod(tmp, mode)  # the umask may have narrowed it; never widened past ``mode``
    os.replace(tmp, path)


def load_keypair(directory: str | Path, name: str) -> KeyPair:
    """Read ``directory/NAME.key_secret``; refuse it if others can read or write it."""
    path = Path(directory) / f"{check_name(name)}{SECRET_SUFFIX}"
    if not path.is_file():
        raise ConfigError(
            f"no secret key {path} (fix: python -m orchestrator keys generate {directory} --name {name})"
        )
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o027:
        raise ConfigError(f"{path} is readable by others (mode {mode:o}) (fix: chmod 600 {path})")
    public, secret = _read_certificate(path)
    if secret is None:
        raise ConfigError(f"{path} holds no secret-key line (fix: generate the pair again)")
    return KeyPair(name, public, secret)


def load_public_key(path: str | Path) -> bytes:
    """The public key of a ``.key`` (or ``.key_secret``) file."""
    return _read_certificate(Path(path))[0]


def _read_certificate(path: Path) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path}: not a key file ({exc}) (fix: point at a NAME.key file)"
        ) from None
    for key in (public, secret):
        if key is not None and len(key) != 40:
            raise ConfigError(f"{path}: a key is not 40 Z85 characters (fix: generate it again)")
    return public, secret


def load_allow_list(directory: str | Path) -> dict[bytes, str]:
    """Every ``*.key`` in ``directory``: public key (Z85) -> the file's name. Missing: empty."""
    folder = Path(directory)
    if not folder.is_dir():
        return {}
    return {
        load_public_key(path): path.name[: -len(PUBLIC_SUFFIX)]
        for path in sorted(folder.glob(f"*{PUBLIC_SUFFIX}"))
    }


# ---------------------------------------------------------------------- sockets
def speaks_curve(endpoint: str) -> bool:
    """Whether the coordinator serves this client endpoint with CurveZMQ: TCP off loopback."""
    return endpoint.startswith("tcp://") and not is_loopback_endpoint(endpoint)


def is_loopback_endpoint(endpoint: str) -> bool:
    """``tcp://127.x.y.z:P``, ``tcp://[::1]:P`` or ``tcp://localhost:P``."""
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def set_link_timings(sock: zmq.Socket[Any], timings: LinkTimings) -> None:
    """ZeroMQ heartbeats and reconnect backoff on a TCP socket (before its bind or connect)."""
    ivl_ms = max(1, int(timings.heartbeat_interval_s * 1000))
    timeout_ms = max(ivl_ms, int(timings.heartbeat_timeout_s * 1000))
    sock.setsockopt(zmq.HEARTBEAT_IVL, ivl_ms)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, timeout_ms)
    # The peer drops us too if our pings stop (TTL travels in our PING).
    sock.setsockopt(zmq.HEARTBEAT_TTL, timeout_ms)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, max(100, int(timings.reconnect_max_s * 1000)))


def make_curve_server(sock: zmq.Socket[Any], keys: KeyPair, domain: str) -> None:
    """Curve server options for the next bind of ``sock``; the ZAP handler for ``domain`` must
    already be bound in the socket's context, or libzmq lets every client key in."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())


def make_curve_client(sock: zmq.Socket[Any], keys: KeyPair, server_public: bytes) -> None:
    """Curve client options for the next connect of ``sock``."""
    sock.setsockopt(zmq.CURVE_SERVERKEY, server_public)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)


def make_plaintext_server(sock: zmq.Socket[Any], endpoint: str, domain: str) -> None:
    """No Curve: allowed on loopback only, and the ZAP handler still sees (and checks) it."""
    if not is_loopback_endpoint(endpoint):
        raise ConfigError(
            f"plaintext tcp on {endpoint} is not loopback "
            "(fix: remove plaintext = true, or bind tcp://127.0.0.1:PORT)"
        )
    sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
