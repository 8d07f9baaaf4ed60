"""A bad config is refused at start, in one line naming the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.coordinator import Coordinator
from orchestrator.coordinator.config import load_config
from orchestrator.errors import ConfigError

GOOD = """
[hosts.syn]
python = "current"
engine = "orchestrator.host.synthetic:SyntheticEngine"
models = { echo = "synthetic" }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GOOD + "\n[coordinator]\nheartbeat_intervl_s = 1\n",
            "unknown key coordinator.heartbeat_intervl_s",
        ),
        (GOOD + '\n[coordinator]\nmax_queue = "many"\n', "coordinator.max_queue must be int"),
        (GOOD + '\n[models.echo]\nhosts = ["ghost"]\n', "models.echo.hosts names 'ghost'"),
        (GOOD + '\n[models.other]\nhosts = ["syn"]\n', "which does not serve 'other'"),
        (GOOD.replace('python = "current"', ""), "needs exactly one of 'env'"),
        (GOOD.replace('models = { echo = "synthetic" }', ""), "hosts.syn.models is empty"),
        ("[hosts.syn\n", "not valid TOML"),
        (
            GOOD + '\n[models.echo]\nhosts = ["syn"]\nhosts_macos = ["syn", "syn2"]\n',
            "models.echo.hosts_macos lists ['syn', 'syn2'], hosts lists ['syn']",
        ),
    ],
)
def test_bad_config_is_refused_in_one_line_with_the_key_and_fix(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message
    assert "fix" in message or "must be" in message or "not valid TOML" in message


def test_a_host_env_naming_no_host_project_is_refused_at_start(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('python = "current"', 'env = "no_such_host_env"'))
    with pytest.raises(ConfigError) as info:
        Coordinator(load_config(path)).start()
    message = str(info.value)
    assert message.startswith(f"{path}: hosts.syn.env: unknown host 'no_such_host_env'")
    assert "legacy_host" in message and "mlx_host" in message and "fix" in message
    # A real host project whose env is missing or stale raises EnvMissingError / EnvStaleError
    # naming `nox -s hosts`: tests/test_envs.py builds and breaks throwaway envs to show it.


def test_the_default_config_routes_qwen3_asr_mlx_first_then_legacy() -> None:
    config = load_config(Path(__file__).resolve().parents[1] / "orchestrator.toml")
    route = config.resolve_model("qwen3")
    assert route is not None and route.hosts == ("mlx_host", "legacy_host")
    assert config.hosts["mlx_host"].models["qwen3-asr"] == "mlx-community/Qwen3-ASR-0.6B-8bit"
    assert config.hosts["legacy_host"].models["qwen3-asr"] == "Qwen/Qwen3-ASR-0.6B"
    for alias in ("whisper", "parakeet", "voxtral-realtime", "glm-asr", "vibevoice-asr"):
        assert config.resolve_model(alias) is not None


@pytest.mark.parametrize(
    ("table", "key", "value", "allowed"),
    [
        ("coordinator", "max_queue", "-1", ">= 1"),
        ("coordinator", "heartbeat_interval_s", "0", "> 0"),
        ("coordinator", "request_timeout_s", "-5.0", "> 0"),
        ("coordinator", "request_timeout_s", "nan", "> 0"),
        ("coordinator", "request_timeout_s", "inf", "<= 86400"),
        ("coordinator", "metrics_port", "70000", "<= 65535"),
        ("hosts.syn", "max_inflight", "0", ">= 1"),
        ("hosts.syn", "memory_limit_mb", "-1", ">= 0"),
        ("hosts.syn.restart", "backoff_factor", "0.5", ">= 1"),
        ("restart", "max_restarts", "-2", ">= 0"),
    ],
)
def test_numbers_out_of_range_are_refused_naming_file_key_value_and_range(
    tmp_path: Path, table: str, key: str, value: str, allowed: str
) -> None:
    # GOOD ends inside [hosts.syn]: its keys go right there, other tables get a header.
    header = "" if table == "hosts.syn" else f"\n[{table}]\n"
    path = write(tmp_path, GOOD + f"{header}{key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {table}.{key} = {value}"), message
    assert "out of range" in message and allowed in message and "\n" not in message


def test_every_numeric_config_field_declares_its_range() -> None:
    """The range check is generic: a limit added without a range would slip through unchecked."""
    import dataclasses
    import typing

    from orchestrator.coordinator import config as config_mod

    for cls in (
        config_mod.CoordinatorSettings,
        config_mod.HostConfig,
        config_mod.RestartPolicy,
        config_mod.RemoteSettings,
    ):
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if hints[field.name] in (int, float):
                assert config_mod.RANGE in field.metadata, f"{cls.__name__}.{field.name}"


def test_type_mistakes_name_the_type_in_plain_words(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + '\n[coordinator]\nmax_queue = "many"\n')
    with pytest.raises(ConfigError, match="fix: write an integer"):
        load_config(path)


def test_a_host_python_that_does_not_exist_is_refused_at_load(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('"current"', f'"{tmp_path}/no/python"'))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: hosts.syn.python = ") and "does not exist" in message
    assert "fix" in message and "\n" not in message


def test_a_non_string_env_vars_value_is_refused_at_load(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "env_vars = { OMP_NUM_THREADS = 2 }\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: hosts.syn.env_vars.OMP_NUM_THREADS must be a string")
    assert 'OMP_NUM_THREADS = "2"' in message


def test_the_cli_refuses_a_missing_python_in_one_line(tmp_path: Path) -> None:
    """Was: a broker traceback, a 10 s wait and `orchestrator transcribe: ` with no message."""
    import numpy as np

    from cli_support import run_cli
    from orchestrator.audio.wav import write_wav

    path = write(tmp_path, GOOD.replace('"current"', '"/no/such/python3"'))
    wav = tmp_path / "tone.wav"
    write_wav(wav, 0.1 * np.sin(np.arange(16000) / 10.0), 16000)
    result = run_cli("transcribe", str(wav), "--config", str(path), "--model", "echo")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("orchestrator transcribe: ") and "hosts.syn.python = " in last
    assert "'/no/such/python3' does not exist" in last


DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "orchestrator.toml"


@pytest.mark.parametrize(
    ("platform", "order"),
    [
        ("linux", ("ct2_host", "legacy_host", "mlx_host")),  # MLX's CPU backend is the slowest
        ("darwin", ("mlx_host", "ct2_host", "legacy_host")),  # MLX on Metal is the fastest
    ],
)
def test_the_default_config_serves_whisper_tiny_en_on_all_three_hosts_in_the_platforms_order(
    platform: str, order: tuple[str, ...]
) -> None:
    config = load_config(DEFAULT_CONFIG, platform=platform)
    route = config.resolve_model("tiny.en")
    assert route is not None and route.name == "whisper-tiny.en" and route.hosts == order
    assert config.resolve_model("qwen3-asr").hosts == ("mlx_host", "legacy_host")  # unchanged
    refs = {name: host.all_models["whisper-tiny.en"] for name, host in config.hosts.items()}
    assert refs == {
        "ct2_host": "bundled:whisper-tiny.en:ct2",
        "legacy_host": "bundled:whisper-tiny.en:hf",
        "mlx_host": "bundled:whisper-tiny.en:mlx",
    }
    ct2 = config.hosts["ct2_host"]
    assert ct2.env == "ct2_host" and ct2.engine == "ct2_host.engine:FasterWhisperEngine"
    assert ct2.models["whisper-tiny.en"] == "bundled:whisper-tiny.en:ct2"
    assert ct2.memory_limit_mb > 0 and ct2.max_streams > 0
