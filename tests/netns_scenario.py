"""The multi-machine scenario, run inside the coordinator's network namespace.

``tests/test_remote_netns.py`` makes the namespaces and keys, then runs this script with
``ip netns exec <coordinator namespace> python tests/netns_scenario.py SPEC.json``. It starts a
coordinator whose external host kind ``ext`` has two slots, starts one dial-in host in each host
namespace (TCP + CurveZMQ across veth pairs), and then, measuring on the monotonic clock:

1. serves one-shot requests on both hosts (each answer's fingerprint checked);
2. SIGKILLs the host holding a live stream while slow requests run on it: detection (kill ->
   replica unhealthy), failover (kill -> host_changed), every request answered once, zero
   audio lost (each final's fingerprint is that of exactly the audio sent); then restarts it
   and times its dial-in -> ready;
3. cuts the link (veth down) of the host holding a second stream, the same checks, then
   restores it and times link up -> ready again (the host resets and dials in by itself);
4. starts a host whose key is not in the allow-list: refused and counted in health;
5. a client in a host namespace transcribes over the coordinator's Curve client endpoint, and
   one with a key not on the clients' allow-list is refused.

The last line of stdout is a JSON report the test asserts on.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.client import AsyncClient
from orchestrator.coordinator import Coordinator
from stream_support import check_finals, finals_of, speech_like
from support import SYNTHETIC, assert_fingerprint, make_config, tone_pcm16

MODEL = "echo"
KIND = "ext"
END_SILENCE_S = 0.4
#: Audio streamed around each failure: failures land mid-stream with speech on both sides.
STREAM_BURSTS = 6
SLOW_REQUESTS = 4
CLIENT_PORT = 5555
#: A refused client is told (UnauthorizedError) within this, far inside its request timeout.
REFUSED_CLIENT_WITHIN_S = 2.0
SLOW_REQUEST_DELAY_S = 0.6
#: How long the cable stays cut: past detection, so the failover and the reconnect are both seen.
LINK_DOWN_S = 3.0
WAIT_S = 30.0


class Scenario:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.port = int(spec["port"])
        self.procs: list[subprocess.Popen[bytes]] = []
        self.transitions: list[tuple[float, str, str, str]] = []
        config = make_config(
            hosts={
                KIND: {
                    "external": True,
                    "models": {MODEL: "synthetic"},
                    "replicas": 2,
                    "max_inflight": 8,
                    "ready_timeout_s": 30.0,
                }
            },
            remote={"listen": f"tcp://0.0.0.0:{self.port}", "keys_dir": spec["coordinator_keys"]},
            allow_remote=True,
            heartbeat_interval_s=spec["heartbeat_interval_s"],
            heartbeat_liveness=spec["heartbeat_liveness"],
            host_orphan_timeout_s=spec["host_orphan_timeout_s"],
        )
        self.coord = Coordinator(config, client_endpoint=f"tcp://0.0.0.0:{CLIENT_PORT}")
        self.coord.start()
        self.coord.call(
            lambda b: b.supervisor.listeners.append(
                lambda rep, old, new, why: self.transitions.append(
                    (time.monotonic(), rep.name, str(new), why)
                )
            )
        )

    # ------------------------------------------------------------------ hosts
    def start_host(self, i: int, keys: str) -> subprocess.Popen[bytes]:
        link = self.spec["links"][i]
        argv = [
            "ip", "netns", "exec", link["host_ns"], sys.executable, "-m", "orchestrator.host",
            "--connect", f"tcp://{link['coordinator_addr']}:{self.port}",
            "--host-kind", KIND, "--engine", SYNTHETIC, "--model", f"{MODEL}=synthetic",
            "--keys", keys, "--log-level", "WARNING",
        ]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def health(self) -> dict[str, Any]:
        return self.coord.health()

    def replicas(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in self.health()["replicas"]}

    def wait(self, predicate: Any, what: str) -> float:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if predicate():
                return time.monotonic()
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}: {self.replicas()}")

    def first_transition(self, name: str, state: str, after: float) -> float:
        self.wait(
            lambda: any(n == name and s == state and t > after for t, n, s, _ in self.transitions),
            f"{name} {state}",
        )
        return min(t for t, n, s, _ in self.transitions if n == name and s == state and t > after)

    def link_of(self, replica: dict[str, Any]) -> int:
        """Which host namespace a replica dialled in from (by the address it came from)."""
        for i, link in enumerate(self.spec["links"]):
            if replica["peer"].endswith(f" {link['host_addr']}"):
                return i
        raise AssertionError(f"{replica['name']} came from no known link: {replica['peer']}")

    def set_link(self, i: int, up: bool) -> None:
        link = self.spec["links"][i]
        subprocess.run(
            ["ip", "-n", self.spec["coordinator_ns"], "link", "set", link["coordinator_dev"],
             "up" if up else "down"],
            check=True,
        )  # fmt: skip

    # ------------------------------------------------------------------ traffic
    async def requests(self, client: AsyncClient, n: int, seed: int, **options: Any) -> list[Any]:
        clips = [tone_pcm16(8000, seed + i) for i in range(n)]
        results = await asyncio.gather(
            *(
                client.transcribe(c, sample_rate=16000, model=MODEL, timeout=20.0, **options)
                for c in clips
            )
        )
        for clip, result in zip(clips, results):
            assert_fingerprint(result.text, clip)
        return list(results)

    async def stream_through(self, client: AsyncClient, seed: int, fault: Any) -> dict[str, Any]:
        """Stream speech in real time; halfway, ``fault(replica)`` breaks the stream's host while
        slow requests run there; returns the measured times and checks no audio was lost."""
        audio = speech_like(bursts=STREAM_BURSTS, seed=seed)
        chunks = audio.chunks()
        stream = await client.stream(model=MODEL, sample_rate=audio.sample_rate).open()
        events: list[Any] = []
        arrivals: dict[str, float] = {}

        async def read() -> None:
            async for event in stream:
                events.append(event)
                arrivals.setdefault(event.type, time.monotonic())

        reader = asyncio.create_task(read())
        await asyncio_wait(lambda: events, "stream opened")
        holder = events[0].raw.get("replica")
        assert holder, f"stream not placed: {events[0].raw}"
        slow: asyncio.Task[list[Any]] | None = None
        t_fault = 0.0
        step_s = 0.02
        started = time.monotonic()
        for i, chunk in enumerate(chunks):
            await stream.send(chunk)
            if i == len(chunks) // 2:
                # Slow requests pinned to the stream's host kind: some will be in flight there.
                slow = asyncio.create_task(
                    self.requests(
                        client, SLOW_REQUESTS, seed * 100, context=f"delay={SLOW_REQUEST_DELAY_S}"
                    )
                )
                await asyncio.sleep(0.1)
                t_fault = time.monotonic()
                await asyncio.to_thread(fault, holder)
            await asyncio.sleep(max(0.0, started + (i + 1) * step_s - time.monotonic()))
        await stream.close()
        await asyncio.wait_for(reader, WAIT_S)
        assert slow is not None
        answered = await slow
        kinds = [e.type for e in events]
        assert "error" not in kinds, [e.raw for e in events if e.type == "error"]
        assert kinds.count("host_changed") == 1, kinds
        check_finals(finals_of(events), audio, end_silence_s=END_SILENCE_S)
        closed = events[-1].raw
        return {
            "holder": holder,
            "t_fault": t_fault,
            "failover_s": arrivals["host_changed"] - t_fault,
            "moved_to": next(e.raw["replica"] for e in events if e.type == "host_changed"),
            "finals": len(finals_of(events)),
            "samples_sent": int(audio.pcm.size),
            "samples_in": int(closed.get("samples_in", -1)),
            "slow_requests_answered": len(answered),
            "slow_request_attempts": sorted(r.attempts for r in answered),
        }

    # ------------------------------------------------------------------ the run
    async def run(self) -> dict[str, Any]:
        spec = self.spec
        report: dict[str, Any] = {}
        hosts = [self.start_host(i, keys) for i, keys in enumerate(spec["host_keys"])]
        self.wait(
            lambda: all(r["state"] == "ready" for r in self.replicas().values()), "both ready"
        )
        client = self.coord.client()

        served = await self.requests(client, 24, seed=1)
        report["requests_by_replica"] = {
            name: sum(1 for r in served if r.replica == name) for name in self.replicas()
        }

        # -------- SIGKILL of a remote host
        killed: dict[str, Any] = {}

        def kill(holder: str) -> None:
            rep = self.replicas()[holder]
            killed["link"] = self.link_of(rep)
            os.kill(int(rep["pid"]), signal.SIGKILL)

        sigkill = await self.stream_through(client, seed=11, fault=kill)
        sigkill["detect_s"] = (
            self.first_transition(sigkill["holder"], "unhealthy", sigkill["t_fault"])
            - sigkill["t_fault"]
        )
        hosts[killed["link"]].wait(timeout=5)
        restarted = time.monotonic()
        hosts[killed["link"]] = self.start_host(killed["link"], spec["host_keys"][killed["link"]])
        sigkill["restart_to_ready_s"] = (
            self.first_transition(sigkill["holder"], "ready", restarted) - restarted
        )
        report["sigkill"] = sigkill

        # -------- a cut cable (veth down), then restored
        cut: dict[str, Any] = {}

        def cut_link(holder: str) -> None:
            cut["link"] = self.link_of(self.replicas()[holder])
            self.set_link(cut["link"], up=False)

        partition = await self.stream_through(client, seed=23, fault=cut_link)
        partition["detect_s"] = (
            self.first_transition(partition["holder"], "unhealthy", partition["t_fault"])
            - partition["t_fault"]
        )
        await asyncio.sleep(max(0.0, partition["t_fault"] + LINK_DOWN_S - time.monotonic()))
        link_up = time.monotonic()
        self.set_link(cut["link"], up=True)
        partition["link_down_s"] = link_up - partition["t_fault"]
        back = self.first_transition(partition["holder"], "ready", link_up)
        partition["link_up_to_ready_s"] = back - link_up
        partition["host_process_survived"] = hosts[cut["link"]].poll() is None
        report["partition"] = partition
        after = await self.requests(client, 24, seed=500)
        report["requests_after_recovery_by_replica"] = {
            name: sum(1 for r in after if r.replica == name) for name in self.replicas()
        }

        # -------- a host whose key is not on the allow-list
        before = self.health()["coordinator"]["remote"]
        intruder = self.start_host(1, spec["intruder_keys"])
        self.wait(
            lambda: (
                self.health()["coordinator"]["remote"]["handshakes"]["refused_total"]
                > before["handshakes"]["refused_total"]
            ),
            "the intruder refused",
        )
        await asyncio.sleep(1.0)  # time to register, had it been let in
        remote = self.health()["coordinator"]["remote"]
        report["intruder"] = {
            "refused": remote["handshakes"]["refused"],
            "registered_before": before["registered"],
            "registered_after": remote["registered"],
            "still_running": intruder.poll() is None,
        }
        # -------- remote clients over the Curve client endpoint
        report["remote_client"] = self.remote_client(spec["client_keys"], "client")
        report["refused_client"] = self.remote_client(spec["intruder_keys"], "host")
        report["client_handshakes"] = self.health()["coordinator"]["remote"]["handshakes"]

        coordinator = self.health()["coordinator"]
        report["coordinator"] = {
            k: coordinator[k] for k in ("requests", "results", "retries", "inflight", "queued")
        }
        report["coordinator"]["streams"] = coordinator["streams"]
        report["requests_sent"] = 24 + 24 + 2 * SLOW_REQUESTS + 1  # + the remote client's
        report["states"] = {n: r["state"] for n, r in self.replicas().items()}
        await client.aclose()
        return report

    def remote_client(self, keys: str, name: str) -> str:
        """One transcribe from a client in host namespace 0, over TCP + Curve."""
        secret = Path(keys) / "coordinator-connection.json"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"key": self.coord.connection_info()["key"]}, fh)
        link = self.spec["links"][0]
        done = subprocess.run(
            ["ip", "netns", "exec", link["host_ns"], sys.executable, __file__, "--client",
             f"tcp://{link['coordinator_addr']}:{CLIENT_PORT}", keys, name],
            capture_output=True, text=True, timeout=WAIT_S,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        self.coord.close()


async def asyncio_wait(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def client_main(endpoint: str, keys: str, name: str) -> int:
    """Run in a host namespace: transcribe once through the Curve client endpoint; prints
    ``ok`` (fingerprint checked) or ``refused`` (told so at once: the handshake was refused)."""
    from orchestrator.client import Client
    from orchestrator.wire.errors import UnauthorizedError

    key = bytes.fromhex(json.loads((Path(keys) / "coordinator-connection.json").read_text())["key"])
    client = Client(endpoint, key=key, curve_keys=keys, curve_key_name=name)
    pcm = tone_pcm16(4000, 77)
    started = time.monotonic()
    try:
        # Half the scenario's wait: a client that waited it out would outlive its subprocess.
        result = client.transcribe(pcm, sample_rate=16000, model=MODEL, timeout=WAIT_S / 2)
    except UnauthorizedError as err:
        elapsed = time.monotonic() - started
        assert err.details["cause"] == "key_refused" and elapsed < REFUSED_CLIENT_WITHIN_S, (
            err,
            elapsed,
        )
        print("refused")
        return 0
    finally:
        client.close_socket()
    assert_fingerprint(result.text, pcm)
    print("ok")
    return 0


def main() -> int:
    if sys.argv[1] == "--client":
        return client_main(*sys.argv[2:5])
    spec = json.loads(Path(sys.argv[1]).read_text())
    scenario = Scenario(spec)
    try:
        report = asyncio.run(scenario.run())
    finally:
        scenario.close()
    print(json.dumps(report, default=lambda o: float(o) if isinstance(o, np.floating) else str(o)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
