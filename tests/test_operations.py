"""Running coordinators as an operator meets them: one owner per connection file, stale files of
dead coordinators, restarts visible in the default log, one host restarted or stopped from the
command line, and every refusal one line that names the fix. Real processes throughout."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from cli_support import ServeProcess, run_cli, short_tmp_dir, synthetic_toml, write_config
from orchestrator.client import Client
from orchestrator.coordinator import runtime_dir
from orchestrator.wire.protocol import VERSION_FRAME, Codec, Kind, Message
from support import assert_gone, wait_for

SYN = {"syn": {"models": {"echo": "synthetic"}}}
#: Far longer than any answer that comes "at once": a check that waited for it would time out.
LONG_TIMEOUT = "60"
SUBPROCESS_LIMIT_S = 30.0
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO) ")


@pytest.fixture
def tmp_short() -> Iterator[Path]:
    with short_tmp_dir() as path:
        yield path


def _serve(folder: Path, hosts: dict = SYN, *extra: str) -> ServeProcess:
    return ServeProcess(
        "--config", str(write_config(folder, synthetic_toml(folder / "rt", hosts))), *extra
    )


def _one_line(stderr: str) -> str:
    """The one error line (the CLI's progress log lines around it are not errors)."""
    lines = [line for line in stderr.splitlines() if not _LOG_LINE.match(line) and line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_a_second_serve_is_refused_naming_the_running_pid_and_the_first_keeps_serving(
    tmp_short: Path,
) -> None:
    first = _serve(tmp_short)
    try:
        info = first.wait_listening()
        second = run_cli("serve", "--config", str(tmp_short / "orchestrator.toml"))
        assert second.returncode == 1
        line = _one_line(second.stderr)
        assert f"pid {first.proc.pid}" in line and "fix:" in line and "runtime_dir" in line
        assert "coordinator stopped" not in second.stdout  # it never started
        # The first one's file is intact and answers.
        assert Path(info["connection file"]).exists()
        health = run_cli("health", "--connection-file", info["connection file"])
        assert health.returncode == 0, health.stdout
        assert first.stop() == 0
    finally:
        first.kill()


def test_a_sigkilled_serve_is_known_dead_at_once_and_its_leftovers_are_cleaned(
    tmp_short: Path,
) -> None:
    first = _serve(tmp_short)
    try:
        info = first.wait_listening()
        with Client.connect(info["connection file"]) as client:
            host_pids = {r["pid"] for r in client.health()["replicas"]}
    finally:
        first.kill()  # SIGKILL: no cleanup of its own
    assert_gone(host_pids)
    connection_file = Path(info["connection file"])
    base = connection_file.parent
    leftovers = [p for p in base.glob("run-*") if p.is_dir()]
    assert connection_file.exists() and leftovers  # what the dead coordinator left

    # `health` reads the pid in the file and says so at once, instead of waiting its timeout.
    health = run_cli(
        "health", "--connection-file", str(connection_file), "--timeout", LONG_TIMEOUT,
        timeout_s=SUBPROCESS_LIMIT_S,
    )  # fmt: skip
    assert health.returncode == 2
    assert f"pid {first.proc.pid}, which is gone" in health.stdout and "fix:" in health.stdout
    assert not connection_file.exists()  # the stale file is removed

    second = _serve(tmp_short)
    try:
        second.wait_listening()
        assert not any(p.exists() for p in leftovers)  # the dead run's folders are gone
        assert second.stop() == 0
    finally:
        second.kill()


def test_health_without_any_coordinator_says_so_at_once_with_the_fix(tmp_short: Path) -> None:
    missing = run_cli(
        "health", "--connection-file", str(tmp_short / "coordinator.json"),
        "--timeout", LONG_TIMEOUT, timeout_s=SUBPROCESS_LIMIT_S,
    )  # fmt: skip
    assert missing.returncode == 2
    assert "no coordinator is running" in missing.stdout and "orchestrator serve" in missing.stdout

    garbage = tmp_short / "garbage.json"
    garbage.write_text("not json at all")
    result = run_cli("health", "--connection-file", str(garbage), "--json")
    assert result.returncode == 2
    error = json.loads(result.stdout)["error"]
    assert "not an orchestrator connection file" in error and "fix: delete it" in error
    assert "Expecting value" not in error

    transcribe = run_cli(
        "transcribe", str(garbage), "--connection-file", str(tmp_short / "no.json")
    )
    assert transcribe.returncode == 1


def test_a_restart_is_logged_at_warning_with_its_reason_by_default(tmp_short: Path) -> None:
    serve = _serve(tmp_short)
    try:
        info = serve.wait_listening()
        with Client.connect(info["connection file"]) as client:
            pid = client.health()["replicas"][0]["pid"]
            os.kill(pid, signal.SIGKILL)
            wait_for(
                lambda: any("restarting" in line for line in serve.stderr),
                what="a restart line in serve's default log",
            )
        line = next(line for line in serve.stderr if "restarting" in line)
        assert "WARNING" in line and "syn.0" in line and "exited with -9" in line
        assert serve.stop() == 0
    finally:
        serve.kill()


def test_host_restart_and_stop_from_the_command_line_and_a_failed_host_comes_back(
    tmp_short: Path,
) -> None:
    # max_restarts = 0: the first crash leaves the host failed, as a crash loop would.
    hosts = {"syn": {"models": {"echo": "synthetic"}, "restart": {"max_restarts": 0}}}
    serve = _serve(tmp_short, hosts)
    try:
        info = serve.wait_listening()
        cf = info["connection file"]
        with Client.connect(cf) as client:

            def state() -> str:
                return client.health()["replicas"][0]["state"]

            first_pid = client.health()["replicas"][0]["pid"]
            os.kill(first_pid, signal.SIGKILL)
            wait_for(lambda: state() == "failed", what="the host to fail")

            restart = run_cli("host", "restart", "syn", "--connection-file", cf)
            assert restart.returncode == 0, restart.stderr
            assert restart.stdout.startswith("restart syn: asked")
            wait_for(lambda: state() == "ready", what="the failed host back")
            assert client.health()["replicas"][0]["pid"] not in (None, first_pid)

            stop = run_cli("host", "stop", "syn", "--connection-file", cf)
            assert stop.returncode == 0, stop.stderr
            wait_for(lambda: state() == "stopped", what="the host stopped")

            unknown = run_cli("host", "restart", "ghost", "--connection-file", cf)
            assert unknown.returncode == 1
            assert "no host named 'ghost'" in _one_line(unknown.stderr) and "syn" in unknown.stderr
        assert serve.stop() == 0
    finally:
        serve.kill()


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1", "soon"])
def test_timeouts_are_validated_in_one_line(tmp_short: Path, value: str) -> None:
    for command in (["transcribe", "x.wav"], ["health"], ["host", "stop", "syn"]):
        result = run_cli(*command, "--timeout", value)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "--timeout" in result.stderr.splitlines()[-1]


def test_client_timeouts_are_validated(tmp_short: Path) -> None:
    from orchestrator.errors import BadRequestError

    key = b"k" * 32
    with Client(f"ipc://{tmp_short}/none.sock", key=key) as client:
        for value in (0, -1.0, float("inf"), float("nan")):
            with pytest.raises(BadRequestError, match="positive, finite"):
                client.transcribe(b"\0\0" * 160, sample_rate=16000, model="echo", timeout=value)


def test_a_busy_metrics_port_is_refused_before_any_host_starts_naming_the_port(
    tmp_short: Path,
) -> None:
    pytest.importorskip("prometheus_client")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(
            "serve", "--config", str(write_config(tmp_short, synthetic_toml(tmp_short / "rt", SYN))),
            "--metrics-port", str(port),
        )  # fmt: skip
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert f"127.0.0.1:{port}" in line and "fix: pick another --metrics-port" in line
    assert "coordinator stopped" not in result.stdout and "hosts:" not in result.stdout


def test_a_health_request_with_an_overflowing_id_never_gets_non_json_back(tmp_short: Path) -> None:
    serve = _serve(tmp_short)
    try:
        info = runtime_dir.read_connection_file(serve.wait_listening()["connection file"])
        codec = Codec(bytes.fromhex(info["key"]))
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.connect(info["endpoint"])
        try:
            # Signed, so it reaches the broker: a header whose id 1e999 parses to inf.
            body = [Kind.HEALTH.value.encode(), b'{"id":1e999,"mid":"m1"}']
            sock.send_multipart([VERSION_FRAME, codec.sign(body), *body])
            sock.send_multipart(codec.encode(Message(Kind.HEALTH, {"id": 2})))
            headers = [sock.recv_multipart()[3] for _ in range(2) if sock.poll(10_000)]
        finally:
            sock.close(linger=0)
            ctx.term()
        assert len(headers) == 2, headers  # both answered, in order
        first, second = (json.loads(h, parse_constant=_refuse) for h in headers)  # strict JSON
        assert first["id"] is None and "health" in first  # inf has no JSON spelling: null
        assert second["id"] == 2
        assert serve.stop() == 0
    finally:
        serve.kill()


def _refuse(name: str) -> None:
    raise AssertionError(f"{name} in a reply header")


def test_the_example_server_without_its_config_says_so_in_one_line(tmp_short: Path) -> None:
    import subprocess
    import sys

    from cli_support import REPO, cli_env

    pytest.importorskip("fastapi")
    result = subprocess.run(
        [sys.executable, "examples/echopanel_server.py", "--config", str(tmp_short / "none.toml")],
        capture_output=True, text=True, timeout=SUBPROCESS_LIMIT_S, env=cli_env(), cwd=REPO,
    )  # fmt: skip
    assert result.returncode != 0
    line = _one_line(result.stderr)
    assert "none.toml" in line and "fix: pass --config PATH" in line
