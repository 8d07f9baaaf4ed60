"""``python -m orchestrator serve --http``: the HTTP face of a standalone coordinator, for real.

The command runs as a subprocess with a synthetic config; the official openai client talks to
the address it prints, and a SIGTERM stops uvicorn, the coordinator and every host.
"""

from __future__ import annotations

import io
import signal
import tempfile
from pathlib import Path

import httpx
import numpy as np
import openai

from cli_support import ServeProcess, run_cli, short_tmp_dir, synthetic_toml, write_config
from orchestrator.audio.wav import write_wav
from support import assert_fingerprint, assert_gone, tone_pcm16


def _wav(pcm: np.ndarray) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.wav"
        write_wav(path, pcm.astype(np.float32) / 32768.0, 16_000)
        return path.read_bytes()


def test_serve_http_answers_the_openai_client_and_stops_on_sigterm() -> None:
    with short_tmp_dir() as tmp:
        raw = synthetic_toml(tmp / "rt", {"syn": {"models": {"echo": "synthetic"}}})
        keys = tmp / "keys"
        keys.write_text("sk-cli\n")
        serve = ServeProcess(
            "--config", str(write_config(tmp, raw)),
            "--http", "127.0.0.1:0", "--api-keys-file", str(keys),
        )  # fmt: skip
        pids: set[int] = set()
        try:
            info = serve.wait_listening()
            url = info["http"]
            assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
            sdk = openai.OpenAI(base_url=url + "/v1", api_key="sk-cli", max_retries=0)
            pcm = tone_pcm16(8_000, seed=9)
            out = sdk.audio.transcriptions.create(
                model="echo", file=("a.wav", io.BytesIO(_wav(pcm)), "audio/wav")
            )
            assert_fingerprint(out.text, pcm)
            health = httpx.get(url + "/health", timeout=10).json()  # no key needed for probes
            pids = {r["pid"] for r in health["replicas"]}
            assert serve.stop(signal.SIGTERM) == 0
        finally:
            serve.kill()
        assert pids and None not in pids
        assert_gone(pids)


def test_serve_http_refuses_a_non_loopback_address_in_one_line() -> None:
    with short_tmp_dir() as tmp:
        raw = synthetic_toml(tmp / "rt", {"syn": {"models": {"echo": "synthetic"}}})
        done = run_cli("serve", "--config", str(write_config(tmp, raw)), "--http", "0.0.0.0:0")
        assert done.returncode == 1
        lines = done.stderr.strip().splitlines()
        assert lines[-1].startswith("orchestrator serve: --http '0.0.0.0:0' is not a loopback")
        assert "Traceback" not in done.stderr
        bad = run_cli("serve", "--config", str(write_config(tmp, raw)), "--http", "8000")
        assert "is not HOST:PORT" in bad.stderr and bad.returncode == 1
