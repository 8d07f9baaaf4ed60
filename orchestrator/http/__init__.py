"""The coordinator's OpenAI-compatible HTTP face (``python -m orchestrator serve --http``).

Needs the ``http`` extra (FastAPI, uvicorn, python-multipart, prometheus-client). See
:mod:`orchestrator.http.app`.
"""

from orchestrator.http.app import HttpFace, create_app

__all__ = ["HttpFace", "create_app"]
