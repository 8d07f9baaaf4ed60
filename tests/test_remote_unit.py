"""Hosts on other machines, the fast parts: key files, the ZAP allow-list, config and dial-in
settings refusals, the keys command, and one dial-in host over loopback TCP + Curve."""

from __future__ import annotations

import argparse
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import zmq
import zmq.utils.z85

from orchestrator.cli.main import main as cli_main
from orchestrator.coordinator.zap import ZapHandler
from orchestrator.host.dialin import add_arguments, settings_from_args
from orchestrator.wire import curve
from orchestrator.wire.errors import ConfigError
from support import SYNTHETIC, make_config, replica, running, tone_pcm16, wait_for


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------------- key files
def test_a_generated_pair_is_0600_secret_and_0644_public(tmp_path: Path) -> None:
    pair = curve.generate_keypair(tmp_path / "k", "gpu-box-1")
    assert mode(tmp_path / "k" / "gpu-box-1.key_secret") == 0o600
    assert mode(tmp_path / "k" / "gpu-box-1.key") == 0o644
    assert mode(tmp_path / "k") == 0o700
    loaded = curve.load_keypair(tmp_path / "k", "gpu-box-1")
    assert (loaded.public, loaded.secret) == (pair.public, pair.secret)
    assert zmq.curve_public(pair.secret) == pair.public
    assert curve.load_public_key(tmp_path / "k" / "gpu-box-1.key") == pair.public
    assert "secret" not in repr(loaded).replace("key_secret", "")


def test_a_secret_others_can_read_is_refused(tmp_path: Path) -> None:
    curve.generate_keypair(tmp_path, "host")
    (tmp_path / "host.key_secret").chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        curve.load_keypair(tmp_path, "host")


def test_generate_refuses_to_overwrite_and_odd_names(tmp_path: Path) -> None:
    curve.generate_keypair(tmp_path, "host")
    with pytest.raises(ConfigError, match="--force"):
        curve.generate_keypair(tmp_path, "host")
    with pytest.raises(ConfigError, match="plain name"):
        curve.generate_keypair(tmp_path, "../evil")
    with pytest.raises(ConfigError, match="keys generate"):
        curve.load_keypair(tmp_path, "absent")


def test_the_allow_list_names_each_key_by_its_file(tmp_path: Path) -> None:
    a, b = zmq.curve_keypair()[0], zmq.curve_keypair()[0]
    curve.write_public_key(tmp_path / "box0.key", a)
    curve.write_public_key(tmp_path / "box1.key", b)
    (tmp_path / "notes.txt").write_text("not a key")
    assert curve.load_allow_list(tmp_path) == {a: "box0", b: "box1"}
    assert curve.load_allow_list(tmp_path / "missing") == {}
    (tmp_path / "bad.key").write_text("garbage\n")
    with pytest.raises(ConfigError, match=r"bad\.key"):
        curve.load_allow_list(tmp_path)


def test_loopback_endpoints() -> None:
    assert curve.is_loopback_endpoint("tcp://127.0.0.1:5560")
    assert curve.is_loopback_endpoint("tcp://[::1]:5560")
    assert curve.is_loopback_endpoint("tcp://localhost:1")
    assert not curve.is_loopback_endpoint("tcp://0.0.0.0:5560")
    assert not curve.is_loopback_endpoint("tcp://10.231.0.1:5560")


# ---------------------------------------------------------------------- ZAP
def zap_request(domain: str, address: str, mechanism: bytes, *creds: bytes) -> list[bytes]:
    return [b"1.0", b"7", domain.encode(), address.encode(), b"", mechanism, *creds]


def test_zap_lets_in_listed_keys_by_name_and_counts_the_rest() -> None:
    ctx = zmq.Context()
    try:
        known, unknown = zmq.curve_keypair()[0], zmq.curve_keypair()[0]
        zap = ZapHandler(ctx, {"hosts": {known: "box0"}, "clients": {}})
        ok = zap.answer(zap_request("hosts", "10.0.0.2", b"CURVE", zmq.utils.z85.decode(known)))
        assert ok[2:5] == [b"200", b"OK", b"box0"] and ok[1] == b"7"
        # A host key is not a client key: the domains have separate lists.
        wrong_domain = zap.answer(
            zap_request("clients", "10.0.0.2", b"CURVE", zmq.utils.z85.decode(known))
        )
        assert wrong_domain[2] == b"400"
        refused = zap.answer(
            zap_request("hosts", "10.0.0.3", b"CURVE", zmq.utils.z85.decode(unknown))
        )
        assert refused[2] == b"400" and unknown.decode() in refused[3].decode()
        assert zap.answer(zap_request("hosts", "127.0.0.1", b"NULL"))[2] == b"400"
        assert zap.answer(zap_request("hosts", "10.0.0.2", b"PLAIN", b"u", b"p"))[2] == b"400"
        assert zap.answer([b"0.9"])[2] == b"400"
        stats = zap.stats()
        assert stats["accepted"] == {"hosts": 1}
        assert stats["refused"] == {
            "unknown_key": 2, "plaintext": 1, "mechanism": 1, "malformed": 1
        }  # fmt: skip
        assert stats["refused_total"] == 5
        assert stats["recent_refusals"][1]["address"] == "10.0.0.3"
        zap.close()
    finally:
        ctx.destroy(linger=0)


def test_zap_reads_the_allow_lists_again_so_authorize_and_revoke_need_no_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from orchestrator.coordinator import zap as zap_module

    ctx = zmq.Context()
    lists: dict[str, dict[bytes, str]] = {"hosts": {}}
    reads: list[int] = []

    def reload() -> dict[str, dict[bytes, str]]:
        reads.append(1)
        return {domain: dict(keys) for domain, keys in lists.items()}

    try:
        late = zmq.curve_keypair()[0]
        zap = ZapHandler(ctx, reload(), reload=reload)
        ask = zap_request("hosts", "10.0.0.2", b"CURVE", zmq.utils.z85.decode(late))
        assert zap.answer(ask)[2] == b"400"  # not on the list yet
        lists["hosts"][late] = "late"  # keys authorize
        assert zap.answer(ask)[2] == b"400" and len(reads) == 1  # read at most once a second
        monkeypatch.setattr(zap_module, "ALLOW_LIST_RELOAD_INTERVAL_S", 0.0)
        assert zap.answer(ask)[2:5] == [b"200", b"OK", b"late"]
        del lists["hosts"][late]  # keys revoke
        assert zap.answer(ask)[2] == b"400"

        def broken() -> dict[str, dict[bytes, str]]:
            raise ConfigError("hosts/x.key: not a key file (fix: point at a NAME.key file)")

        lists["hosts"][late] = "late"
        assert zap.answer(ask)[2] == b"200"
        zap._reload = broken  # an unreadable folder keeps the lists as they were
        assert zap.answer(ask)[2] == b"200"
        zap.close()
    finally:
        ctx.destroy(linger=0)


def test_zap_allows_plaintext_only_where_asked_and_only_from_loopback() -> None:
    ctx = zmq.Context()
    try:
        zap = ZapHandler(ctx, {}, plaintext_domains=frozenset({"hosts"}))
        assert zap.answer(zap_request("hosts", "127.0.0.1", b"NULL"))[2] == b"200"
        assert zap.answer(zap_request("hosts", "::1", b"NULL"))[2] == b"200"
        assert zap.answer(zap_request("hosts", "10.0.0.2", b"NULL"))[2] == b"400"
        assert zap.answer(zap_request("clients", "127.0.0.1", b"NULL"))[2] == b"400"
        zap.close()
    finally:
        ctx.destroy(linger=0)


def test_zap_on_real_curve_sockets_refuses_an_unlisted_key() -> None:
    """libzmq asks our handler; a listed key's messages carry its name, an unlisted key's never
    arrive."""
    ctx = zmq.Context()
    server_keys = curve.KeyPair("coordinator", *zmq.curve_keypair())
    good = curve.KeyPair("good", *zmq.curve_keypair())
    bad = curve.KeyPair("bad", *zmq.curve_keypair())
    zap = ZapHandler(ctx, {"hosts": {good.public: "good"}})
    stop = threading.Event()

    def serve_zap() -> None:
        poller = zmq.Poller()
        poller.register(zap.sock, zmq.POLLIN)
        while not stop.is_set():
            if poller.poll(20):
                zap.handle_pending()

    thread = threading.Thread(target=serve_zap, daemon=True)
    thread.start()
    try:
        server = ctx.socket(zmq.ROUTER)
        curve.make_curve_server(server, server_keys, "hosts")
        port = server.bind_to_random_port("tcp://127.0.0.1")
        clients = []
        for keys in (bad, good):
            sock = ctx.socket(zmq.DEALER)
            curve.make_curve_client(sock, keys, server_keys.public)
            sock.connect(f"tcp://127.0.0.1:{port}")
            sock.send(keys.name.encode())
            clients.append(sock)
        assert server.poll(5000)
        frames = server.recv_multipart(copy=False)
        assert frames[1].bytes == b"good" and frames[1].get("User-Id") == "good"
        assert not server.poll(300)  # the bad key's message never arrives
        wait_for(lambda: zap.refused["unknown_key"] >= 1, 5, "the refusal counted")
    finally:
        stop.set()
        thread.join()
        ctx.destroy(linger=0)


# ---------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    ("remote", "host", "message"),
    [
        ({}, {}, r"\[remote\] listen is empty"),
        ({"listen": "tcp://0.0.0.0:5560", "plaintext": True}, {}, "only allowed on loopback"),
        ({"listen": "tcp://0.0.0.0:5560"}, {}, "keys_dir is empty"),
        ({"listen": "ipc:///tmp/x"}, {}, "must be a tcp:// endpoint"),
        ({"listen": "tcp://127.0.0.1:0", "plaintext": True}, {"python": "current"}, "takes no"),
    ],
)
def test_remote_config_refusals_name_the_fix(
    remote: dict[str, object], host: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        make_config(hosts={"ext": {"external": True, "models": {"m": "r"}, **host}}, remote=remote)
    assert "fix:" in str(info.value)


def test_listen_without_an_external_host_is_refused() -> None:
    from support import synthetic_host

    with pytest.raises(ConfigError, match="no host is external"):
        make_config(
            hosts={"syn": synthetic_host()},
            remote={"listen": "tcp://127.0.0.1:0", "plaintext": True},
        )


# ---------------------------------------------------------------------- dial-in settings
def dial_in_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_dial_in_flags_and_file_merge(tmp_path: Path) -> None:
    (tmp_path / "host.toml").write_text(
        'connect = "tcp://10.0.0.1:5560"\nhost_kind = "mlx_host"\n'
        'engine = "mlx_host.engine:MlxAudioEngine"\nkeys = "keys"\n'
        '[models]\nqwen3-asr = "org/model"\n'
    )
    settings = settings_from_args(
        dial_in_args("--config", str(tmp_path / "host.toml"), "--model", "whisper=org/w")
    )
    assert settings.connect == "tcp://10.0.0.1:5560"
    assert settings.keys == str(tmp_path / "keys")  # relative to the file
    assert [(m.name, m.ref) for m in settings.models] == [
        ("qwen3-asr", "org/model"),
        ("whisper", "org/w"),
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--connect", "tcp://10.0.0.1:1", "--plaintext"], "only allowed to a loopback"),
        (["--connect", "tcp://10.0.0.1:1"], "--keys DIR is required"),
        (["--connect", "ipc:///x"], "must be tcp://"),
        (["--connect", "tcp://127.0.0.1:1", "--plaintext", "--model", "oops"], "NAME=REF"),
    ],
)
def test_dial_in_refusals(argv: list[str], message: str) -> None:
    base = ["--host-kind", "k", "--engine", SYNTHETIC]
    if "--model" not in argv:
        base += ["--model", "echo=synthetic"]
    with pytest.raises(ConfigError, match=message):
        settings_from_args(dial_in_args(*argv, *base))


def test_a_bad_dial_in_flag_is_one_line_and_no_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.host", "--connect", "tcp://10.0.0.1:1",
         "--host-kind", "k", "--engine", SYNTHETIC, "--model", "echo=synthetic"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "--keys DIR is required" in done.stderr


# ---------------------------------------------------------------------- the keys command
def test_keys_command_makes_and_authorizes_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    coord, host = tmp_path / "coord", tmp_path / "host"
    assert cli_main(["keys", "init", str(coord)]) == 0
    assert cli_main(["keys", "generate", str(host), "--name", "box0"]) == 0
    assert cli_main(["keys", "authorize", str(coord), str(host / "box0.key"), "--as", "host"]) == 0
    capsys.readouterr()
    assert cli_main(["keys", "list", str(coord)]) == 0
    listing = capsys.readouterr().out
    assert f"host: box0 {curve.load_public_key(host / 'box0.key').decode()}" in listing
    assert mode(coord / "coordinator.key_secret") == 0o600
    assert cli_main(["keys", "revoke", str(coord), "box0", "--as", "host"]) == 0
    assert curve.load_allow_list(coord / "hosts") == {}
    assert cli_main(["keys", "revoke", str(coord), "box0", "--as", "host"]) == 1
    assert "keys list" in capsys.readouterr().err


# ---------------------------------------------------------------------- one dial-in, loopback
def test_a_dial_in_host_serves_drains_and_a_stranger_kind_is_refused(tmp_path: Path) -> None:
    """Over loopback TCP + Curve: registers, serves, is asked to drain and leaves (exit 0); a
    HELLO for a kind the coordinator has no external slot for is refused and counted."""
    curve.generate_keypair(tmp_path / "coord", curve.COORDINATOR_KEY_NAME)
    pair = curve.generate_keypair(tmp_path / "host", "host")
    curve.write_public_key(tmp_path / "coord" / "hosts" / "box0.key", pair.public)
    shutil.copy(tmp_path / "coord" / "coordinator.key", tmp_path / "host")
    config = make_config(
        hosts={"ext": {"external": True, "models": {"echo": "synthetic"}}},
        remote={"listen": "tcp://127.0.0.1:0", "keys_dir": str(tmp_path / "coord")},
    )

    def dial(kind: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator.host", "--connect", endpoint, "--host-kind",
             kind, "--engine", SYNTHETIC, "--model", "echo=synthetic", "--keys",
             str(tmp_path / "host"), "--log-level", "WARNING"],
        )  # fmt: skip

    with running(config) as coord:
        endpoint = coord.call(lambda b: b.remote.endpoint)
        assert replica(coord, "ext.0")["state"] == "stopped"
        host = dial("ext")
        stranger = dial("nope")
        try:
            wait_for(lambda: replica(coord, "ext.0")["state"] == "ready", 20, "dial-in ready")
            row = replica(coord, "ext.0")
            assert row["external"] and row["pid"] == host.pid and row["peer"].startswith("box0 ")
            pcm = tone_pcm16(4000, 3)
            result = coord.sync_client().transcribe(pcm, sample_rate=16000, model="echo")
            assert result.replica == "ext.0"
            wait_for(
                lambda: coord.health()["coordinator"]["remote"]["refused"].get("unknown_kind"),
                10,
                "the stranger kind refused",
            )
            coord.call(lambda b: b.supervisor.stop(b.supervisor.replicas[0]))
            assert host.wait(timeout=10) == 0  # drained and left; its process manager decides
            wait_for(lambda: replica(coord, "ext.0")["state"] == "stopped", 10, "stopped")
        finally:
            for proc in (host, stranger):
                proc.kill()
                proc.wait()
