"""Remote: a host on another machine, over TCP + CurveZMQ, against bare pyzmq over the same wire.

The machines are network namespaces (``bench.netns``): the coordinator's and one host's, joined
by a veth pair. ``bench.remote_probe`` runs in the coordinator's namespace and measures, in the
same run and alternating rounds:

* round trip p50/p99 and pipelined throughput of a 640-byte chunk through our client ->
  embedded coordinator -> dial-in host (synthetic engine) across the veth, with Curve and HMAC;
* the same loops against a bare pyzmq ROUTER echo in the host namespace (the floor of any
  ZeroMQ design over that link), and against the same echo with CurveZMQ on (the cipher's share).

Needs root and iproute2; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import REPO_ROOT, child_env
from bench.netns import Topology, unavailable_reason
from bench.profiles import Profile
from bench.report import Figure, skipped
from bench.stats import percentile, summary
from orchestrator.wire import curve

GROUP = "remote"
PORT = 5570
PROBE_TIMEOUT_S = 600
BARE = "bare pyzmq TCP echo, same namespaces"
BARE_CURVE = "bare pyzmq TCP + Curve echo, same namespaces"


def make_keys(folder: Path) -> dict[str, str]:
    coord, host = folder / "coordinator", folder / "host"
    curve.generate_keypair(coord, curve.COORDINATOR_KEY_NAME)
    pair = curve.generate_keypair(host, "host")
    curve.write_public_key(coord / curve.HOSTS_DIR / "bench.key", pair.public)
    shutil.copy(coord / "coordinator.key", host / "coordinator.key")
    return {"coordinator_keys": str(coord), "host_keys": str(host)}


def run(profile: Profile) -> list[Figure]:
    reason = unavailable_reason()
    if reason:
        return [skipped(GROUP, "round trip over TCP + Curve between namespaces", "s", reason)]
    with tempfile.TemporaryDirectory(prefix="orc-bench-remote-") as tmp, Topology(hosts=1) as topo:
        link = topo.links[0]
        spec = {
            **make_keys(Path(tmp)),
            "port": PORT,
            "host_ns": link.host_ns,
            "host_addr": link.host_addr,
            "coordinator_addr": link.coordinator_addr,
            "round_trips": profile.round_trips,
            "warmup": profile.warmup_round_trips,
            "pipelined": profile.pipelined_requests,
            "window": profile.pipeline_window,
            "rounds": profile.rounds,
        }
        spec_file = Path(tmp) / "spec.json"
        spec_file.write_text(json.dumps(spec))
        done = subprocess.run(
            [*topo.exec_prefix(topo.coordinator_ns), sys.executable, "-m", "bench.remote_probe",
             str(spec_file)],
            cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True,
            timeout=PROBE_TIMEOUT_S,
        )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"remote probe failed: {done.stderr[-2000:]}")
    return figures(json.loads(done.stdout.strip().splitlines()[-1]), profile)


def figures(data: dict[str, Any], profile: Profile) -> list[Figure]:
    ours, bare, bare_curve = data["ours"], data["bare"], data["bare_curve"]
    out: list[Figure] = []
    for q in (50, 99):
        out.append(
            Figure(
                GROUP,
                f"round trip p{q}, 640-byte chunk, dial-in host over TCP + Curve",
                "s",
                value=percentile(ours["round_trips"], q),
                baseline=percentile(bare["round_trips"], q),
                baseline_label=BARE,
                details={
                    "ours": summary(ours["round_trips"]),
                    "baseline": summary(bare["round_trips"]),
                },
            )
        )
    out.append(
        Figure(
            GROUP,
            f"pipelined throughput ({profile.pipeline_window} in flight), dial-in host over TCP + Curve",
            "req/s",
            value=float(np.median(ours["rates"])),
            baseline=float(np.median(bare["rates"])),
            baseline_label=BARE,
            details={"ours_rounds": ours["rates"], "baseline_rounds": bare["rates"]},
        )
    )
    out.append(
        Figure(
            GROUP,
            "round trip p50, bare echo with Curve (the cipher's share)",
            "s",
            value=percentile(bare_curve["round_trips"], 50),
            baseline=percentile(bare["round_trips"], 50),
            baseline_label=BARE,
            details={"curve": summary(bare_curve["round_trips"])},
        )
    )
    out.append(
        Figure(
            GROUP,
            "pipelined throughput, bare echo with Curve",
            "req/s",
            value=float(np.median(bare_curve["rates"])),
            baseline=float(np.median(bare["rates"])),
            baseline_label=BARE,
            details={"curve_rounds": bare_curve["rates"]},
        )
    )
    return out
