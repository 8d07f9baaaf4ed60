"""The coordinator end to end: real host subprocesses, real sockets, the synthetic engine."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from orchestrator.coordinator.supervisor import HostState
from orchestrator.errors import (
    BadAudioError,
    BadRequestError,
    DeadlineExceededError,
    HostCrashedError,
    NoHostAvailableError,
    OverloadedError,
    UnknownModelError,
)
from orchestrator.wire.protocol import VERSION_FRAME, Codec, Kind, Message, new_key
from support import (
    assert_fingerprint,
    assert_gone,
    make_config,
    replica,
    running,
    synthetic_host,
    tone_pcm16,
    wait_for,
)


def test_200_concurrent_transcribe_calls_each_get_their_own_audio_back() -> None:
    config = make_config({"syn": synthetic_host(replicas=2, max_inflight=8)})
    with running(config) as coord:

        async def main() -> None:
            client = coord.client()
            clips = [tone_pcm16(1600 + i, seed=i) for i in range(200)]
            results = await asyncio.gather(
                *(client.transcribe(c.tobytes(), sample_rate=16000, model="echo") for c in clips)
            )
            for clip, result in zip(clips, results):
                assert_fingerprint(result.text, clip)
                assert result.host == "syn" and result.model == "echo"
                assert result.timings.total_s >= result.timings.compute_s >= 0
            assert {r.replica for r in results} == {"syn.0", "syn.1"}
            await client.aclose()

        asyncio.run(main())
        health = coord.health()
        assert sum(r["served"] for r in health["replicas"]) >= 200


def test_sync_client_twin_transcribes_numpy_float_audio() -> None:
    with running(make_config()) as coord:
        client = coord.sync_client()
        pcm = tone_pcm16(8000, seed=1)
        result = client.transcribe(
            pcm.astype(np.float32) / 32768.0, sample_rate=16000, model="echo"
        )
        assert_fingerprint(result.text, pcm)
        client.close()


def test_host_killed_under_load_requests_are_retried_or_answered_within_deadline() -> None:
    config = make_config(
        {"syn": synthetic_host(replicas=2, max_inflight=4, engine_options={"delay_s": 0.05})}
    )
    with running(config) as coord:
        victim = replica(coord, "syn.0")["pid"]

        async def main() -> None:
            client = coord.client()
            clips = [tone_pcm16(800, seed=i) for i in range(120)]

            async def one(i: int) -> object:
                await asyncio.sleep(i * 0.01)
                try:
                    return await client.transcribe(
                        clips[i].tobytes(), sample_rate=16000, model="echo", timeout=10
                    )
                except HostCrashedError as exc:
                    return exc

            async def killer() -> None:
                await asyncio.sleep(0.3)
                os.kill(victim, signal.SIGKILL)

            started = time.monotonic()
            results, _ = await asyncio.gather(
                asyncio.gather(*(one(i) for i in range(120))), killer()
            )
            assert time.monotonic() - started < 10 + 5
            ok = [(i, r) for i, r in enumerate(results) if not isinstance(r, Exception)]
            for i, r in ok:
                assert_fingerprint(r.text, clips[i])
            retried = [r for _, r in ok if r.attempts > 1]
            assert len(ok) >= 100, f"only {len(ok)} of 120 served"
            assert retried or len(ok) == 120
            await client.aclose()

        asyncio.run(main())
        wait_for(lambda: replica(coord, "syn.0")["state"] == "ready", what="syn.0 back")
        assert replica(coord, "syn.0")["restarts"] == 1
        assert replica(coord, "syn.0")["pid"] != victim
        client = coord.sync_client()
        pcm = tone_pcm16(3200, seed=99)
        for _ in range(4):
            assert_fingerprint(
                client.transcribe(pcm.tobytes(), sample_rate=16000, model="echo").text, pcm
            )
        client.close()


def test_single_host_killed_mid_request_answers_host_crashed_then_recovers() -> None:
    config = make_config({"syn": synthetic_host(engine_options={"delay_s": 2.0})})
    with running(config) as coord:
        pid = replica(coord, "syn.0")["pid"]

        async def main() -> None:
            client = coord.client()
            call = asyncio.ensure_future(
                client.transcribe(
                    tone_pcm16(160, 0).tobytes(), sample_rate=16000, model="echo", timeout=8
                )
            )
            await asyncio.to_thread(wait_for, lambda: replica(coord, "syn.0")["inflight"] == 1)
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(HostCrashedError):
                await call
            await client.aclose()

        asyncio.run(main())
        wait_for(lambda: replica(coord, "syn.0")["state"] == "ready", what="restart")
        client = coord.sync_client()
        result = client.transcribe(tone_pcm16(160, 1).tobytes(), sample_rate=16000, model="echo")
        assert result.replica == "syn.0"
        client.close()


def test_hanging_engine_gives_deadline_exceeded_and_the_host_is_recycled() -> None:
    with running(make_config()) as coord:
        client = coord.sync_client()
        pid = replica(coord, "syn.0")["pid"]
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            client.transcribe(
                tone_pcm16(160, 0).tobytes(),
                sample_rate=16000,
                model="echo",
                timeout=0.5,
                context="hang",
            )
        assert time.monotonic() - started < 2.0
        # Heartbeats kept coming (the main thread is free), so only the stuck request can tell.
        wait_for(lambda: replica(coord, "syn.0")["restarts"] >= 1, what="recycle")
        wait_for(lambda: replica(coord, "syn.0")["state"] == "ready", what="ready again")
        assert replica(coord, "syn.0")["pid"] != pid
        assert "stuck" in replica(coord, "syn.0")["last_restart_reason"]
        assert coord.health()["coordinator"]["recycled_stuck"] == 1
        assert client.transcribe(tone_pcm16(160, 2).tobytes(), sample_rate=16000, model="echo").text
        client.close()


def test_host_crashing_at_every_start_ends_failed_after_bounded_restarts() -> None:
    config = make_config(
        {
            "good": synthetic_host({"echo": "s"}),
            "bad": synthetic_host({"other": "s"}, engine_options={"crash_on_start": True}),
        }
    )
    with running(config) as coord:
        wait_for(lambda: replica(coord, "bad.0")["state"] == "failed", what="bad host failed")
        time.sleep(0.5)
        bad = replica(coord, "bad.0")
        assert bad["state"] == "failed" and bad["pid"] is None
        assert bad["restarts"] == 5  # max_restarts in FAST_RESTART, then no more
        assert "restarts in" in bad["reason"]
        assert str(70) in bad["last_restart_reason"]  # the synthetic crash's exit code
        client = coord.sync_client()
        with pytest.raises(NoHostAvailableError):
            client.transcribe(tone_pcm16(160, 0).tobytes(), sample_rate=16000, model="other")
        assert (
            client.transcribe(tone_pcm16(160, 0).tobytes(), sample_rate=16000, model="echo").host
            == "good"
        )
        client.close()


def test_missed_heartbeats_of_a_stopped_host_get_it_restarted() -> None:
    with running(make_config()) as coord:
        pid = replica(coord, "syn.0")["pid"]
        os.kill(pid, signal.SIGSTOP)  # alive but silent: only heartbeats can tell
        try:
            wait_for(lambda: replica(coord, "syn.0")["restarts"] == 1, what="hang detected")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        wait_for(lambda: replica(coord, "syn.0")["state"] == "ready", what="ready again")
        assert "no heartbeat" in replica(coord, "syn.0")["last_restart_reason"]
        assert_gone({pid})


_COORDINATOR_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from support import make_config, synthetic_host
    from orchestrator.coordinator import Coordinator
    coord = Coordinator(make_config({{"a": synthetic_host(replicas=2), "b": synthetic_host({{"x": "s"}})}})).start()
    print(" ".join(str(r.pid) for r in coord.broker.supervisor.replicas), flush=True)
    time.sleep(600)
    """
)


def test_sigkill_of_the_coordinator_leaves_no_host_alive_after_3s() -> None:
    tests = os.path.dirname(__file__)
    proc = subprocess.Popen(
        [sys.executable, "-c", _COORDINATOR_SCRIPT.format(tests=tests)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        pids = {int(p) for p in proc.stdout.readline().split()}
        assert len(pids) == 3
        proc.kill()
        proc.wait()
        assert_gone(pids, within_s=3.0)
    finally:
        proc.kill()


def test_bad_input_gets_typed_errors_and_the_system_keeps_serving() -> None:
    with running(make_config(max_message_bytes=1_000_000)) as coord:
        client = coord.sync_client()
        good = tone_pcm16(1600, 7)

        with pytest.raises(UnknownModelError):
            client.transcribe(good.tobytes(), sample_rate=16000, model="no-such-model")
        with pytest.raises(BadAudioError):
            client.transcribe(b"\x01\x02\x03", sample_rate=16000, model="echo")  # odd-length PCM16
        with pytest.raises(BadAudioError):
            client.transcribe(b"", sample_rate=16000, model="echo")
        with pytest.raises(BadAudioError):
            client.transcribe(
                np.array([0.1, np.nan, 0.2], dtype=np.float32), sample_rate=16000, model="echo"
            )
        with pytest.raises(BadAudioError):
            client.transcribe(good.tobytes(), sample_rate=1234567, model="echo")
        with pytest.raises(BadRequestError):
            client.transcribe(good.tobytes(), sample_rate=16000, model="echo", speaker="bob")
        with pytest.raises(BadRequestError):  # oversized: refused before it is sent
            client.transcribe(
                np.zeros(2_000_000, dtype=np.int16).tobytes(), sample_rate=16000, model="echo"
            )

        # The same faults sent raw, past the client's own checks, reach the host's checks.
        raw = coord.sync_client()
        for header, payload, expected in [
            (
                {"model": "echo", "sample_rate": 16000, "format": "pcm16"},
                b"\x01\x02\x03",
                "bad_audio",
            ),
            ({"model": "echo", "sample_rate": 7, "format": "pcm16"}, good.tobytes(), "bad_audio"),
            (
                {"model": "echo", "sample_rate": 16000, "format": "f32"},
                np.array([np.nan], "<f4").tobytes(),
                "bad_audio",
            ),
            ({"model": "echo", "sample_rate": 16000, "format": "mp3"}, good.tobytes(), "bad_audio"),
        ]:
            rid = raw._core.new_id()
            raw._send(Message(Kind.TRANSCRIBE, {"id": rid, **header}, [payload]))
            reply = raw._wait(rid, 5)
            assert reply.kind is Kind.ERROR and reply.header["error"]["code"] == expected, (
                reply.header
            )
        raw.close()

        # Frames with a bad signature, garbage, an unknown kind, an oversized message: dropped, counted.
        sock = coord.ctx.socket(zmq.DEALER)
        sock.connect(coord.inproc_endpoint)
        forged = Codec(new_key()).encode(Message(Kind.HEALTH, {"id": "x"}))
        sock.send_multipart(forged)
        sock.send_multipart([b"garbage"])
        sock.send_multipart([VERSION_FRAME, b"sig", b"transcribe", b"{}"])
        signed_unknown_kind = [b"nope", b'{"id": "k"}']
        digest = Codec(coord.client_key).sign(signed_unknown_kind)
        sock.send_multipart([VERSION_FRAME, digest, *signed_unknown_kind])
        sock.send_multipart([b"orc/1", digest, *signed_unknown_kind])  # another release
        real = Codec(coord.client_key, max_message_bytes=10**9)
        sock.send_multipart(
            real.encode(Message(Kind.TRANSCRIBE, {"id": "big"}, [b"\0" * 1_200_000]))
        )
        replayed = real.encode(Message(Kind.HEALTH, {"id": "r"}))
        sock.send_multipart(replayed)
        sock.send_multipart(replayed)
        assert sock.poll(2000)
        assert Codec(coord.client_key).decode(sock.recv_multipart()).kind is Kind.HEALTH_REPLY
        assert not sock.poll(300), "the replay must not be answered"
        sock.close(linger=0)

        dropped = wait_for(
            lambda: (
                (d := coord.health()["coordinator"]["dropped"]["clients"])
                and sum(d.values()) >= 7
                and d
            ),
            what="drops counted",
        )
        assert dropped == {
            "signature": 2,
            "malformed": 1,
            "kind": 1,
            "version": 1,
            "oversize": 1,
            "replay": 1,
        }

        result = client.transcribe(good.tobytes(), sample_rate=16000, model="echo")
        assert_fingerprint(result.text, good)
        assert replica(coord, "syn.0")["restarts"] == 0
        client.close()


def test_resampled_audio_reaches_the_engine_at_16k() -> None:
    with running(make_config()) as coord:
        client = coord.sync_client()
        result = client.transcribe(tone_pcm16(44100, 3).tobytes(), sample_rate=44100, model="echo")
        n = int(result.text.split()[0].split("=")[1])
        assert abs(n - 16000) <= 1
        client.close()


def test_full_queue_answers_overloaded_at_once() -> None:
    config = make_config(
        {"syn": synthetic_host(max_inflight=1, engine_options={"delay_s": 0.5})}, max_queue=2
    )
    with running(config) as coord:

        async def main() -> list[object]:
            client = coord.client()
            calls = [
                client.transcribe(
                    tone_pcm16(160, i).tobytes(), sample_rate=16000, model="echo", timeout=10
                )
                for i in range(6)
            ]
            out = await asyncio.gather(*calls, return_exceptions=True)
            await client.aclose()
            return out

        started = time.monotonic()
        results = asyncio.run(main())
        overloaded = [r for r in results if isinstance(r, OverloadedError)]
        served = [r for r in results if not isinstance(r, Exception)]
        assert len(served) == 3 and len(overloaded) == 3, results
        assert time.monotonic() - started < 5


def test_fallback_to_next_host_when_the_first_is_stopped() -> None:
    config = make_config(
        {"first": synthetic_host({"asr": "s"}), "second": synthetic_host({"asr": "s"})},
        models={"asr": {"hosts": ["first", "second"], "aliases": ["speech"]}},
    )
    with running(config) as coord:
        client = coord.sync_client()
        pcm = tone_pcm16(160, 5)
        assert client.transcribe(pcm.tobytes(), sample_rate=16000, model="speech").host == "first"
        client.control("stop", "first")
        wait_for(lambda: replica(coord, "first.0")["state"] == "stopped", what="first stopped")
        assert client.transcribe(pcm.tobytes(), sample_rate=16000, model="asr").host == "second"
        client.control("start", "first")
        wait_for(lambda: replica(coord, "first.0")["state"] == "ready", what="first back")
        assert client.transcribe(pcm.tobytes(), sample_rate=16000, model="asr").host == "first"
        client.close()


def test_health_snapshot_reports_every_replica() -> None:
    with running(make_config({"syn": synthetic_host(replicas=2)})) as coord:
        health = coord.health()
        assert [r["name"] for r in health["replicas"]] == ["syn.0", "syn.1"]
        for rep in health["replicas"]:
            assert rep["state"] == str(HostState.READY)
            assert rep["pid"] and rep["rss_mb"] > 0 and rep["heartbeat_age_s"] < 1.0
            assert rep["models"] == {"echo": "synthetic"}
            assert rep["versions"]["pyzmq"] == zmq.__version__
            assert rep["versions"]["numpy"] == np.__version__
        assert health["models"]["echo"]["ready"] == ["syn.0", "syn.1"]
        assert "key" not in str(health).lower().replace("keys", "")


def test_on_demand_model_loads_at_first_use_and_a_broken_one_falls_back() -> None:
    config = make_config(
        {
            "first": synthetic_host(
                {"echo": "s"}, on_demand_models={"lazy": "s", "flaky": "missing:nowhere"}
            ),
            "second": synthetic_host({"flaky": "s"}),
        },
        models={"flaky": {"hosts": ["first", "second"]}},
    )
    with running(config) as coord:
        first = replica(coord, "first.0")
        assert set(first["models"]) == {"echo"}  # ready without loading the on-demand ones
        client = coord.sync_client()
        pcm = tone_pcm16(320, 4)
        assert_fingerprint(
            client.transcribe(pcm.tobytes(), sample_rate=16000, model="lazy").text, pcm
        )
        wait_for(lambda: "lazy" in replica(coord, "first.0")["models"], what="lazy model announced")
        # first.0 tries to load "flaky", fails with the typed cause, and the request falls back.
        result = client.transcribe(pcm.tobytes(), sample_rate=16000, model="flaky")
        assert result.host == "second" and result.attempts == 2
        unavailable = wait_for(
            lambda: replica(coord, "first.0")["unavailable"], what="unavailable announced"
        )
        assert "no such synthetic model" in unavailable["flaky"]
        assert client.transcribe(pcm.tobytes(), sample_rate=16000, model="flaky").attempts == 1
        client.close()


def test_secrets_never_reach_argv_environment_or_health(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    with running(make_config()) as coord:
        host_key = coord.broker.supervisor._key.hex()
        client_key = coord.client_key.hex()
        pid = replica(coord, "syn.0")["pid"]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        health = str(coord.health())
        for secret in (host_key, client_key):
            assert secret not in cmdline and secret not in environ and secret not in health
        run_dir = coord.run_dir
        assert run_dir is not None and (run_dir.stat().st_mode & 0o077) == 0
        assert (run_dir.parent.stat().st_mode & 0o077) == 0
    assert host_key not in caplog.text and client_key not in caplog.text
