"""The host envs: real venvs built by uv from the committed locks, isolated, stamped and checked.

Stale, missing and broken envs are made on a throwaway project in ``tmp_path`` (a one-package
lock), never on the real ``envs/``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.envs import build as env_build
from orchestrator.envs import checks as envs
from orchestrator.errors import ConfigError, EnvError, EnvMissingError, EnvStaleError

TINY_HOST = "tiny_host"
TINY_PIN = "idna==3.10"
OTHER_PIN = "idna==3.7"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    """A project with the real layout: a root ``orchestrator`` package and one host, one pin."""
    _write(
        tmp_path / "pyproject.toml",
        """
        [project]
        name = "orchestrator"
        version = "0"
        description = "stand-in root package"

        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"
        """,
    )
    _write(tmp_path / "orchestrator" / "__init__.py", "")
    host = tmp_path / "hosts" / TINY_HOST
    _write(
        host / "pyproject.toml",
        """
        [project]
        name = "tiny-host"
        version = "0"
        dependencies = ["idna"]

        [tool.orchestrator.isolation]
        imports = ["idna"]
        packages = ["idna"]

        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"
        """,
    )
    _write(host / TINY_HOST / "__init__.py", "")
    _write(host / envs.LOCK_FILENAME, TINY_PIN + "\n")
    return tmp_path


def _site_packages(root: Path) -> Path:
    (site,) = (envs.env_dir(TINY_HOST, root) / "lib").glob("python3.*/site-packages")
    return site


# --- the real envs -------------------------------------------------------------------------


@pytest.mark.slow
def test_mlx_env_imports_mlx_audio_with_hub_1_and_transformers_5rc(
    host_pythons: dict[str, Path],
) -> None:
    report = env_build.probe_host("mlx_host", envs.project_root())

    assert Path(str(report["prefix"])) == envs.env_dir("mlx_host", envs.project_root())
    versions = report["versions"]
    assert versions["huggingface-hub"].startswith("1.")
    assert versions["transformers"] == "5.0.0rc3"
    assert versions["mlx-audio"] == "0.3.1"
    assert versions["mlx"]
    assert report["size_bytes"] > 0


@pytest.mark.slow
def test_legacy_env_imports_qwen_asr_with_hub_0_transformers_4_and_cpu_torch(
    host_pythons: dict[str, Path],
) -> None:
    report = env_build.probe_host("legacy_host", envs.project_root())

    assert Path(str(report["prefix"])) == envs.env_dir("legacy_host", envs.project_root())
    versions = report["versions"]
    assert versions["huggingface-hub"].startswith("0.")
    assert versions["transformers"] == "4.57.6"
    assert versions["qwen-asr"] == "0.0.6"
    assert versions["torch"].startswith("2.13.0")
    assert report["facts"] == {"torch cuda": None}


@pytest.mark.slow
def test_ct2_env_imports_faster_whisper_and_ctranslate2_with_its_own_hub(
    host_pythons: dict[str, Path],
) -> None:
    report = env_build.probe_host("ct2_host", envs.project_root())

    assert Path(str(report["prefix"])) == envs.env_dir("ct2_host", envs.project_root())
    versions = report["versions"]
    assert versions["faster-whisper"] == "1.2.1"
    assert versions["ctranslate2"] == "4.8.5"
    assert versions["huggingface-hub"]  # whatever faster-whisper's resolution chose, reported
    assert versions["transformers"] is None  # not part of this stack: shown as "-"
    assert report["facts"] == {"ct2 cuda devices": 0}
    row = env_build.isolation_row("ct2_host", report)
    assert "faster-whisper 1.2.1, ctranslate2 4.8.5" in row["stack"] and row["transformers"] == "-"


def test_real_envs_rebuild_is_a_noop_without_any_uv_command(
    host_pythons: dict[str, Path],
) -> None:
    root = envs.project_root()
    assert (
        set(host_pythons) == set(envs.host_names(root)) >= {"mlx_host", "legacy_host", "ct2_host"}
    )
    for host, python in host_pythons.items():
        stamp_mtime = envs.stamp_path(host, root).stat().st_mtime_ns

        report = env_build.build_host(host, root)

        assert report.action is env_build.BuildAction.UP_TO_DATE
        assert report.commands == ()
        assert envs.stamp_path(host, root).stat().st_mtime_ns == stamp_mtime
        assert envs.check_env(host, root) == python


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        (
            "aarch64-apple-darwin",
            {
                "mlx_host": "mlx-metal==",
                "legacy_host": "torch==2.13.0\n",
                "ct2_host": "ctranslate2==4.8.5",
            },
        ),
        (
            "x86_64-manylinux_2_35",
            {
                "mlx_host": "mlx-cpu==",
                "legacy_host": "torch==2.13.0+cpu",
                "ct2_host": "ctranslate2==4.8.5",
            },
        ),
    ],
)
def test_locks_install_on_macos_arm64_and_linux_x86_64(
    tmp_path: Path, platform: str, expected: dict[str, str]
) -> None:
    """A dry-run install of each lock for the target platform: every pin has a wheel there."""
    uv_env = env_build.uv_environment()
    if "manylinux" in platform and not uv_env.get("UV_FIND_LINKS"):
        pytest.skip("Linux pins torch's +cpu build: set PIP_FIND_LINKS to a folder holding it")
    venv = tmp_path / "venv"
    subprocess.run([env_build.uv_executable(), "venv", "-q", str(venv)], check=True)
    root = envs.project_root()
    assert set(envs.host_names(root)) == set(expected)  # a new host adds its line above
    for host in envs.host_names(root):
        result = subprocess.run(
            [
                env_build.uv_executable(),
                "pip",
                "install",
                "--dry-run",
                "--no-deps",
                "--python",
                str(envs.venv_python(venv)),
                "--python-platform",
                platform,
                "-r",
                str(envs.lock_path(host, root)),
            ],
            capture_output=True,
            text=True,
            # mlx and torch publish macOS arm64 wheels for macOS 14 and newer only.
            env={**uv_env, "MACOSX_DEPLOYMENT_TARGET": "14.0"},
            check=False,
        )
        assert result.returncode == 0, f"{host} on {platform}:\n{result.stderr}"
        assert expected[host] in result.stderr + "\n", f"{host} on {platform}:\n{result.stderr}"


def test_locks_record_no_path_of_the_machine_that_made_them() -> None:
    root = envs.project_root()
    for host in envs.host_names(root):
        text = envs.lock_path(host, root).read_text()
        assert not re.search(r"file:|(^|[\s=@])/[A-Za-z]", text, re.MULTILINE), host
        assert "# via" in text  # a real uv lock, not an empty file


# --- env checks on a throwaway project ------------------------------------------------------


def test_check_env_raises_missing_error_naming_the_fix_before_any_build(tiny_root: Path) -> None:
    with pytest.raises(EnvMissingError) as caught:
        envs.check_env(TINY_HOST, tiny_root)

    assert caught.value.host == TINY_HOST
    assert "nox -s hosts" in str(caught.value)


def test_build_makes_a_current_env_and_a_second_build_runs_nothing(tiny_root: Path) -> None:
    first = env_build.build_host(TINY_HOST, tiny_root)
    python = envs.check_env(TINY_HOST, tiny_root)
    stamp_mtime = envs.stamp_path(TINY_HOST, tiny_root).stat().st_mtime_ns
    site_mtime = _site_packages(tiny_root).stat().st_mtime_ns

    second = env_build.build_host(TINY_HOST, tiny_root)

    assert first.action is env_build.BuildAction.BUILT
    assert any(cmd[1:3] == ("pip", "sync") for cmd in first.commands)
    assert first.isolation["versions"]["idna"] == TINY_PIN.split("==")[1]
    assert python == envs.venv_python(envs.env_dir(TINY_HOST, tiny_root))
    assert second.action is env_build.BuildAction.UP_TO_DATE
    assert second.commands == ()
    assert second.isolation == first.isolation
    assert envs.stamp_path(TINY_HOST, tiny_root).stat().st_mtime_ns == stamp_mtime
    assert _site_packages(tiny_root).stat().st_mtime_ns == site_mtime


def test_lock_changed_after_build_makes_env_stale_until_rebuilt(tiny_root: Path) -> None:
    env_build.build_host(TINY_HOST, tiny_root)
    envs.lock_path(TINY_HOST, tiny_root).write_text(OTHER_PIN + "\n")

    with pytest.raises(EnvStaleError) as caught:
        envs.check_env(TINY_HOST, tiny_root)
    rebuilt = env_build.build_host(TINY_HOST, tiny_root)

    assert caught.value.host == TINY_HOST
    assert f"hosts/{TINY_HOST}/{envs.LOCK_FILENAME}" in str(caught.value)
    assert "nox -s hosts" in str(caught.value)
    assert rebuilt.action is env_build.BuildAction.BUILT
    assert rebuilt.isolation["versions"]["idna"] == OTHER_PIN.split("==")[1]
    envs.check_env(TINY_HOST, tiny_root)


def test_host_dependency_change_makes_env_stale_but_root_description_change_does_not(
    tiny_root: Path,
) -> None:
    env_build.build_host(TINY_HOST, tiny_root)
    root_pyproject = tiny_root / "pyproject.toml"
    root_pyproject.write_text(root_pyproject.read_text().replace("stand-in", "renamed"))
    envs.check_env(TINY_HOST, tiny_root)

    host_pyproject = envs.host_dir(TINY_HOST, tiny_root) / "pyproject.toml"
    host_pyproject.write_text(host_pyproject.read_text().replace('["idna"]', '["idna", "six"]', 1))

    with pytest.raises(EnvStaleError, match=f"hosts/{TINY_HOST}/pyproject.toml"):
        envs.check_env(TINY_HOST, tiny_root)


def test_lock_older_than_pyproject_fails_the_build_naming_nox_lock(tiny_root: Path) -> None:
    host_pyproject = envs.host_dir(TINY_HOST, tiny_root) / "pyproject.toml"
    host_pyproject.write_text(host_pyproject.read_text().replace('["idna"]', '["idna<3"]', 1))

    with pytest.raises(EnvError, match="nox -s lock") as caught:
        env_build.build_host(TINY_HOST, tiny_root)

    assert caught.value.host == TINY_HOST
    with pytest.raises(EnvStaleError):
        envs.check_env(TINY_HOST, tiny_root)


def test_env_whose_stack_fails_to_import_fails_loudly_naming_the_host(tiny_root: Path) -> None:
    host_pyproject = envs.host_dir(TINY_HOST, tiny_root) / "pyproject.toml"
    host_pyproject.write_text(
        host_pyproject.read_text().replace('imports = ["idna"]', 'imports = ["no_such_stack"]')
    )

    with pytest.raises(EnvError, match=f"(?s)host '{TINY_HOST}'.*no_such_stack") as caught:
        env_build.build_host(TINY_HOST, tiny_root)

    assert caught.value.host == TINY_HOST
    assert not envs.stamp_path(TINY_HOST, tiny_root).exists()
    with pytest.raises(EnvStaleError, match="no build stamp"):
        envs.check_env(TINY_HOST, tiny_root)


def test_unknown_host_is_a_config_error_listing_the_known_hosts(tiny_root: Path) -> None:
    with pytest.raises(ConfigError, match=TINY_HOST):
        envs.host_python("no_such_host", tiny_root)


def test_root_override_from_environment(tiny_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(envs.ROOT_ENV_VAR, str(tiny_root))

    assert envs.project_root() == tiny_root.resolve()
    assert envs.host_names() == [TINY_HOST]
    with pytest.raises(EnvMissingError):
        envs.host_python(TINY_HOST)


def test_moved_checkout_makes_env_stale_and_rebuild_makes_a_fresh_venv(
    tiny_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env_build.build_host(TINY_HOST, tiny_root)
    moved = tmp_path_factory.mktemp("moved") / "checkout"
    tiny_root.rename(moved)

    with pytest.raises(EnvStaleError, match=envs.ENV_LOCATION_KEY):
        envs.check_env(TINY_HOST, moved)
    rebuilt = env_build.build_host(TINY_HOST, moved)

    assert any(cmd[1] == "venv" for cmd in rebuilt.commands)
    assert Path(str(rebuilt.isolation["prefix"])) == envs.env_dir(TINY_HOST, moved)
    envs.check_env(TINY_HOST, moved)


def test_missing_and_stale_envs_name_the_config_file_and_key(tiny_root: Path) -> None:
    """The coordinator's refusal points at the line to look at, not only at the env folder."""
    from orchestrator.coordinator import Coordinator
    from orchestrator.coordinator.config import load_config

    path = tiny_root / "orchestrator.toml"
    path.write_text(
        f'[hosts.asr]\nenv = "{TINY_HOST}"\nengine = "x.y:Engine"\nmodels = {{ m = "m" }}\n'
    )
    config = load_config(path, root=tiny_root)
    with pytest.raises(EnvMissingError) as missing:
        Coordinator(config).start()
    python = envs.venv_python(envs.env_dir(TINY_HOST, tiny_root))
    python.parent.mkdir(parents=True)
    python.symlink_to(sys.executable)  # an env whose build never finished: no stamp
    with pytest.raises(EnvStaleError) as stale:
        Coordinator(config).start()

    for caught in (missing, stale):
        message = str(caught.value)
        assert message.startswith(f"{path}: hosts.asr.env: "), message
        assert message.endswith("(fix: nox -s hosts)") and caught.value.host == TINY_HOST
    assert "no build stamp" in str(stale.value)
