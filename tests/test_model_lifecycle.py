"""Model lifecycle through the coordinator: operator load/unload, idle unload, reload on use.

Synthetic hosts hold ``weights_mb`` of touched memory per loaded model, so an unload must show
in the host's RSS (psutil, read here from the host's pid). The real-engine version of the RSS
check is in test_model_lifecycle_real.py.
"""

from __future__ import annotations

import asyncio

import numpy as np
import psutil
import pytest

from orchestrator.errors import BadRequestError, NoHostAvailableError, UnknownModelError
from support import make_config, replica, running, synthetic_host, wait_for

WEIGHTS_MB = 200
RATE = 16_000


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def _lifecycle_config(idle_unload_s: float = 0.0, **host: object):
    return make_config(
        {
            "syn": synthetic_host(
                {"echo": "synthetic"},
                on_demand_models={"big": "synthetic"},
                model_options={"big": {"weights_mb": WEIGHTS_MB}},
                idle_unload_s=idle_unload_s,
                **host,
            )
        }
    )


def test_operator_unload_returns_memory_and_next_request_reloads() -> None:
    with running(_lifecycle_config()) as coord:
        client = coord.sync_client()
        pid = replica(coord, "syn.0")["pid"]
        assert "big" not in replica(coord, "syn.0")["models"]
        assert "big" in replica(coord, "syn.0")["on_demand"]
        before = _rss_mb(pid)

        out = client.load_model("big", host="syn")
        assert out["replicas"]["syn.0"]["loaded"] is True
        assert out["replicas"]["syn.0"]["load_s"] > 0
        wait_for(lambda: "big" in replica(coord, "syn.0")["models"], what="big reported loaded")
        loaded = _rss_mb(pid)
        assert loaded - before > WEIGHTS_MB * 0.9, (before, loaded)

        out = client.unload_model("big", host="syn")
        assert out["replicas"]["syn.0"]["unloaded"] is True
        wait_for(lambda: "big" in replica(coord, "syn.0")["on_demand"], what="big loadable")
        after = _rss_mb(pid)
        assert loaded - after > WEIGHTS_MB * 0.9, (loaded, after)

        # Unloading again is no error: nothing was loaded.
        assert client.unload_model("big", host="syn")["replicas"]["syn.0"]["unloaded"] is False
        pcm = np.zeros(RATE // 2, dtype=np.int16)
        first = client.transcribe(pcm, sample_rate=RATE, model="big")
        assert first.timings.load_s > 0  # this request paid for the reload
        second = client.transcribe(pcm, sample_rate=RATE, model="big")
        assert second.timings.load_s == 0.0


def test_idle_on_demand_model_is_unloaded_and_eager_one_is_kept() -> None:
    with running(_lifecycle_config(idle_unload_s=1.0)) as coord:
        client = coord.sync_client()
        pid = replica(coord, "syn.0")["pid"]
        pcm = np.zeros(RATE // 2, dtype=np.int16)
        result = client.transcribe(pcm, sample_rate=RATE, model="big")
        assert result.timings.load_s > 0
        assert "big" in replica(coord, "syn.0")["models"]
        loaded = _rss_mb(pid)
        wait_for(lambda: "big" not in replica(coord, "syn.0")["models"], 10, "idle unload of big")
        assert loaded - _rss_mb(pid) > WEIGHTS_MB * 0.9
        assert "echo" in replica(coord, "syn.0")["models"]  # eager: never idle-unloaded
        assert client.transcribe(pcm, sample_rate=RATE, model="big").timings.load_s > 0


def test_unload_refused_while_in_use_and_bad_calls_are_typed() -> None:
    # Two engine threads, so the unload runs while the delayed request holds the model (with
    # one, the unload would simply wait its turn behind the request).
    with running(_lifecycle_config(engine_threads=2)) as coord:

        async def scenario() -> None:
            client = coord.client()
            pcm = np.zeros(RATE // 2, dtype=np.int16)
            await client.load_model("big", host="syn")
            busy = asyncio.ensure_future(
                client.transcribe(pcm, sample_rate=RATE, model="big", context="delay=1.5")
            )
            await asyncio.sleep(0.5)
            with pytest.raises(BadRequestError, match="in use"):
                await client.unload_model("big", host="syn")
            assert (await busy).text.startswith("n=8000")
            with pytest.raises(UnknownModelError):
                await client.unload_model("nope", host="syn")
            with pytest.raises(BadRequestError, match="no host named 'other'"):
                await client.load_model("big", host="other")
            await client.control("stop", "syn")
            await asyncio.sleep(0.1)
            with pytest.raises(NoHostAvailableError, match="start it first"):
                await client.load_model("big", host="syn")
            await client.aclose()

        asyncio.run(scenario())
