"""The ``remote`` bench's measuring side, run inside the coordinator's network namespace.

``python -m bench.remote_probe SPEC.json`` (``bench.remote`` starts it with ``ip netns exec``)
measures, in alternating rounds so a neighbour's load hurts every side alike, from this
namespace to a process in the host namespace across the veth pair:

* ours: an embedded coordinator and a dial-in host (synthetic engine) over TCP + CurveZMQ;
  sync round trips and pipelined throughput of a 640-byte chunk, through the public clients;
* bare TCP: a plain pyzmq ROUTER echo in the host namespace, a plain DEALER here (same loops);
* bare TCP + Curve: the same echo with CurveZMQ on, to show what the cipher alone costs.

Prints one JSON object: for each side its round-trip samples and its pipelined rates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zmq

from bench import loops
from bench.bare_clients import BareAsyncClient, BareSyncClient
from bench.harness import child_env, raw_config
from bench.routing import chunk_payload
from orchestrator.coordinator import Coordinator
from orchestrator.coordinator.config import config_from_dict
from orchestrator.wire import curve

MODEL = "echo"
KIND = "remote"
READY_TIMEOUT_S = 30.0


def in_host_ns(spec: dict[str, Any], *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", spec["host_ns"], sys.executable, *argv],
        stdout=subprocess.PIPE, text=True, env=child_env(),
    )  # fmt: skip


@contextlib.contextmanager
def bare_echo(spec: dict[str, Any], port: int, with_curve: bool) -> Iterator[str]:
    endpoint = f"tcp://{spec['host_addr']}:{port}"
    extra = ["--curve-keys", spec["coordinator_keys"]] if with_curve else []
    proc = in_host_ns(spec, "-m", "bench.bare", "echo", endpoint, *extra)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield endpoint
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def ours(spec: dict[str, Any]) -> Iterator[Coordinator]:
    raw = raw_config({KIND: {"external": True, "models": {MODEL: "synthetic"}}})
    raw["remote"] = {
        "listen": f"tcp://0.0.0.0:{spec['port']}",
        "keys_dir": spec["coordinator_keys"],
    }
    coord = Coordinator(config_from_dict(raw, source="<bench>"))
    coord.start()
    host = in_host_ns(
        spec, "-m", "orchestrator.host", "--connect",
        f"tcp://{spec['coordinator_addr']}:{spec['port']}", "--host-kind", KIND,
        "--engine", "orchestrator.host.synthetic:SyntheticEngine",
        "--model", f"{MODEL}=synthetic", "--keys", spec["host_keys"], "--log-level", "WARNING",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while coord.health()["replicas"][0]["state"] != "ready":
            if time.monotonic() > deadline:
                raise TimeoutError("the dial-in host did not become ready")
            time.sleep(0.05)
        yield coord
    finally:
        host.kill()
        host.wait()
        coord.close()


def curve_client(spec: dict[str, Any]) -> Any:
    keys = curve.load_keypair(spec["host_keys"], "host")
    server = curve.load_public_key(Path(spec["coordinator_keys"]) / "coordinator.key")
    return lambda sock: curve.make_curve_client(sock, keys, server)


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    payload = chunk_payload()
    n, warmup = spec["round_trips"], spec["warmup"]
    pipelined_n, window = spec["pipelined"], spec["window"]
    out: dict[str, dict[str, list[float]]] = {
        side: {"round_trips": [], "rates": []} for side in ("ours", "bare", "bare_curve")
    }
    ctx = zmq.Context()
    try:
        for _ in range(spec["rounds"]):
            for side, with_curve in (("bare", False), ("bare_curve", True)):
                with bare_echo(spec, spec["port"] + 1, with_curve) as endpoint:
                    configure = curve_client(spec) if with_curve else None
                    client = BareSyncClient(ctx, endpoint, configure)
                    out[side]["round_trips"] += loops.sync_round_trips(
                        lambda c=client: c.round_trip(payload), n, warmup
                    )
                    client.close()

                    async def pipelined(
                        endpoint: str = endpoint, configure: Any = configure
                    ) -> float:
                        aclient = BareAsyncClient(ctx, endpoint, configure)
                        try:
                            result = await loops.pipelined(
                                lambda: aclient.request(payload), pipelined_n, window, warmup
                            )
                        finally:
                            await aclient.aclose()
                        return result.rate_per_s

                    out[side]["rates"].append(asyncio.run(pipelined()))
            with ours(spec) as coord:
                sync = coord.sync_client()
                out["ours"]["round_trips"] += loops.sync_round_trips(
                    lambda c=sync: c.transcribe(payload, sample_rate=16000, model=MODEL), n, warmup
                )

                async def ours_pipelined() -> float:
                    client = coord.client()
                    result = await loops.pipelined(
                        lambda: client.transcribe(payload, sample_rate=16000, model=MODEL),
                        pipelined_n, window, warmup,
                    )  # fmt: skip
                    await client.aclose()
                    return result.rate_per_s

                out["ours"]["rates"].append(asyncio.run(ours_pipelined()))
    finally:
        ctx.destroy(linger=0)
    return out


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(measure(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
