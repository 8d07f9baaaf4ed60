"""Hosts on other machines, proven with network namespaces as the machines.

The coordinator runs in one namespace, two dial-in hosts in two others, joined by veth pairs
(TCP + CurveZMQ over 10.231.x.y/30 addresses that exist only inside namespaces this test made).
The scenario (``netns_scenario.py``) serves requests and streams, SIGKILLs a host and cuts a
link mid-stream, and refuses a host with a key not on the allow-list; this test checks its
report. Skipped, with the reason, where namespaces cannot be made (not root, no iproute2).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.netns import Topology, unavailable_reason
from orchestrator.wire import curve

ROOT = Path(__file__).resolve().parent.parent
SCENARIO_TIMEOUT_S = 240
#: Fast enough to see everything in seconds; the README's defaults are 0.25 s x 8.
HEARTBEAT_INTERVAL_S = 0.1
HEARTBEAT_LIVENESS = 10


def make_keys(tmp: Path) -> dict[str, object]:
    """The coordinator's pair with two hosts authorized, and an intruder's pair that is not."""
    coord = tmp / "coordinator"
    curve.generate_keypair(coord, curve.COORDINATOR_KEY_NAME)
    (coord / curve.HOSTS_DIR).mkdir(mode=0o700)
    host_dirs = []
    for name in ("box0", "box1", "intruder"):
        folder = tmp / name
        pair = curve.generate_keypair(folder, "host")
        shutil.copy(coord / "coordinator.key", folder / "coordinator.key")
        if name != "intruder":
            curve.write_public_key(coord / curve.HOSTS_DIR / f"{name}.key", pair.public)
            host_dirs.append(str(folder))
    client = curve.generate_keypair(tmp / "client", "client")
    shutil.copy(coord / "coordinator.key", tmp / "client" / "coordinator.key")
    curve.write_public_key(coord / curve.CLIENTS_DIR / "panel.key", client.public)
    return {
        "coordinator_keys": str(coord),
        "host_keys": host_dirs,
        "intruder_keys": str(tmp / "intruder"),
        "client_keys": str(tmp / "client"),
    }


@pytest.mark.slow
def test_hosts_on_other_machines_fail_over_and_come_back(tmp_path: Path) -> None:
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"cannot make network namespaces here: {reason}")
    with Topology(hosts=2) as topo:
        spec = {
            **make_keys(tmp_path),
            "port": 5560,
            "coordinator_ns": topo.coordinator_ns,
            "links": [
                {
                    "host_ns": link.host_ns,
                    "host_addr": link.host_addr,
                    "coordinator_addr": link.coordinator_addr,
                    "coordinator_dev": link.coordinator_dev,
                }
                for link in topo.links
            ],
            "heartbeat_interval_s": HEARTBEAT_INTERVAL_S,
            "heartbeat_liveness": HEARTBEAT_LIVENESS,
            "host_orphan_timeout_s": 1.5,
        }
        spec_file = tmp_path / "spec.json"
        spec_file.write_text(json.dumps(spec))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
        done = subprocess.run(
            [*topo.exec_prefix(topo.coordinator_ns), sys.executable, "tests/netns_scenario.py",
             str(spec_file)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=SCENARIO_TIMEOUT_S,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(report, indent=1))  # the figures, for the run's log

    liveness_s = HEARTBEAT_INTERVAL_S * HEARTBEAT_LIVENESS
    # Requests were served by both remote hosts.
    assert all(n > 0 for n in report["requests_by_replica"].values()), report
    for phase in ("sigkill", "partition"):
        figures = report[phase]
        # Detected within the heartbeat liveness (plus one tick of the loop and scheduling).
        assert figures["detect_s"] <= liveness_s + 0.5, (phase, figures)
        assert figures["failover_s"] <= liveness_s + 1.0, (phase, figures)
        assert figures["moved_to"] != figures["holder"]
        # Zero audio lost: every sample sent reached the stream (finals were fingerprint-checked).
        assert figures["samples_in"] == figures["samples_sent"], figures
        # Every slow request answered once, some of them by a second attempt elsewhere.
        assert figures["slow_requests_answered"] == 4
    assert report["sigkill"]["restart_to_ready_s"] < 10
    partition = report["partition"]
    assert partition["host_process_survived"], "a cut cable must not kill the host"
    assert partition["link_up_to_ready_s"] < 10, partition
    assert all(n > 0 for n in report["requests_after_recovery_by_replica"].values()), report
    # Answered once: every request the coordinator took got exactly one result, no duplicates.
    coordinator = report["coordinator"]
    assert coordinator["requests"] == report["requests_sent"] == coordinator["results"]
    assert coordinator["inflight"] == 0 and coordinator["queued"] == 0
    assert coordinator["streams"]["failovers"] == 2
    intruder = report["intruder"]
    assert intruder["refused"].get("unknown_key", 0) >= 1, intruder
    assert intruder["registered_after"] == intruder["registered_before"]
    assert set(report["states"].values()) == {"ready"}
    # Remote clients: an allow-listed key is served over Curve, another is refused and counted.
    assert report["remote_client"] == "ok"
    assert report["refused_client"] == "refused"
    assert report["client_handshakes"]["accepted"].get("clients", 0) >= 1
    refusals = report["client_handshakes"]["recent_refusals"]
    assert any(r["domain"] == "clients" for r in refusals), refusals
