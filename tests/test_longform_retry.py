"""Long-form runs survive a failed piece: transient failures (a deadline, a crash, no replica
serving) are retried on another host of the model, the caller's mistakes are not,
and a piece that fails every attempt raises its last typed error naming its time range.

The end-to-end tests run a real coordinator and real synthetic host processes; a "slow" host
sleeps longer than the per-piece deadline (the synthetic engine's ``delay_s``), so every piece
it takes passes the deadline, as the CPU-only MLX host's did under load. The client the runner
drives is the real ``AsyncClient``, seen through a pass-through that records each attempt's pin.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest

from bench.recordings import write_long_wav
from cli_support import public_coordinator, run_cli, short_tmp_dir, synthetic_toml
from orchestrator.cli.progress import ProgressBar
from orchestrator.coordinator.config import config_from_dict
from orchestrator.errors import (
    BadAudioError,
    BadRequestError,
    DeadlineExceededError,
    ErrorCode,
    HostCrashedError,
    ModelUnavailableError,
    NoHostAvailableError,
    OrchestratorError,
    OverloadedError,
    UnknownModelError,
    error_class,
)
from orchestrator.longform import formats
from orchestrator.longform.retry import (
    TRANSIENT_CODES,
    RetryPolicy,
    exhausted,
    failed_host,
    is_transient,
    retry_host,
)
from orchestrator.longform.runner import Progress, transcribe_file
from support import assert_exact_cover, make_config, running, synthetic_host

#: Per attempt of a piece: the slow host's delay is well past it, the healthy host far inside.
PIECE_TIMEOUT_S = 1.0
SLOW = {"delay_s": 4.0}
#: One piece at a time on the slow host, so a piece's retry never shares its process.
SLOW_HOST = {"engine_options": SLOW, "max_inflight": 1}
#: Where the last error must be a deadline: no recycling of the slow host (a request stuck past
#: this grace) while a retry waits for it, which would end that retry as host_crashed instead.
NO_RECYCLING = {"stuck_request_grace_s": 30.0}
#: Short backoff: the behaviour under test is where a retry goes, not how long it waits.
BACKOFF_S = 0.05


class RecordingClient:
    """The real AsyncClient, passed through; records the host each attempt was pinned to."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.pins: list[str | None] = []

    async def transcribe(self, audio: Any, **kwargs: Any) -> Any:
        self.pins.append(kwargs.get("host"))
        return await self.client.transcribe(audio, **kwargs)

    async def health(self, timeout: float = 5.0) -> dict[str, Any]:
        return await self.client.health(timeout)


def _run(coord: Any, path: Path, **kwargs: Any) -> tuple[Any, RecordingClient]:
    """``transcribe_file`` through a recording client; returns (transcript or error, client)."""
    recorder = RecordingClient(coord.client())

    async def go() -> Any:
        try:
            return await transcribe_file(recorder, path, retry_backoff_s=BACKOFF_S, **kwargs)
        except OrchestratorError as exc:
            return exc

    return asyncio.run(go()), recorder


def _one_piece_wav(tmp_path: Path, seconds: float = 25.0) -> Path:
    """Shorter than a piece's window: the whole file is one piece, 0.0-``seconds`` s."""
    path = tmp_path / "short.wav"
    write_long_wav(path, seconds, seed=21, floor=0.002)
    return path


# ---------------------------------------------------------------------- the rules, one by one
def test_only_failures_of_a_host_or_the_moment_are_transient() -> None:
    transient = {
        code for code in ErrorCode if is_transient(error_class(code)("x"), host_chosen_here=False)
    }
    assert transient == TRANSIENT_CODES
    assert transient == {
        ErrorCode.DEADLINE_EXCEEDED,
        ErrorCode.HOST_CRASHED,
        ErrorCode.NO_HOST_AVAILABLE,
    }
    # The caller's mistakes, and a full queue: the caller's to answer (back off), not retried.
    for refused in (BadAudioError, BadRequestError, UnknownModelError, OverloadedError):
        assert not is_transient(refused("x"), host_chosen_here=True)
    # "Not on this host" moves on only when the runner, not the caller, chose that host.
    assert is_transient(ModelUnavailableError("x"), host_chosen_here=True)
    assert not is_transient(ModelUnavailableError("x"), host_chosen_here=False)


def test_the_failed_host_is_read_from_the_errors_details() -> None:
    hosts = ["ct2_host", "legacy_host", "mlx_host"]
    said = DeadlineExceededError("no answer from mlx_host.0", host="mlx_host", replica="mlx_host.0")
    assert failed_host(said, hosts) == "mlx_host"
    assert failed_host(HostCrashedError("died", host="legacy_host"), hosts) == "legacy_host"
    # Never from the message's words, nor a host the model does not have.
    assert failed_host(DeadlineExceededError("no answer from mlx_host.0"), hosts) is None
    assert failed_host(DeadlineExceededError("x", host="other_host"), hosts) is None
    assert failed_host(DeadlineExceededError("deadline passed while queued"), hosts) is None


def test_retries_walk_the_fallback_order_and_a_pin_is_kept() -> None:
    hosts = ["a", "b", "c"]
    assert retry_host(hosts, ["b"], None) == "a"
    assert retry_host(hosts, ["a"], None) == "b"
    assert retry_host(hosts, ["a", "b"], None) == "c"
    assert retry_host(hosts, ["a", "b", "c"], None) is None  # the coordinator chooses
    assert retry_host(hosts, ["b"], "b") == "b"


def test_the_last_error_keeps_its_class_and_names_the_piece_and_the_fix_on_one_line() -> None:
    last = DeadlineExceededError("no answer from b.0\nwithin the deadline", model="m")
    err = exhausted(last, 3600.0, 3630.25, 3, ["a", "b"])
    assert type(err) is DeadlineExceededError and err.code == ErrorCode.DEADLINE_EXCEEDED
    assert "\n" not in str(err)
    assert err.message.startswith("piece 3600.0-3630.2s failed all 3 attempt(s) (failed on a, b)")
    assert "no answer from b.0 within the deadline" in err.message
    assert "(fix: raise the per-piece timeout" in err.message
    assert err.details == {
        "model": "m",
        "piece_start_s": 3600.0,
        "piece_end_s": 3630.25,
        "attempts": 3,
    }
    # A message that already names its fix gets no second one.
    fixed = exhausted(NoHostAvailableError("gone (fix: restart it)"), 0.0, 1.0, 2, [])
    assert fixed.message.count("fix:") == 1


@pytest.mark.parametrize("attempts", [0, -1, 11, 2.5, True, "3"])
def test_a_bad_attempt_count_is_refused_with_the_fix(attempts: Any) -> None:
    with pytest.raises(BadRequestError, match=r"piece_attempts must be .*\(fix: e\.g\."):
        RetryPolicy(attempts)
    with pytest.raises(BadRequestError, match="retry_backoff_s"):
        RetryPolicy(3, -1.0)


def test_the_progress_bar_shows_retries_once_there_are_some() -> None:
    out = io.StringIO()
    bar = ProgressBar(out)
    bar(Progress(30.0, 60.0, 1, 1.0))
    bar(Progress(60.0, 60.0, 2, 2.0, retries=2))  # the last: drawn however soon after
    first, second = out.getvalue().split("\r")[1:]
    assert "retried" not in first
    assert second.endswith("2 pieces  rtf 0.033  2 retried")


# ---------------------------------------------------------------------- end to end
def test_a_host_that_times_out_every_piece_loses_them_to_the_healthy_host(
    tmp_path: Path,
) -> None:
    """(a) The slow host is first in the fallback order, so it takes pieces whenever it has
    room; each one passes the deadline there and is retried on the healthy host. The run
    completes, the transcript covers the file exactly once and in order, retries are counted."""
    path = tmp_path / "meeting.wav"
    write_long_wav(path, 130.0, seed=22, floor=0.002)
    config = make_config(
        {"slow": synthetic_host(**SLOW_HOST), "good": synthetic_host(max_inflight=2)},
        models={"echo": {"hosts": ["slow", "good"]}},
    )
    seen = []
    with running(config) as coord:
        t, recorder = _run(
            coord, path, model="echo", timeout=PIECE_TIMEOUT_S, on_progress=seen.append
        )
        served = {r["name"]: r["served"] for r in coord.health()["replicas"]}
    assert not isinstance(t, Exception), t
    assert_exact_cover(t, path)
    assert t.pieces >= 5 and t.hosts == {"good": t.pieces}
    assert served["slow.0"] == 0
    retried = [w for w in t.warnings if "retried on" in w]
    assert t.retries == len(retried) >= 1
    assert recorder.pins.count("good") == t.retries  # each retry pinned away from the slow host
    assert len(recorder.pins) == t.pieces + t.retries
    for line in retried:
        assert line.startswith("piece ")
        assert "s: deadline_exceeded on slow; retried on good (attempt 2 of 3)" in line
    assert seen[-1].retries == t.retries and seen[-1].pieces_done == t.pieces
    doc = json.loads(formats.render(t, "json"))
    assert doc["retries"] == t.retries and doc["warnings"] == list(t.warnings)
    assert formats.render(t, "srt").startswith("1\n00:00:00,000 --> ")
    assert formats.render(t, "vtt").startswith("WEBVTT\n\n00:00:00.000 --> ")


def test_a_callers_mistake_is_not_retried(tmp_path: Path) -> None:
    """(b) A piece over the coordinator's per-request limit is bad audio on every host: one
    attempt, the typed error as the coordinator gave it, though another host was there."""
    path = _one_piece_wav(tmp_path)
    config = make_config(
        {"a": synthetic_host(), "b": synthetic_host()},
        models={"echo": {"hosts": ["a", "b"]}},
        max_audio_s=10.0,
    )
    with running(config) as coord:
        err, recorder = _run(coord, path, model="echo", timeout=PIECE_TIMEOUT_S)
        errors = coord.health()["coordinator"]["errors_by_code"]
        # Mistakes found before any piece is sent: an unknown model, a pin to a host that does
        # not serve the model, a bad attempt count.
        unknown, early = _run(coord, path, model="nope", parallel=2)
        stranger, pinned = _run(coord, path, model="echo", host="nobody")
        bad_count, counted = _run(coord, path, model="echo", piece_attempts=0)
    assert isinstance(err, BadAudioError) and "over the 10s limit" in err.message
    assert "attempt" not in err.message  # raised as it came: nothing was retried
    assert recorder.pins == [None] and errors == {"bad_audio": 1}
    assert isinstance(unknown, UnknownModelError) and early.pins == []
    assert isinstance(stranger, NoHostAvailableError) and pinned.pins == []
    assert "does not serve 'echo'" in stranger.message and "fix:" in stranger.message
    assert isinstance(bad_count, BadRequestError) and counted.pins == []


def test_when_every_host_fails_a_piece_its_last_error_names_the_piece(tmp_path: Path) -> None:
    """(c) Both hosts time out: the first attempt goes where the coordinator puts it, the
    second to the host that has not failed yet, the third (every host has failed it) to
    whichever the coordinator picks; the last deadline error is raised with the piece's range."""
    path = _one_piece_wav(tmp_path)
    config = make_config(
        {"a": synthetic_host(**SLOW_HOST), "b": synthetic_host(**SLOW_HOST)},
        models={"echo": {"hosts": ["a", "b"]}},
        **NO_RECYCLING,
    )
    with running(config) as coord:
        err, recorder = _run(coord, path, model="echo", timeout=PIECE_TIMEOUT_S)
    assert isinstance(err, DeadlineExceededError), err
    assert recorder.pins == [None, "b", None]
    assert err.message.startswith("piece 0.0-25.0s failed all 3 attempt(s) (failed on a, b): ")
    assert "fix:" in err.message and "\n" not in str(err)
    assert err.details["attempts"] == 3 and err.details["piece_end_s"] == 25.0


def test_a_pinned_host_keeps_its_retries_and_fails_cleanly(tmp_path: Path) -> None:
    """(d) ``host=`` pins every attempt: a comparison run never mixes hosts, even when another
    host of the model would have answered."""
    path = _one_piece_wav(tmp_path)
    config = make_config(
        {"slow": synthetic_host(**SLOW_HOST), "good": synthetic_host()},
        models={"echo": {"hosts": ["good", "slow"]}},
        **NO_RECYCLING,
    )
    with running(config) as coord:
        err, recorder = _run(
            coord, path, model="echo", host="slow", timeout=PIECE_TIMEOUT_S, piece_attempts=2
        )
        served = {r["name"]: r["served"] for r in coord.health()["replicas"]}
    assert isinstance(err, DeadlineExceededError), err
    assert recorder.pins == ["slow", "slow"] and served["good.0"] == 0
    assert err.message.startswith("piece 0.0-25.0s failed all 2 attempt(s) (failed on slow): ")


def test_cli_reports_retries_in_json_and_warns_on_stderr(tmp_path: Path) -> None:
    with short_tmp_dir() as folder:
        hosts = {
            "slow": {"models": {"echo": "synthetic"}, **SLOW_HOST},
            "good": {"models": {"echo": "synthetic"}, "max_inflight": 2},
        }
        config = config_from_dict(
            synthetic_toml(folder / "rt", hosts, models={"echo": {"hosts": ["slow", "good"]}})
        )
        wav = folder / "talk.wav"
        write_long_wav(wav, 95.0, seed=23, floor=0.002)
        with public_coordinator(config) as coord:
            cf = str(coord.connection_file)
            report = run_cli("transcribe", str(wav), "--model", "echo", "--connection-file", cf, "--json", "--timeout", str(PIECE_TIMEOUT_S))  # fmt: skip
            refused = run_cli("transcribe", str(wav), "--model", "echo", "--connection-file", cf, "--piece-attempts", "0")  # fmt: skip
    assert report.returncode == 0, report.stderr
    (result,) = json.loads(report.stdout)["results"]
    assert result["retries"] >= 1 and result["host"] == "good"
    warned = [line for line in report.stderr.splitlines() if "retried on good" in line]
    assert len(warned) == result["retries"]
    assert all("deadline_exceeded on slow" in line for line in warned)
    assert refused.returncode == 2
    assert "--piece-attempts: 0 is not a number of attempts in [1, 10]" in refused.stderr
