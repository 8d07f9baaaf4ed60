"""Remote clients over Curve: a refused handshake is told at once, with its cause and fix.

A real coordinator serves its client endpoint with Curve: it binds ``tcp://0.0.0.0`` (not
loopback, so Curve and the ``clients/`` allow-list apply) and the clients dial it on 127.0.0.1,
so no second interface is needed. The host is the synthetic engine. Each refused client must
hear ``UnauthorizedError`` within ``FAST_S``, far inside its ``TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq
import zmq.utils.z85

from orchestrator.client import AsyncClient, Client
from orchestrator.coordinator import Coordinator
from orchestrator.errors import DeadlineExceededError, ErrorCode, UnauthorizedError
from orchestrator.wire import curve
from orchestrator.wire.errors import ConnectionFileError
from support import (
    SYNTHETIC,
    assert_fingerprint,
    make_config,
    replica,
    running,
    tone_pcm16,
    wait_for,
)

#: What a call's timeout would be in real use: a refusal must not wait for it.
TIMEOUT_S = 30.0
#: A refusal is heard within this (a loopback handshake takes milliseconds).
FAST_S = 2.0


@dataclass
class Remote:
    coord: Coordinator
    endpoint: str
    keys: Path  # the coordinator's key folder
    clients: Path  # one folder per client: its pair and a coordinator.key


def client_keys(remote: Remote, name: str, *, authorize: bool, coordinator_key: Path) -> Path:
    folder = remote.clients / name
    pair = curve.generate_keypair(folder, name)
    shutil.copy(coordinator_key, folder / "coordinator.key")
    if authorize:
        curve.write_public_key(remote.keys / curve.CLIENTS_DIR / f"{name}.key", pair.public)
    return folder


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    root = tmp_path_factory.mktemp("curve")
    keys = root / "coordinator"
    curve.generate_keypair(keys, curve.COORDINATOR_KEY_NAME)
    (keys / curve.CLIENTS_DIR).mkdir()
    shell = Remote(None, "", keys, root / "clients")  # type: ignore[arg-type]
    # Allow-lists are read at start: the served client's key goes in first.
    client_keys(shell, "served", authorize=True, coordinator_key=keys / "coordinator.key")
    config = make_config(remote={"keys_dir": str(keys)}, allow_remote=True)
    with running(config, client_endpoint="tcp://0.0.0.0:0") as coord:
        assert coord.public_endpoint is not None
        port = coord.public_endpoint.rsplit(":", 1)[1]
        yield Remote(coord, f"tcp://127.0.0.1:{port}", keys, shell.clients)


def connect(remote: Remote, folder: Path, cls: type = Client) -> Client | AsyncClient:
    return cls(
        remote.endpoint,
        key=remote.coord.client_key,
        curve_keys=folder,
        curve_key_name=folder.name,
        timeout_s=TIMEOUT_S,
    )


def stranger(remote: Remote, name: str) -> Path:
    """A client whose key the coordinator does not know."""
    return client_keys(
        remote, name, authorize=False, coordinator_key=remote.keys / "coordinator.key"
    )


def misled(remote: Remote, tmp_path: Path, name: str) -> Path:
    """A client holding another coordinator's public key: that coordinator hangs up before it
    would ask its allow-list, so whether the key is on it does not matter."""
    other = curve.generate_keypair(tmp_path / "other", curve.COORDINATOR_KEY_NAME)
    assert other.public != curve.load_public_key(remote.keys / "coordinator.key")
    return client_keys(
        remote, name, authorize=False, coordinator_key=tmp_path / "other" / "coordinator.key"
    )


def assert_refused(err: UnauthorizedError, remote: Remote, cause: str, *fix: str) -> None:
    message = str(err)
    assert err.code == ErrorCode.UNAUTHORIZED and err.details["cause"] == cause, err.details
    assert err.details["endpoint"] == remote.endpoint and remote.endpoint in message
    assert "\n" not in message and "(fix: " in message
    for words in fix:
        assert words in message, message


def refused_clients(remote: Remote) -> int:
    handshakes = remote.coord.health()["coordinator"]["remote"]["handshakes"]
    return sum(1 for r in handshakes["recent_refusals"] if r["domain"] == "clients")


# ---------------------------------------------------------------------- served
def test_an_allow_listed_client_is_served_over_curve(remote: Remote, tmp_path: Path) -> None:
    pcm = tone_pcm16(4000, 11)
    recording = tmp_path / "tone.wav"
    with wave.open(str(recording), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(tone_pcm16(32_000, 12).astype("<i2").tobytes())
    with connect(remote, remote.clients / "served") as client:
        assert_fingerprint(client.transcribe(pcm, sample_rate=16000, model="echo").text, pcm)
        assert client.health()["replicas"]
        # The long-form path runs a twin client: it must dial with the same Curve keys.
        transcript = client.transcribe_file(recording, model="echo", skip_silence=False)
        assert transcript.segments and "n=" in transcript.text

    async def run() -> None:
        client = connect(remote, remote.clients / "served", AsyncClient)
        try:
            result = await client.transcribe(pcm, sample_rate=16000, model="echo")
            assert_fingerprint(result.text, pcm)
        finally:
            await client.aclose()

    asyncio.run(run())


# ---------------------------------------------------------------------- key not allow-listed
def test_a_sync_client_with_an_unknown_key_is_told_at_once_and_every_later_call_too(
    remote: Remote,
) -> None:
    before = refused_clients(remote)
    folder = stranger(remote, "stranger-sync")
    public = curve.load_public_key(folder / "stranger-sync.key").decode()
    with connect(remote, folder) as client:
        for call in (
            lambda: client.transcribe(tone_pcm16(4000, 1), sample_rate=16000, model="echo"),
            lambda: client.health(timeout=TIMEOUT_S),
            lambda: client.transcribe(tone_pcm16(4000, 2), sample_rate=16000, model="echo"),
        ):
            started = time.monotonic()
            with pytest.raises(UnauthorizedError) as info:
                call()
            assert time.monotonic() - started < FAST_S
            assert_refused(
                info.value,
                remote,
                "key_refused",
                f"refused this client's Curve key {public}",
                f"keys authorize KEYS_DIR {folder}/stranger-sync.key --as client",
            )
    assert refused_clients(remote) > before  # the coordinator counted them too


def test_an_async_client_with_an_unknown_key_fails_every_waiter_and_stream_at_once(
    remote: Remote,
) -> None:
    folder = stranger(remote, "stranger-async")

    async def run() -> None:
        client = connect(remote, folder, AsyncClient)
        try:
            started = time.monotonic()
            stream = await client.stream(model="echo", sample_rate=16000).open()
            outcomes = await asyncio.gather(
                client.transcribe(tone_pcm16(4000, 3), sample_rate=16000, model="echo"),
                client.health(timeout=TIMEOUT_S),
                return_exceptions=True,
            )
            events = [event async for event in stream]
            assert time.monotonic() - started < FAST_S
            for outcome in outcomes:
                assert isinstance(outcome, UnauthorizedError), outcome
                assert_refused(outcome, remote, "key_refused", "--as client")
            assert [e.type for e in events] == ["error", "closed"]
            assert isinstance(events[0].error, UnauthorizedError)
            # A later call dials again and is refused again, as fast.
            started = time.monotonic()
            with pytest.raises(UnauthorizedError):
                await client.health(timeout=TIMEOUT_S)
            assert time.monotonic() - started < FAST_S
        finally:
            await client.aclose()

    asyncio.run(run())


def test_a_key_authorized_meanwhile_is_served_by_the_same_client(remote: Remote) -> None:
    """libzmq gives up on a refused connection; the client dials again at its next call."""
    folder = stranger(remote, "late")
    pcm = tone_pcm16(4000, 5)
    with connect(remote, folder) as client:
        with pytest.raises(UnauthorizedError):
            client.health(timeout=TIMEOUT_S)
        raw = zmq.utils.z85.decode(curve.load_public_key(folder / "late.key"))
        # What `keys authorize` and a restart would do, without the restart's new client key.
        remote.coord.call(lambda b: b.zap._allowed[curve.CLIENTS_DOMAIN].__setitem__(raw, "late"))
        result = client.transcribe(pcm, sample_rate=16000, model="echo", timeout=5.0)
        assert_fingerprint(result.text, pcm)
        assert client._link is not None and client._link.refusal is None


# ---------------------------------------------------------------------- wrong coordinator key
@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_a_client_holding_another_coordinators_key_is_told_so_at_every_call(
    remote: Remote, tmp_path: Path, cls: type
) -> None:
    """libzmq keeps dialling such a coordinator by itself: each call fails at the next hang-up."""
    folder = misled(remote, tmp_path, f"misled-{cls.__name__}")
    errors: list[UnauthorizedError] = []

    def timed(call: Callable[[], object]) -> None:
        started = time.monotonic()
        with pytest.raises(UnauthorizedError) as info:
            call()
        assert time.monotonic() - started < FAST_S
        errors.append(info.value)

    if cls is Client:
        with connect(remote, folder) as client:
            for _ in range(2):
                timed(lambda: client.health(timeout=TIMEOUT_S))
    else:

        async def run() -> None:
            client = connect(remote, folder, AsyncClient)
            try:
                for _ in range(2):
                    started = time.monotonic()
                    with pytest.raises(UnauthorizedError) as info:
                        await client.health(timeout=TIMEOUT_S)
                    assert time.monotonic() - started < FAST_S
                    errors.append(info.value)
            finally:
                await client.aclose()

        asyncio.run(run())
    assert len(errors) == 2
    for err in errors:
        assert_refused(
            err,
            remote,
            "coordinator_key",
            f"{folder}/coordinator.key is not its public key",
            "copy the coordinator's coordinator.key",
        )


# ---------------------------------------------------------------------- not a Curve endpoint
def test_curve_keys_against_a_plain_loopback_endpoint_fail_fast(tmp_path: Path) -> None:
    folder = tmp_path / "client"
    curve.generate_keypair(folder, "client")
    curve.generate_keypair(tmp_path / "coord", curve.COORDINATOR_KEY_NAME)
    shutil.copy(tmp_path / "coord" / "coordinator.key", folder)
    with running(make_config(), client_endpoint="tcp://127.0.0.1:0") as coord:
        assert coord.public_endpoint is not None
        client = Client(coord.public_endpoint, key=coord.client_key, curve_keys=folder)
        with client:
            started = time.monotonic()
            with pytest.raises(UnauthorizedError) as info:
                client.health(timeout=TIMEOUT_S)
            assert time.monotonic() - started < FAST_S
    # Which side notices the mismatch first is a race: our client reads the plaintext greeting
    # (the mismatch, by name), or the coordinator hangs up first (as for a wrong key).
    message = str(info.value)
    if info.value.details["cause"] == "protocol":
        assert "this endpoint does not speak Curve" in message
    else:
        assert info.value.details["cause"] == "coordinator_key"
        assert "dial the address it serves with Curve" in message
    assert message.count("(fix: ") == 1 and "\n" not in message


# ---------------------------------------------------------------------- a dial-in host
@dataclass
class RefusedHost:
    coord: Coordinator
    endpoint: str
    public_key: str
    log: Path


@contextlib.contextmanager
def refused_dial_in_host(tmp_path: Path) -> Iterator[RefusedHost]:
    """A coordinator listening for dial-in hosts and a host whose key it does not know, running
    until its first refusal is logged."""
    curve.generate_keypair(tmp_path / "coord", curve.COORDINATOR_KEY_NAME)
    pair = curve.generate_keypair(tmp_path / "host", "host")  # not authorized
    shutil.copy(tmp_path / "coord" / "coordinator.key", tmp_path / "host")
    config = make_config(
        hosts={"ext": {"external": True, "models": {"echo": "synthetic"}}},
        remote={"listen": "tcp://127.0.0.1:0", "keys_dir": str(tmp_path / "coord")},
    )
    log = tmp_path / "host.log"
    with running(config) as coord, log.open("wb") as err:
        endpoint = coord.call(lambda b: b.remote.endpoint)
        host = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.host", "--connect", endpoint, "--host-kind",
             "ext", "--engine", SYNTHETIC, "--model", "echo=synthetic", "--keys",
             str(tmp_path / "host"), "--log-level", "WARNING"],
            stderr=err,
        )  # fmt: skip
        try:
            wait_for(lambda: "refused 1 time(s)" in log.read_text(), 20, "the refusal logged")
            yield RefusedHost(coord, endpoint, pair.public.decode(), log)
        finally:
            host.kill()
            host.wait()


def test_a_dial_in_host_with_an_unknown_key_logs_the_cause_and_fix(tmp_path: Path) -> None:
    """The host side reads the same watch: one log line naming the endpoint, cause and fix."""
    with refused_dial_in_host(tmp_path) as refused:
        line = next(x for x in refused.log.read_text().splitlines() if "refused 1 time(s)" in x)
    assert (
        f"{refused.endpoint}: the coordinator refused this host's Curve key "
        f"{refused.public_key}" in line
    )
    assert f"keys authorize KEYS_DIR {tmp_path / 'host'}/host.key --as host" in line


def test_a_refused_dial_in_host_gets_in_once_its_key_is_authorized_without_restarts(
    tmp_path: Path,
) -> None:
    """keys authorize on the coordinator's folder: the running coordinator reads it again and
    the running host dials again after a refusal, so neither is restarted."""
    with refused_dial_in_host(tmp_path) as refused:
        authorize = subprocess.run(
            [sys.executable, "-m", "orchestrator", "keys", "authorize",
             str(tmp_path / "coord"), str(tmp_path / "host" / "host.key"), "--as", "host"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert "next handshake" in authorize.stdout
        coord = refused.coord
        wait_for(lambda: replica(coord, "ext.0")["state"] == "ready", 20, "the host registered")
        result = coord.sync_client().transcribe(
            b"\x01\x00" * 1600, sample_rate=16_000, model="echo"
        )
        assert result.host == "ext"


def test_local_tools_reach_a_curve_coordinator_through_its_connection_file(
    remote: Remote, tmp_path: Path
) -> None:
    """A coordinator serving remote clients over Curve writes an ipc endpoint for this machine's
    own tools (which hold no Curve keys) in its connection file, and the Curve one beside it."""
    config = make_config(remote={"keys_dir": str(remote.keys)}, allow_remote=True)
    coord = Coordinator(config, client_endpoint="tcp://0.0.0.0:0")
    coord.start(write_connection_file=True)
    try:
        assert coord.connection_file is not None
        info = json.loads(coord.connection_file.read_text())
        assert info["endpoint"].startswith("ipc://") and info["curve_endpoint"].startswith("tcp://")
        with Client(connection_file=coord.connection_file) as client:
            assert client.health(timeout=TIMEOUT_S)["replicas"]
        cli = subprocess.run(
            [sys.executable, "-m", "orchestrator", "health", "--json",
             "--connection-file", str(coord.connection_file)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        # The Curve endpoint still refuses a client without keys (plaintext on a Curve socket).
        port = info["curve_endpoint"].rsplit(":", 1)[1]
        with (
            Client(f"tcp://127.0.0.1:{port}", key=coord.client_key) as plain,
            pytest.raises(DeadlineExceededError),  # no keys, no watch: no answer at all
        ):
            plain.health(timeout=1.0)
    finally:
        coord.close()


# ---------------------------------------------------------------------- tools on another machine
#: Beyond Linux's largest pid (2**22): a process that never runs here, as the pid in a copy of
#: another machine's connection file is.
FOREIGN_PID = 2**22 + 17


def copied_connection_file(remote: Remote, folder: Path, **overrides: str) -> Path:
    """What an operator copies from the coordinator's machine: its file, naming its own pid."""
    info = {**remote.coord.connection_info(), "pid": FOREIGN_PID, **overrides}
    path = folder / "coordinator.json"
    path.write_text(json.dumps(info))
    path.chmod(0o600)
    return path


def orchestrator_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *map(str, args)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_health_and_transcribe_reach_a_coordinator_on_another_machine(
    remote: Remote, tmp_path: Path
) -> None:
    keys = ["--curve-keys", remote.clients / "served", "--curve-key-name", "served"]
    copy = copied_connection_file(remote, tmp_path)
    port = remote.endpoint.rsplit(":", 1)[1]
    # The copy's curve_endpoint is the bind (tcp://0.0.0.0:PORT): nothing to dial, said so.
    wildcard = orchestrator_cli("health", "--connection-file", copy, *keys)
    assert wildcard.returncode == 2, wildcard
    assert f"--endpoint tcp://COORDINATOR:{port}" in wildcard.stdout
    assert "Traceback" not in wildcard.stderr and wildcard.stdout.count("\n") == 1
    for extra in (["--endpoint", remote.endpoint], []):
        if not extra:  # a coordinator bound to one address writes one to dial
            copy = copied_connection_file(remote, tmp_path, curve_endpoint=remote.endpoint)
        served = orchestrator_cli("health", "--json", "--connection-file", copy, *keys, *extra)
        assert served.returncode == 0, served
        assert json.loads(served.stdout)["replicas"]
        assert copy.exists()  # the foreign pid is not taken for a dead coordinator here

    recording = tmp_path / "tone.wav"
    pcm = tone_pcm16(16_000, 5)
    with wave.open(str(recording), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(pcm.astype("<i2").tobytes())
    transcribed = orchestrator_cli(
        "transcribe", recording, "--model", "echo", "--format", "json",
        "--connection-file", copy, *keys,
    )  # fmt: skip
    assert transcribed.returncode == 0, transcribed
    assert "n=" in json.loads(transcribed.stdout)["text"]


def test_a_tool_with_an_unknown_key_is_told_the_cause_and_fix_in_one_line(
    remote: Remote, tmp_path: Path
) -> None:
    coordinator_key = remote.keys / "coordinator.key"
    stranger = client_keys(remote, "ops-stranger", authorize=False, coordinator_key=coordinator_key)
    copy = copied_connection_file(remote, tmp_path, curve_endpoint=remote.endpoint)
    started = time.monotonic()
    refused = orchestrator_cli(
        "health", "--connection-file", copy, "--curve-keys", stranger, "--curve-key-name",
        "ops-stranger", "--timeout", str(TIMEOUT_S),
    )  # fmt: skip
    assert time.monotonic() - started < TIMEOUT_S  # told, not timed out
    assert refused.returncode == 2, refused
    line = refused.stdout.strip()
    assert "\n" not in line and "Traceback" not in refused.stderr
    assert "unauthorized" in line and "keys authorize" in line, line


def test_a_copy_of_a_local_only_coordinators_file_names_the_fix(
    remote: Remote, tmp_path: Path
) -> None:
    info = {k: v for k, v in remote.coord.connection_info().items() if k != "curve_endpoint"}
    copy = tmp_path / "coordinator.json"
    copy.write_text(json.dumps({**info, "pid": FOREIGN_PID}))
    with pytest.raises(ConnectionFileError) as told:
        Client(connection_file=copy, curve_keys=remote.clients / "served", curve_key_name="served")
    assert "names no Curve endpoint" in str(told.value) and "fix:" in str(told.value)
    assert copy.exists()
