"""Optional API keys: ``Authorization: Bearer KEY`` checked against a file of keys.

The keys file (``[http] api_keys_file``) holds one key per line; blank lines and ``#`` comments
are skipped. It is read once at start, never logged, and compared in constant time. No file
means no keys: every call is let in (the face listens on loopback by default).
"""

from __future__ import annotations

import hmac
from pathlib import Path

from orchestrator.http.errors import ApiError
from orchestrator.wire.errors import ConfigError


def load_api_keys(path: str | Path | None) -> frozenset[str]:
    """The keys in ``path``; an empty set when no path is given."""
    if not path:
        return frozenset()
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ConfigError(
            f"http.api_keys_file {path}: cannot read it ({exc.strerror}) "
            "(fix: point it at a readable file of keys, one per line)"
        ) from None
    keys = frozenset(
        line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")
    )
    if not keys:
        raise ConfigError(
            f"http.api_keys_file {path}: holds no key (fix: one key per line, or unset it)"
        )
    return keys


def check_bearer(authorization: str | None, keys: frozenset[str]) -> None:
    """Raise 401 unless ``authorization`` carries one of ``keys`` (nothing to check if none)."""
    if not keys:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401,
            "missing API key: send 'Authorization: Bearer KEY' (the server has keys configured)",
            code="invalid_api_key",
        )
    token = token.strip()
    # Compare against every key so the time taken does not tell which prefix matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token.encode(), key.encode())
    if not matched:
        raise ApiError(
            401,
            "invalid API key: it is not one of this server's keys",
            code="invalid_api_key",
        )
