"""The real engines in their real envs, on a tiny random-weight Qwen3-ASR checkpoint.

No machine here reaches the model hub, so a session fixture builds tiny checkpoints in the hub
repos' file layouts with the shipped builder (``python -m tiny_checkpoints``), and each
engine loads them through its stack's real public API: qwen-asr 0.0.6 (transformers 4.57, hub 0.x)
in ``envs/legacy_host``, mlx-audio 0.3.1 (transformers 5, hub 1.x) in ``envs/mlx_host``. The same
Qwen3-ASR directory goes to both engines; the MLX one also serves a tiny Whisper.

Each env runs one subprocess (``engine_checks/engine_driver.py``) that walks the engine through a
plan of loads and transcripts, because importing torch + qwen-asr alone takes 10-30 s here; the
tests then read its report. The subprocess runs with ``HF_HUB_OFFLINE=1`` and an empty hub cache,
so hub ids can only fail, and must fail quickly with a typed error. A tiny vocabulary never
produces the real end-of-sequence ids, so every transcript here is capped in tokens.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestrator.envs import checks as envs
from orchestrator.errors import EnvMissingError

ENGINES = {
    "legacy_host": "legacy_host.engine:QwenAsrEngine",
    "mlx_host": "mlx_host.engine:MlxAudioEngine",
}
#: The real checkpoints each host serves by default (never in the test's empty cache).
HUB_IDS = {
    "legacy_host": "Qwen/Qwen3-ASR-0.6B",
    "mlx_host": "mlx-community/Qwen3-ASR-0.6B-8bit",
}
DRIVER = Path(__file__).resolve().parent / "engine_checks" / "engine_driver.py"
#: Generous: importing torch + qwen-asr takes 10-30 s on a busy 2-core machine.
DRIVER_TIMEOUT_S = 600.0
CHECKPOINT_BUILD_TIMEOUT_S = 120.0
#: "Within seconds" is the behaviour under test for an offline hub id, not a speed benchmark.
OFFLINE_FAILURE_DEADLINE_S = 10.0
#: The model's own default cap (from its options) and a smaller per-request one.
MODEL_TOKEN_CAP = 12
REQUEST_TOKEN_CAP = 5
SAMPLING_TOKEN_CAP = 6
#: Audio tokens Qwen3-ASR makes of one second at 16 kHz: 100 mel frames -> 13 after its convs.
AUDIO_TOKENS_PER_SECOND = 13
TINY = "tiny"
#: A device no test machine has: CI and this machine run torch on CPU.
ABSENT_DEVICE = "cuda:7"
#: Recipes of tiny_checkpoints (also the model names the MLX engine serves them as).
QWEN = "qwen3-asr"
WHISPER = "whisper"


def env_python(host: str) -> Path:
    """The host env's interpreter; skipped locally (failed in CI) when the env is not built."""
    try:
        return envs.host_python(host)
    except EnvMissingError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc}: CI builds the host envs before the tests")
        pytest.skip(str(exc))  # the message names the fix


def subprocess_env(tmp: Path) -> dict[str, str]:
    """Offline, with an empty hub cache and numba's cache out of site-packages."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp / "hf-home"),
        NUMBA_CACHE_DIR=str(tmp / "numba-cache"),
        HF_HUB_DISABLE_TELEMETRY="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def build_checkpoint(out_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(env_python("legacy_host")), "-m", "tiny_checkpoints", str(out_dir), *extra],
        cwd=envs.project_root(),  # the builder package sits at the checkout's top level
        capture_output=True,
        text=True,
        timeout=CHECKPOINT_BUILD_TIMEOUT_S,
        check=False,
    )


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped builder's checkpoints: Qwen3-ASR (both stacks) and Whisper (mlx-audio)."""
    root = tmp_path_factory.mktemp("checkpoints")
    built = {QWEN: root / "qwen3-asr-tiny", WHISPER: root / "whisper-tiny"}
    for model, out_dir in built.items():
        done = build_checkpoint(out_dir, "--model", model)
        assert done.returncode == 0, done.stderr
    return built


@pytest.fixture(scope="session")
def broken_checkpoints(
    tiny_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Copies of the tiny checkpoint damaged the ways downloads and hand edits damage them."""
    root = tmp_path_factory.mktemp("broken")
    broken: dict[str, Path] = {"missing_path": root / "qwen3-asr-nowhere"}
    for name in ("truncated", "bad_json", "misshaped"):
        broken[name] = root / f"qwen3-asr-{name.replace('_', '')}"
        shutil.copytree(tiny_checkpoints[QWEN], broken[name])
    weights = broken["truncated"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])  # a cut download
    (broken["bad_json"] / "config.json").write_text(
        '{"model_type": "qwen3_asr", "thinker_config": {'
    )
    config_path = broken["misshaped"] / "config.json"
    config = json.loads(config_path.read_text())
    config["thinker_config"]["text_config"]["hidden_size"] = 48  # weights stay 32 wide
    config["thinker_config"]["audio_config"]["output_dim"] = 48
    config_path.write_text(json.dumps(config))
    return broken


FAILED_LOADS = (
    "missing_path",
    "truncated",
    "bad_json",
    "misshaped",
    "hub_offline",
    "unknown_load_option",
)


def plan(host: str, checkpoints: dict[str, Path], broken: dict[str, Path]) -> dict[str, Any]:
    """The same walk through both engines; the tests below say what each stack must answer."""

    def transcribe(
        step_id: str, options: dict[str, Any], seconds: float = 2.0, model: str = TINY
    ) -> dict[str, Any]:
        return {
            "id": step_id,
            "op": "transcribe",
            "model": model,
            "seconds": seconds,
            "options": options,
        }

    def load(step_id: str, ref: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"id": step_id, "op": "load", "name": step_id, "ref": ref, "options": options or {}}

    steps = [
        {
            "id": "load",
            "op": "load",
            "name": TINY,
            "ref": str(checkpoints[QWEN]),
            "options": {"max_tokens": MODEL_TOKEN_CAP},
        },
        {"id": "warmup", "op": "warmup", "model": TINY},
        transcribe("two_seconds", {"language": "english"}),
        transcribe("one_second", {"language": "English"}, seconds=1.0),
        transcribe("default_options", {}),
        transcribe("request_cap", {"max_tokens": REQUEST_TOKEN_CAP}),
        transcribe("context", {"context": "Ada Lovelace, Charles Babbage"}),
        transcribe("temperature", {"temperature": 0.7, "max_tokens": SAMPLING_TOKEN_CAP}),
        transcribe("unknown_option", {"beam_size": 4}),
        transcribe("bad_cap", {"max_tokens": 0}),
        transcribe("bad_language", {"language": "Klingon"}),
        transcribe("empty_audio", {}, seconds=0.0),
        transcribe("unknown_model", {}, model="never-loaded"),
        *(
            load(name, str(broken[name]))
            for name in ("missing_path", "truncated", "bad_json", "misshaped")
        ),
        load("hub_offline", HUB_IDS[host]),
        load("unknown_load_option", str(checkpoints[QWEN]), {"beam_size": 4}),
        transcribe("after_failures", {"language": "English"}),
        {"id": "capabilities", "op": "capabilities"},
    ]
    if host == "legacy_host":
        steps += [
            {
                "id": "loading_info",
                "op": "call",
                "target": "checkpoint_checks:legacy_loading_info",
                "args": [str(checkpoints[QWEN])],
            },
            load("absent_device", str(checkpoints[QWEN]), {"device": ABSENT_DEVICE}),
            load("bad_dtype", str(checkpoints[QWEN]), {"dtype": "float64"}),
        ]
    if host == "mlx_host":
        steps += [
            load(WHISPER, str(checkpoints[WHISPER])),
            {"id": "whisper_warmup", "op": "warmup", "model": WHISPER},
            transcribe(
                "whisper_options",
                {
                    "language": "English",
                    "context": "Ada Lovelace",
                    "max_tokens": 4,
                    "temperature": 0.0,
                },
                model=WHISPER,
            ),
            transcribe("whisper_bad_language", {"language": "Klingon"}, model=WHISPER),
            {"id": "whisper_capabilities", "op": "capabilities"},
        ]
    return {"engine": ENGINES[host], "engine_options": {}, "steps": steps}


class EngineRun:
    """One driver subprocess's report: each step's outcome, the env's versions, its exit."""

    def __init__(
        self, host: str, report: dict[str, Any], completed: subprocess.CompletedProcess[str]
    ) -> None:
        self.host = host
        self.report = report
        self.returncode = completed.returncode
        self.stderr = completed.stderr

    def ok(self, step: str) -> Any:
        outcome = self.report["steps"][step]
        assert outcome["ok"], (
            f"{self.host} {step}: {outcome.get('error')}\n{outcome.get('traceback', '')}"
        )
        return outcome["value"]

    def error(self, step: str) -> dict[str, Any]:
        outcome = self.report["steps"][step]
        assert not outcome["ok"], f"{self.host} {step} succeeded but must fail: {outcome['value']}"
        return outcome["error"]

    def elapsed_s(self, step: str) -> float:
        return self.report["steps"][step]["elapsed_s"]


class EngineRuns:
    """Runs each env's driver once per session, the first time a test asks for that host."""

    def __init__(self, tmp: Path, checkpoints: dict[str, Path], broken: dict[str, Path]) -> None:
        self._tmp, self._checkpoints, self._broken = tmp, checkpoints, broken
        self._runs: dict[str, EngineRun] = {}
        self._failures: dict[str, str] = {}  # a driver that died is not rerun by every test

    def __getitem__(self, host: str) -> EngineRun:
        if host in self._failures:
            pytest.fail(self._failures[host])
        if host not in self._runs:
            try:
                self._runs[host] = self._run(host)
            except (AssertionError, subprocess.TimeoutExpired) as exc:
                self._failures[host] = str(exc)
                raise
        return self._runs[host]

    def _run(self, host: str) -> EngineRun:
        python = env_python(host)
        work = self._tmp / host
        work.mkdir(exist_ok=True)
        plan_path, report_path = work / "plan.json", work / "report.json"
        plan_path.write_text(json.dumps(plan(host, self._checkpoints, self._broken)))
        completed = subprocess.run(
            [str(python), str(DRIVER), str(plan_path), str(report_path)],
            capture_output=True,
            text=True,
            timeout=DRIVER_TIMEOUT_S,
            env=subprocess_env(work),
            check=False,
        )
        assert report_path.exists(), (
            f"{host} driver wrote no report (exit {completed.returncode}):\n{completed.stderr[-4000:]}"
        )
        return EngineRun(host, json.loads(report_path.read_text()), completed)


@pytest.fixture(scope="session")
def engine_runs(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_checkpoints: dict[str, Path],
    broken_checkpoints: dict[str, Path],
) -> EngineRuns:
    return EngineRuns(tmp_path_factory.mktemp("engine-runs"), tiny_checkpoints, broken_checkpoints)


@pytest.fixture(params=sorted(ENGINES))
def run(request: pytest.FixtureRequest, engine_runs: EngineRuns) -> EngineRun:
    return engine_runs[request.param]


# -- the tiny checkpoint builder -------------------------------------------------------------


#: What each recipe must write: the files of its hub repo's layout.
LAYOUT_FILES = {
    QWEN: {
        "config.json",
        "model.safetensors",
        "vocab.json",
        "merges.txt",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "chat_template.json",
    },
    WHISPER: {
        "config.json",
        "weights.safetensors",
        "vocab.json",
        "merges.txt",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
    },
}
WEIGHTS_FILE = {QWEN: "model.safetensors", WHISPER: "weights.safetensors"}


@pytest.mark.parametrize("model", [QWEN, WHISPER])
def test_tiny_checkpoint_build_is_deterministic_and_reused(tmp_path: Path, model: str) -> None:
    first, second, reseeded = (tmp_path / d / f"{model}-tiny" for d in ("a", "b", "c"))
    for out_dir in (first, second):
        done = build_checkpoint(out_dir, "--model", model)
        assert done.returncode == 0, done.stderr
        assert f"{model} ready in" in done.stdout
    names = sorted(p.name for p in first.iterdir())
    assert LAYOUT_FILES[model] <= set(names)
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name

    mtimes = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    again = build_checkpoint(first, "--model", model)
    assert again.returncode == 0 and "already built" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == mtimes

    done = build_checkpoint(reseeded, "--model", model, "--seed", "7")
    assert done.returncode == 0, done.stderr
    weights = WEIGHTS_FILE[model]
    assert (reseeded / weights).read_bytes() != (first / weights).read_bytes()


def test_tiny_checkpoint_rebuilds_an_incomplete_build(tmp_path: Path) -> None:
    out_dir = tmp_path / "qwen3-asr-tiny"
    assert build_checkpoint(out_dir).returncode == 0
    (out_dir / "tokenizer.json").unlink()  # e.g. a copy interrupted half way
    done = build_checkpoint(out_dir)
    assert done.returncode == 0, done.stderr
    assert "already built" not in done.stdout
    assert (out_dir / "tokenizer.json").is_file()


def test_tiny_checkpoint_refuses_to_overwrite_a_foreign_directory(tmp_path: Path) -> None:
    out_dir = tmp_path / "my-model"
    out_dir.mkdir()
    (out_dir / "notes.txt").write_text("mine")
    done = build_checkpoint(out_dir)
    assert done.returncode == 2
    assert "not a tiny checkpoint build" in done.stderr
    assert [p.name for p in out_dir.iterdir()] == ["notes.txt"]


@pytest.mark.slow
def test_tiny_checkpoint_holds_every_tensor_of_the_real_architecture(
    engine_runs: EngineRuns,
) -> None:
    info = engine_runs["legacy_host"].ok("loading_info")
    assert (
        info["missing_keys"] == []
        and info["unexpected_keys"] == []
        and info["mismatched_keys"] == []
    )
    assert info["lm_head_tied"], "mlx-audio drops lm_head.weight: the fixture must tie embeddings"


# -- serving the tiny model ------------------------------------------------------------------


@pytest.mark.slow
def test_engine_loads_the_tiny_checkpoint_and_transcribes_on_a_worker_thread(
    run: EngineRun,
) -> None:
    run.ok("load")
    run.ok("warmup")
    result = run.ok("two_seconds")
    assert isinstance(result["text"], str)
    assert result["language"] == "English"
    assert result["generation_tokens"] == MODEL_TOKEN_CAP  # a tiny vocabulary never stops early
    assert result["extra"]["hit_max_tokens"] is True
    assert result["prompt_tokens"] > 2 * AUDIO_TOKENS_PER_SECOND


@pytest.mark.slow
def test_audio_tokens_reach_the_prompt(run: EngineRun) -> None:
    # One <|audio_pad|> per encoder frame: a tokenizer that splits it into bytes, or a prompt
    # built without it, would leave the decoder without audio and still "work".
    longer, shorter = run.ok("two_seconds"), run.ok("one_second")
    assert longer["prompt_tokens"] - shorter["prompt_tokens"] == AUDIO_TOKENS_PER_SECOND


@pytest.mark.slow
def test_both_stacks_build_the_same_prompt_for_the_same_audio(engine_runs: EngineRuns) -> None:
    legacy, mlx = engine_runs["legacy_host"], engine_runs["mlx_host"]
    assert legacy.ok("two_seconds")["prompt_tokens"] == mlx.ok("two_seconds")["prompt_tokens"]


@pytest.mark.slow
def test_max_tokens_is_honoured_per_request(run: EngineRun) -> None:
    assert run.ok("default_options")["generation_tokens"] == MODEL_TOKEN_CAP
    assert run.ok("request_cap")["generation_tokens"] == REQUEST_TOKEN_CAP


@pytest.mark.slow
def test_mlx_engine_reports_peak_memory_and_speeds(engine_runs: EngineRuns) -> None:
    extra = engine_runs["mlx_host"].ok("two_seconds")["extra"]
    assert extra["model_type"] == "qwen3_asr"
    assert extra["peak_memory_mb"] > 0
    assert extra["generation_tps"] > 0 and extra["total_time_s"] > 0


@pytest.mark.slow
def test_each_stack_takes_the_options_it_really_has(engine_runs: EngineRuns) -> None:
    legacy, mlx = engine_runs["legacy_host"], engine_runs["mlx_host"]
    # qwen-asr prompts with a context; it decodes greedily and has no temperature.
    assert isinstance(legacy.ok("context")["text"], str)
    assert legacy.error("temperature")["code"] == "bad_request"
    assert "temperature" in legacy.error("temperature")["message"]
    # mlx-audio's Qwen3-ASR samples with a temperature; its prompt has no place for a context.
    assert mlx.ok("temperature")["generation_tokens"] == SAMPLING_TOKEN_CAP
    assert mlx.error("context")["code"] == "bad_request"
    assert "context" in mlx.error("context")["message"]


@pytest.mark.slow
def test_capabilities_name_each_models_options(engine_runs: EngineRuns) -> None:
    legacy, mlx = (
        engine_runs["legacy_host"].ok("capabilities"),
        engine_runs["mlx_host"].ok("capabilities"),
    )
    assert legacy["options"] == ["context", "language", "max_tokens"]
    assert legacy["devices"][TINY] in (
        "cpu/float32",
        "cuda/bfloat16",
        "cuda/float16",
        "mps/float16",
    )
    assert mlx["model_options"][TINY] == ["language", "max_tokens", "temperature"]
    assert mlx["model_types"][TINY] == "qwen3_asr"
    assert mlx["device"] in ("cpu", "gpu")  # Metal is "gpu"


# -- bad input and failed loads --------------------------------------------------------------


@pytest.mark.slow
def test_bad_requests_get_typed_errors(run: EngineRun) -> None:
    for step in ("unknown_option", "bad_cap", "bad_language"):
        assert run.error(step)["code"] == "bad_request", step
    assert "beam_size" in run.error("unknown_option")["message"]
    assert run.error("empty_audio")["code"] == "bad_audio"
    assert run.error("unknown_model")["code"] == "unknown_model"


@pytest.mark.slow
def test_failed_loads_make_the_model_unavailable_with_a_one_line_cause(run: EngineRun) -> None:
    for step in FAILED_LOADS:
        error = run.error(step)
        assert error["type"] == "ModelUnavailableError", (step, error)
        assert error["code"] == "model_unavailable"
        assert repr(step) in error["message"], error["message"]  # names the model
        assert "\n" not in error["message"], error["message"]
    assert "does not exist" in run.error("missing_path")["message"]
    assert "beam_size" in run.error("unknown_load_option")["message"]
    # The library's own reason is quoted, whichever stack found it.
    assert re.search(r"safetensor", run.error("truncated")["message"], re.IGNORECASE)
    assert "JSON" in run.error("bad_json")["message"]
    assert re.search(r"shape|size mismatch", run.error("misshaped")["message"])


@pytest.mark.slow
def test_offline_hub_id_fails_within_seconds_naming_the_cause(run: EngineRun) -> None:
    message = run.error("hub_offline")["message"]
    assert HUB_IDS[run.host] in message
    assert "not in the local Hugging Face cache" in message and "HF_HUB_OFFLINE=1" in message
    assert run.elapsed_s("hub_offline") < OFFLINE_FAILURE_DEADLINE_S


@pytest.mark.slow
def test_engine_keeps_serving_after_failed_loads(run: EngineRun) -> None:
    assert run.ok("after_failures")["generation_tokens"] == MODEL_TOKEN_CAP


@pytest.mark.slow
def test_engine_process_exits_cleanly(run: EngineRun) -> None:
    # mlx aborts at exit (SIGABRT) when the thread that made its streams ended first.
    assert run.returncode == 0, run.stderr[-4000:]


@pytest.mark.slow
def test_each_env_reports_its_own_stack_versions(engine_runs: EngineRuns) -> None:
    legacy, mlx = (
        engine_runs["legacy_host"].report["versions"],
        engine_runs["mlx_host"].report["versions"],
    )
    assert legacy["huggingface-hub"].startswith("0.")
    assert mlx["huggingface-hub"].startswith("1.")
    assert legacy["qwen-asr"] == "0.0.6" and legacy["transformers"] == "4.57.6"
    assert legacy["torch"] != "absent" and legacy["accelerate"] != "absent"
    assert mlx["mlx-audio"] == "0.3.1" and mlx["transformers"].startswith("5.")
    assert mlx["mlx"] != "absent" and mlx["mlx-lm"] != "absent"
    assert "mlx-audio" not in legacy and "qwen-asr" not in mlx


@pytest.mark.slow
def test_mlx_engine_serves_whisper_with_its_own_option_names(engine_runs: EngineRuns) -> None:
    mlx = engine_runs["mlx_host"]
    mlx.ok(WHISPER)
    mlx.ok("whisper_warmup")
    # language, context (initial_prompt), max_tokens (sample_len) and temperature all reach it.
    result = mlx.ok("whisper_options")
    assert result["language"] == "en"  # a name is turned into Whisper's code
    assert result["extra"]["model_type"] == "whisper"
    assert isinstance(result["text"], str) and isinstance(result["generation_tokens"], int)
    assert all(0.0 <= s["start"] <= s["end"] <= 2.0 and s["text"] for s in result["segments"])
    assert mlx.error("whisper_bad_language")["code"] == "bad_request"
    caps = mlx.ok("whisper_capabilities")
    assert caps["model_types"][WHISPER] == "whisper"
    assert caps["model_options"][WHISPER] == [
        "context",
        "language",
        "max_tokens",
        "temperature",
        "word_timestamps",
    ]


@pytest.mark.slow
def test_legacy_engine_refuses_a_device_or_dtype_it_cannot_use(engine_runs: EngineRuns) -> None:
    legacy = engine_runs["legacy_host"]
    assert legacy.ok("capabilities")["devices"][TINY].startswith(("cpu/", "cuda/", "mps/"))
    for step, words in (("absent_device", ABSENT_DEVICE), ("bad_dtype", "float64")):
        error = legacy.error(step)
        assert error["code"] == "model_unavailable"
        assert words in error["message"], error["message"]
