"""The deployment files in deploy/: parsed, verified where a verifier exists, and checked against
the code they start (command lines through the real parsers, ports against the real config)."""

from __future__ import annotations

import argparse
import plistlib
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.cli.main import build_parser
from orchestrator.coordinator.config import config_from_dict, load_config
from orchestrator.envs import checks as envs
from orchestrator.host.dialin import add_arguments, settings_from_args

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
HOSTS = envs.host_names(ROOT)


def host_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def check_host_command(argv: list[str], env: str) -> list[str]:
    """``<env python> -m orchestrator.host ARGS``: the env's interpreter, the dial-in flags."""
    assert argv[0].endswith(f"envs/{env}/bin/python"), argv
    assert argv[1:3] == ["-m", "orchestrator.host"], argv
    return argv[3:]


def test_example_configs_load_with_the_real_loaders(tmp_path: Path) -> None:
    config = load_config(DEPLOY / "coordinator.toml")
    assert {h.name for h in config.hosts.values() if h.external} == set(HOSTS)
    assert config.remote.listen.endswith(":5560")
    settings = settings_from_args(host_args(["--config", str(DEPLOY / "host.toml")]))
    assert settings.host_kind in config.hosts and config.hosts[settings.host_kind].external
    assert settings.connect.endswith(":5560")


def test_systemd_unit(tmp_path: Path) -> None:
    unit = (DEPLOY / "systemd" / "orchestrator-host.service").read_text()
    exec_start = re.search(r"^ExecStart=(.+)$", unit, re.M)
    assert exec_start is not None
    argv = shlex.split(exec_start.group(1))
    flags = check_host_command(argv, "mlx_host")
    assert host_args(flags).config == "/etc/orchestrator/host.toml"
    assert re.search(r"^Restart=always$", unit, re.M)
    assert re.search(r"^After=network-online.target$", unit, re.M)
    verifier = shutil.which("systemd-analyze")
    if verifier is None:
        pytest.skip("systemd-analyze is not installed here; the unit was parsed, not verified")
    # verify needs ExecStart's program to exist: the same unit, pointed at this interpreter.
    copy = tmp_path / "orchestrator-host.service"
    copy.write_text(unit.replace(argv[0], sys.executable))
    done = subprocess.run(
        [verifier, "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    # It exits 0 even for a bad value, so any complaint about our file is a failure too.
    complaints = [line for line in done.stderr.splitlines() if copy.name in line]
    assert done.returncode == 0 and not complaints, done.stderr


def test_launchd_plist() -> None:
    with open(DEPLOY / "launchd" / "com.echopanel.orchestrator-host.plist", "rb") as fh:
        plist = plistlib.load(fh)
    assert plist["Label"] == "com.echopanel.orchestrator-host"
    assert plist["KeepAlive"] is True and plist["RunAtLoad"] is True
    flags = check_host_command(plist["ProgramArguments"], "mlx_host")
    assert host_args(flags).config.endswith("host.toml")
    assert plist["WorkingDirectory"] in plist["ProgramArguments"][0]
    assert plist["StandardErrorPath"]


def dockerfile(name: str) -> tuple[str, list[str]]:
    text = (DEPLOY / "docker" / name / "Dockerfile").read_text()
    # Join continuation lines, drop comments: one instruction per entry.
    joined = re.sub(r"\\\n\s*", " ", text)
    return text, [
        line.strip()
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


@pytest.mark.parametrize("host", HOSTS)
def test_each_host_env_has_a_dockerfile_built_from_its_lock(host: str) -> None:
    _, instructions = dockerfile(host)
    lock = f"hosts/{host}/requirements.lock"
    copies = [i for i in instructions if i.startswith("COPY ")]
    assert f"COPY {lock} {lock}" in copies
    sync = next(i for i in instructions if "uv pip sync" in i)
    assert f"--python /app/envs/{host}/bin/python {lock}" in sync
    # The lock is copied (and synced) before any code, so code changes keep the heavy layer.
    assert instructions.index(f"COPY {lock} {lock}") < instructions.index(sync)
    assert instructions.index(sync) < instructions.index("COPY orchestrator orchestrator")
    install = next(i for i in instructions if "--no-deps -e . -e" in i)
    assert f"-e hosts/{host}" in install
    entry = next(i for i in instructions if i.startswith("ENTRYPOINT "))
    assert yaml.safe_load(entry.removeprefix("ENTRYPOINT ")) == [
        f"/app/envs/{host}/bin/python", "-m", "orchestrator.host",
    ]  # fmt: skip
    assert any(i.startswith("USER ") and i != "USER root" for i in instructions)


def test_the_mlx_dockerfile_says_linux_mlx_is_cpu() -> None:
    text, _ = dockerfile("mlx_host")
    assert "CPU" in text and "Metal" in text


def manifests(name: str) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((DEPLOY / "kubernetes" / f"{name}.yaml").read_text()))


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind)


def check_key_mounts(pod: dict[str, Any], container: dict[str, Any]) -> None:
    """Every Secret volume is mounted read-only with a mode nobody else can read."""
    secrets = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    assert secrets, "no key Secret mounted"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    for name, secret in secrets.items():
        assert mounts[name]["readOnly"] is True, name
        assert secret["defaultMode"] == 0o400, name
        assert mounts[name]["mountPath"].startswith("/etc/orchestrator/keys")
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_coordinator_manifests() -> None:
    docs = manifests("coordinator")
    config_text = by_kind(docs, "ConfigMap")["data"]["orchestrator.toml"]
    import tomllib

    config = config_from_dict(tomllib.loads(config_text), root=ROOT)
    deployment, service = by_kind(docs, "Deployment"), by_kind(docs, "Service")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "orchestrator-coordinator:0.1.0"
    argv = [*container["command"], *container["args"]]
    assert argv[:3] == ["python", "-m", "orchestrator"]
    args = build_parser().parse_args(argv[3:])
    assert args.command == "serve" and args.config == "/etc/orchestrator/orchestrator.toml"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["hosts"] == int(config.remote.listen.rsplit(":", 1)[1])
    assert ports["clients"] == int(config.coordinator.client_endpoint.rsplit(":", 1)[1])
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert (
        deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    )
    check_key_mounts(pod, container)
    assert {h.name for h in config.hosts.values() if h.external} == set(HOSTS)


@pytest.mark.parametrize("host", HOSTS)
def test_a_deployment_per_host_env(host: str, tmp_path: Path) -> None:
    docs = manifests(host.replace("_host", "-host"))
    coordinator = manifests("coordinator")
    deployment = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"orchestrator-{host}:0.1.0"
    flags = check_host_command([*container["command"], *container["args"]], host)
    config_path = host_args(flags).config
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(Path(config_path).parent) in mounted
    # The host config inside, through the host's own parser: it dials the coordinator Service.
    (tmp_path / "host.toml").write_text(by_kind(docs, "ConfigMap")["data"]["host.toml"])
    settings = settings_from_args(host_args(["--config", str(tmp_path / "host.toml")]))
    service = by_kind(coordinator, "Service")
    hosts_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "hosts")
    assert settings.connect == f"tcp://{service['metadata']['name']}:{hosts_port}"
    assert settings.host_kind == host
    assert settings.keys == str(tmp_path / "keys")  # keys/ beside host.toml: the Secret's mount
    check_key_mounts(pod, container)
