"""Cold start with synthetic hosts: coordinator start -> every host READY, and where it goes.

The config of the failover figures (two synthetic hosts), started ``failover_trials`` times.
Per host the coordinator's spawn -> READY is split with the host's own READY timings
(:func:`bench.harness.startup_split`). Real hosts' cold starts are in :mod:`bench.realhosts`,
measured together with their isolation cost so each stack is imported and loaded once.

Baseline: the same interpreter started bare with the imports the host runtime needs, i.e. the
least a fresh host process can cost before it does anything.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from bench import harness
from bench.failover import failover_raw
from bench.profiles import Profile
from bench.report import Figure

GROUP = "cold start"
RUNTIME_IMPORTS = "import numpy, zmq, orchestrator.host, orchestrator.host.synthetic"


def run(profile: Profile) -> list[Figure]:
    totals: list[float] = []
    spawns: list[float] = []
    loads: list[float] = []
    for _ in range(profile.failover_trials):
        started = time.monotonic()
        with harness.embedded(harness.config(failover_raw())) as coord:
            split = harness.startup_split(coord)
        totals.append(max(s["ready_at"] for s in split.values()) - started)
        spawns += [s["spawn_s"] for s in split.values()]
        loads += [s["import_s"] + s["load_s"] for s in split.values()]
    bare = harness.python_start_s(sys.executable, RUNTIME_IMPORTS)
    return [
        Figure(
            GROUP, "2 synthetic hosts: start -> every host ready (median)", "s",
            value=float(np.median(totals)), baseline=bare,
            baseline_label="bare python: " + RUNTIME_IMPORTS,
            details={"totals_s": totals},
        ),
        Figure(
            GROUP, "  synthetic host: spawn + host runtime (median)", "s",
            value=float(np.median(spawns)), baseline=bare, baseline_label="same bare python",
            note="spawn + runtime = spawn -> READY minus the host's own import_s and load_s",
            details={"spawn_s": spawns, "engine_import_and_load_s": loads},
        ),
    ]  # fmt: skip
