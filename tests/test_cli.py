"""The command line end to end: ``serve``, ``health`` and ``transcribe`` as real subprocesses.

Coordinators run synthetic hosts (real host runtime, real sockets; only the model is fake), either
in this process with a public endpoint and a connection file, or as ``python -m orchestrator serve``.
"""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cli_support import (
    REPO,
    ServeProcess,
    cli_env,
    public_coordinator,
    run_cli,
    short_tmp_dir,
    synthetic_toml,
    write_config,
)
from orchestrator.audio.pcm import float_to_pcm16
from orchestrator.audio.resample import resample
from orchestrator.audio.wav import read_wav, write_wav
from orchestrator.cli import health as health_cli
from orchestrator.cli import logs
from orchestrator.client import Client
from orchestrator.coordinator.config import config_from_dict
from orchestrator.host.synthetic import parse_fingerprint
from support import assert_gone, wait_for

HOSTS_TWO_SERVE_ECHO_ONE_SERVES_SOLO = {
    "alpha": {"models": {"echo": "synthetic"}},
    "beta": {"models": {"echo": "synthetic"}},
    "gamma": {"models": {"solo": "synthetic"}},
}


@pytest.fixture
def tmp_short() -> Iterator[Path]:
    with short_tmp_dir() as path:
        yield path


def _health(connection_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("health", "--connection-file", str(connection_file), "--timeout", "5", *extra)


def _wav_pcm16(path: Path) -> np.ndarray:
    """The int16 samples a 16-bit WAV holds (what the synthetic engine fingerprints at 16 kHz)."""
    audio, _ = read_wav(path)
    return np.frombuffer(float_to_pcm16(audio), dtype="<i2")


# ---------------------------------------------------------------------- health
def test_health_exit_codes_follow_the_coordinator_ready_degraded_down(tmp_short: Path) -> None:
    config = config_from_dict(
        synthetic_toml(tmp_short / "rt", HOSTS_TWO_SERVE_ECHO_ONE_SERVES_SOLO)
    )
    with public_coordinator(config) as coord:
        assert coord.connection_file is not None
        client = coord.sync_client()
        try:
            ready = _health(coord.connection_file)
            assert ready.returncode == 0, ready.stdout + ready.stderr
            assert "status: READY" in ready.stdout
            for name in ("alpha.0", "beta.0", "gamma.0"):
                assert name in ready.stdout

            # beta down, but alpha still serves echo and gamma solo: degraded.
            client.control("stop", "beta")
            wait_for(
                lambda: coord.health()["replicas"][1]["state"] == "stopped", what="beta stopped"
            )
            degraded = _health(coord.connection_file)
            assert degraded.returncode == 1, degraded.stdout + degraded.stderr
            assert "status: DEGRADED" in degraded.stdout
            assert "beta.0: stopped" in degraded.stdout
            as_json = _health(coord.connection_file, "--json")
            assert as_json.returncode == 1
            snapshot = json.loads(as_json.stdout)
            assert snapshot["status"] == "degraded"
            assert {r["name"]: r["state"] for r in snapshot["replicas"]} == {
                "alpha.0": "ready",
                "beta.0": "stopped",
                "gamma.0": "ready",
            }

            # gamma down: nothing serves solo any more.
            client.control("stop", "gamma")
            wait_for(lambda: coord.health()["models"]["solo"]["ready"] == [], what="solo unserved")
            down = _health(coord.connection_file)
            assert down.returncode == 2, down.stdout + down.stderr
            assert "status: DOWN" in down.stdout
            assert "solo: NO READY HOST" in down.stdout
            assert json.loads(_health(coord.connection_file, "--json").stdout)["status"] == "down"
        finally:
            client.close()


def test_health_table_shows_each_replica_with_its_figures(tmp_short: Path) -> None:
    config = config_from_dict(
        synthetic_toml(tmp_short / "rt", {"syn": {"models": {"echo": "synthetic"}, "replicas": 2}})
    )
    with public_coordinator(config) as coord:
        assert coord.connection_file is not None
        client = coord.sync_client()
        try:
            client.transcribe(np.ones(1600, np.int16), sample_rate=16000, model="echo")
        finally:
            client.close()
        result = _health(coord.connection_file)
        health = coord.health()
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("REPLICA"))
    for column in ("STATE", "PID", "UPTIME", "RSS", "CPU%", "RESTARTS", "HEARTBEAT", "INFLIGHT", "SERVED", "ERRORS", "MODELS", "VAD", "ENGINE", "HF-HUB", "TRANSFORMERS"):  # fmt: skip
        assert column in header
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("syn.")}
    assert set(rows) == {"syn.0", "syn.1"}
    for rep in health["replicas"]:
        row = rows[rep["name"]]
        assert row[1] == "ready" and row[2] == str(rep["pid"])
        assert row[-3] == "synthetic"  # ENGINE: no distribution of that name, so no version
        assert row[-4] == "silero"  # VAD: the default loaded
    assert sum(int(rows[name][-7]) for name in rows) == 1  # SERVED: the one request
    assert "coordinator: pid" in result.stdout and "requests 1" in result.stdout


def test_health_exit_2_when_the_coordinator_does_not_answer(tmp_short: Path) -> None:
    missing = run_cli("health", "--connection-file", str(tmp_short / "nope.json"), "--timeout", "1")
    assert missing.returncode == 2
    assert "status: DOWN" in missing.stdout and "Traceback" not in missing.stderr

    # A well-formed file naming a socket nobody listens on: no answer within the timeout.
    bogus = tmp_short / "bogus.json"
    bogus.write_text(
        json.dumps({"endpoint": f"ipc://{tmp_short}/nobody.sock", "key": "00" * 32, "pid": 1})
    )
    silent = run_cli("health", "--connection-file", str(bogus), "--timeout", "0.5", "--json")
    assert silent.returncode == 2
    assert json.loads(silent.stdout)["status"] == "down"

    garbage = tmp_short / "garbage.json"
    garbage.write_text("not json at all")
    assert run_cli("health", "--connection-file", str(garbage), "--timeout", "0.5").returncode == 2


def test_health_with_the_wrong_key_gets_no_answer_and_the_frame_is_counted(tmp_short: Path) -> None:
    config = config_from_dict(
        synthetic_toml(tmp_short / "rt", {"syn": {"models": {"echo": "synthetic"}}})
    )
    with public_coordinator(config) as coord:
        forged = tmp_short / "forged.json"
        forged.write_text(json.dumps({**coord.connection_info(), "key": "11" * 32}))
        result = run_cli("health", "--connection-file", str(forged), "--timeout", "0.5")
        assert result.returncode == 2
        dropped = coord.health()["coordinator"]["dropped"]["clients"]
        assert sum(dropped.values()) >= 1, dropped


def test_health_watch_redraws_until_interrupted(tmp_short: Path) -> None:
    config = config_from_dict(
        synthetic_toml(tmp_short / "rt", {"syn": {"models": {"echo": "synthetic"}}})
    )
    with public_coordinator(config) as coord:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "health", "--connection-file", str(coord.connection_file), "--watch", "0.2"],
            stdout=subprocess.PIPE,
            text=True,
            env=cli_env(),
            cwd=REPO,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            seen = 0
            while seen < 3:  # three redraws, each starting with a clear-screen
                line = proc.stdout.readline()
                assert line, "health --watch stopped on its own"
                seen += line.count("\x1b[2J")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0  # the last status seen was ready
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# ---------------------------------------------------------------------- serve
def test_serve_subprocess_round_trips_a_request_and_stops_every_host_on_sigterm(
    tmp_short: Path,
) -> None:
    raw = synthetic_toml(
        tmp_short / "rt", {"syn": {"models": {"echo": "synthetic"}, "replicas": 2}}
    )
    config_path = write_config(tmp_short, raw)
    serve = ServeProcess(
        "--config", str(config_path), "--log-format", "json", "--log-level", "INFO"
    )
    try:
        info = serve.wait_listening()
        assert info["status"] == "ready"
        assert info["endpoint"].startswith("ipc://")
        connection_file = Path(info["connection file"])
        assert connection_file.stat().st_mode & 0o077 == 0  # the key is for this user only

        with Client.connect(connection_file) as client:
            pcm = np.arange(-4000, 4000, dtype=np.int16)
            result = client.transcribe(pcm, sample_rate=16000, model="echo")
            fp = parse_fingerprint(result.text)
            assert fp["n"] == pcm.size and fp["sum"] == int(pcm.astype(np.int64).sum())
            assert result.host == "syn"
            pids = {r["pid"] for r in client.health()["replicas"]}
        assert len(pids) == 2 and None not in pids

        assert _health(connection_file).returncode == 0
        assert serve.stop(signal.SIGTERM) == 0
    finally:
        serve.kill()
    assert_gone(pids)
    assert not connection_file.exists()
    assert serve.stdout[-1] == "coordinator stopped"

    # --log-format json: every stderr line is one JSON object; host output carries its host.
    records = [json.loads(line) for line in serve.stderr if line.strip()]
    assert records and all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    assert any(
        r.get("host") in ("syn.0", "syn.1") and r["logger"] == "orchestrator.hosts" for r in records
    )
    assert any("stopping every host" in r["msg"] for r in records)


def test_serve_on_loopback_tcp_with_any_free_port(tmp_short: Path) -> None:
    raw = synthetic_toml(tmp_short / "rt", {"syn": {"models": {"echo": "synthetic"}}})
    serve = ServeProcess(
        "--config", str(write_config(tmp_short, raw)), "--endpoint", "tcp://127.0.0.1:0"
    )
    try:
        info = serve.wait_listening()
        assert info["endpoint"].startswith("tcp://127.0.0.1:") and not info["endpoint"].endswith(
            ":0"
        )
        with Client.connect(info["connection file"]) as client:
            assert (
                client.transcribe(np.ones(800, np.int16), sample_rate=16000, model="echo").host
                == "syn"
            )
        assert serve.stop(signal.SIGINT) == 0
    finally:
        serve.kill()


def test_serve_refuses_a_bad_config_in_one_line(tmp_short: Path) -> None:
    raw = synthetic_toml(
        tmp_short / "rt", {"syn": {"models": {"echo": "synthetic"}, "replicsa": 2}}
    )
    result = run_cli("serve", "--config", str(write_config(tmp_short, raw)))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "hosts.syn.replicsa" in lines[0] and "orchestrator.toml" in lines[0]


def test_serve_refuses_a_remote_endpoint_without_allow_remote(tmp_short: Path) -> None:
    raw = synthetic_toml(tmp_short / "rt", {"syn": {"models": {"echo": "synthetic"}}})
    result = run_cli(
        "serve", "--config", str(write_config(tmp_short, raw)), "--endpoint", "tcp://0.0.0.0:0"
    )
    assert (
        result.returncode == 1
        and "allow_remote" in result.stderr
        and "Traceback" not in result.stderr
    )


# ---------------------------------------------------------------------- transcribe
def test_transcribe_with_config_embeds_a_coordinator_and_sends_to_every_host(
    tmp_short: Path,
) -> None:
    raw = synthetic_toml(
        tmp_short / "rt",
        {"first": {"models": {"echo": "synthetic"}}, "second": {"models": {"echo": "synthetic"}}},
        models={"echo": {"hosts": ["first", "second"], "aliases": ["e"]}},
    )
    config_path = write_config(tmp_short, raw)
    wav = tmp_short / "clip.wav"
    rng = np.random.default_rng(7)
    write_wav(wav, rng.uniform(-0.5, 0.5, 24_000), 16_000)
    pcm = _wav_pcm16(wav)

    result = run_cli("transcribe", str(wav), "--model", "e", "--all-hosts", "--config", str(config_path), "--language", "fr", "--max-tokens", "8", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [r["host"] for r in report["results"]] == ["first", "second"]
    for outcome in report["results"]:
        fp = parse_fingerprint(outcome["text"])
        assert fp["n"] == pcm.size == 24_000
        assert fp["sum"] == int(pcm.astype(np.int64).sum())
        assert outcome["language"] == "fr"  # --language reached the engine
        assert outcome["timings"]["total_s"] >= outcome["timings"]["compute_s"] >= 0
    assert report["health"]["status"] == "ready"
    assert sorted(r["served"] for r in report["health"]["replicas"]) == [1, 1]
    assert_gone({r["pid"] for r in report["health"]["replicas"]})  # the embedded hosts stopped


def test_transcribe_resamples_a_44k_file_on_a_running_coordinator(tmp_short: Path) -> None:
    """The client converts the file once to 16 kHz PCM16 (the engine's rate) before sending."""
    config = config_from_dict(
        synthetic_toml(tmp_short / "rt", {"syn": {"models": {"echo": "synthetic"}}})
    )
    wav = tmp_short / "clip44.wav"
    t = np.arange(44_100) / 44_100
    write_wav(wav, 0.3 * np.sin(2 * np.pi * 440 * t), 44_100)
    audio, rate = read_wav(wav)
    expected = np.frombuffer(float_to_pcm16(resample(audio, rate, 16_000)), dtype="<i2")
    with public_coordinator(config) as coord:
        result = run_cli(
            "transcribe",
            str(wav),
            "--model",
            "echo",
            "--connection-file",
            str(coord.connection_file),
        )
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0] == f"file: {wav} (1.00 s, 44100 Hz, 1 channel, wav pcm_s16le)"
    assert out[2] == "== syn (pieces per replica: syn.0 1): echo =="
    fp = parse_fingerprint(out[3])
    assert abs(fp["n"] - expected.size) <= 1  # streamed resampling: the same length
    assert "1 piece(s) in" in out[4] and "REPLICA" in result.stdout
    assert "status: READY" in result.stdout


def test_transcribe_reports_an_unknown_model_and_a_missing_file_in_one_line(
    tmp_short: Path,
) -> None:
    wav = tmp_short / "clip.wav"
    write_wav(wav, np.zeros(1600), 16_000)
    config = config_from_dict(
        synthetic_toml(tmp_short / "rt", {"syn": {"models": {"echo": "synthetic"}}})
    )
    with public_coordinator(config) as coord:
        unknown = run_cli(
            "transcribe",
            str(wav),
            "--model",
            "nope",
            "--connection-file",
            str(coord.connection_file),
        )
        unknown_all = run_cli("transcribe", str(wav), "--model", "nope", "--all-hosts", "--connection-file", str(coord.connection_file))  # fmt: skip
    assert unknown.returncode == 1 and "unknown_model" in unknown.stdout
    assert unknown_all.returncode == 1 and "unknown model 'nope'" in unknown_all.stderr
    missing = run_cli("transcribe", str(tmp_short / "absent.wav"), "--model", "echo")
    assert (
        missing.returncode == 1
        and "absent.wav" in missing.stderr
        and "Traceback" not in missing.stderr
    )


# ---------------------------------------------------------------------- logging
@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (
        root.level,
        list(root.handlers),
        logging.getLogger("orchestrator").level,
        logging.getLogger(logs.CLI_LOGGER).level,
    )
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in saved[1]:
                root.removeHandler(handler)
        root.setLevel(saved[0])
        logging.getLogger("orchestrator").setLevel(saved[2])
        logging.getLogger(logs.CLI_LOGGER).setLevel(saved[3])


def test_text_logs_are_quiet_by_default_but_show_cli_progress(restore_logging: None) -> None:
    out = io.StringIO()
    logs.setup_logging(stream=out)
    logging.getLogger("orchestrator.coordinator.supervisor").info("routine transition")
    logging.getLogger("orchestrator.coordinator.broker").warning("something is off")
    logging.getLogger(logs.CLI_LOGGER).info("starting hosts")
    logging.getLogger("some.other.library").info("chatter")
    text = out.getvalue()
    assert "routine transition" not in text and "chatter" not in text
    assert "something is off" in text and "starting hosts" in text


def test_json_logs_are_one_object_per_line_with_the_host(restore_logging: None) -> None:
    out = io.StringIO()
    logs.setup_logging("DEBUG", "json", stream=out)
    logs.setup_logging("DEBUG", "json", stream=out)  # set up twice: still one handler
    logging.getLogger("orchestrator.hosts").info("[syn.0] hello", extra={"host": "syn.0"})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("orchestrator.coordinator.broker").exception("handler failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["host"] == "syn.0" and first["msg"] == "[syn.0] hello" and first["level"] == "INFO"
    assert first["logger"] == "orchestrator.hosts" and first["ts"].endswith("+00:00")
    assert "host" not in second and "RuntimeError: boom" in second["exc"]


def test_bad_log_settings_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        logs.setup_logging("LOUD")
    with pytest.raises(ValueError, match="unknown log format"):
        logs.setup_logging("INFO", "xml")


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "-"),
        (0.04, "0.0s"),
        (59.94, "59.9s"),
        (61, "1m01s"),
        (3 * 3600 + 125, "3h02m"),
        (90_000, "1d01h"),
    ],
)
def test_durations_read_at_a_glance(seconds: float | None, shown: str) -> None:
    assert health_cli.format_duration(seconds) == shown


def test_the_demo_reports_each_hosts_transcript_timings_and_wer() -> None:
    """The demo's report path, on synthetic hosts (the real run is `nox -s demo`): a merge once
    left it importing a helper the transcribe command no longer had."""
    from orchestrator.cli import demo
    from orchestrator.speech.fixtures import clip_named
    from support import make_config, running

    clip = clip_named(demo.DEMO_CLIP)
    with running(make_config()) as coord:
        client = coord.sync_client()
        try:
            outcomes = demo.transcribe_on_each_host(client, clip, "echo", ["syn", "nowhere"])
        finally:
            client.close()
    served, refused = outcomes
    assert served["host"] == "syn" and served["text"] and served["pieces"] == 1
    assert served["wer"].reference_words == len(clip.text.split())
    assert refused["host"] == "nowhere" and refused["error"]["code"] == "no_host_available"
    report = demo.summary_table(outcomes, clip.duration_s)
    assert "syn" in report and "nowhere" in report and "error [" in report
