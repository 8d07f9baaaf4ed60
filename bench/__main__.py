"""``python -m bench [--full] [--out FILE] [--only GROUP ...]``: run the benchmarks, print the table,
write the JSON.

``nox -s bench`` calls this. The quick profile (default) keeps every group but measures less;
``--full`` measures longer, adds 128 streams, starts both real hosts together and rebuilds one
env. A group that cannot run here (an env not built, an engine not written yet) reports its rows
as skipped with the reason; a group that crashes is reported as an error row, the others still
run, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import (
    coldstart,
    decoding,
    failover,
    hostenvs,
    http_face,
    longform,
    realhosts,
    remote,
    resampling,
    routing,
    scale,
    utterance,
    vad,
    whisper,
)
from bench.profiles import FULL, QUICK, Profile
from bench.report import Figure, format_table, machine_info, skipped, write_json

EXIT_OK, EXIT_GROUP_FAILED = 0, 1
RESULTS_DIR = Path("bench-results")

#: Run order: cheap and self-contained first, the real stacks (tens of seconds each) last.
GROUPS: dict[str, Callable[[Profile], list[Figure]]] = {
    "routing": routing.run,
    "http": http_face.run,
    "vad": vad.run,
    "resample": resampling.run,
    "decode": decoding.run,
    "failover": failover.run,
    "coldstart": coldstart.run,
    "scale": scale.run,
    "streaming": utterance.run,
    "envs": hostenvs.run,
    "realhosts": realhosts.run,
    "longform": longform.run,
    "remote": remote.run,
    "whisper": whisper.run,
}
#: Table order: the issue's order of figures.
TABLE_ORDER = (
    "routing", "http", "isolation", "whisper", "failover", "cold start", "envs", "scale",
    "streaming", "longform", "vad", "resample", "decode", "remote",
)  # fmt: skip

NOTES = (
    "Every baseline is measured in the same run, on the same machine, right beside its figure; "
    "ratio = ours / baseline.",
    "Latencies are wall-clock; machine.load_average shows how busy the machine was (other "
    "processes share its cores).",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--full", action="store_true", help="the long profile (minutes)")
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    parser.add_argument("--only", nargs="+", choices=sorted(GROUPS), help="run only these groups")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The hosts' own chatter (transformers warns on every generate call) is not benchmark output.
    logging.getLogger("orchestrator.hosts").setLevel(logging.ERROR)
    profile = FULL if args.full else QUICK
    started_at = datetime.datetime.now(datetime.UTC)
    out = args.out or RESULTS_DIR / f"bench-{profile.name}-{started_at:%Y%m%dT%H%M%SZ}.json"
    machine = machine_info()
    figures: list[Figure] = []
    elapsed: dict[str, float] = {}
    failed = False
    started = time.monotonic()
    for name, run in GROUPS.items():
        if args.only and name not in args.only:
            continue
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            figures += run(profile)
        except Exception as exc:
            failed = True
            traceback.print_exc()
            figures.append(
                skipped(name, "group failed", "s", f"error: {type(exc).__name__}: {exc}")
            )
        elapsed[name] = round(time.monotonic() - t0, 1)
        print(f"[bench] {name} done in {elapsed[name]:.1f} s", file=sys.stderr, flush=True)
    total = time.monotonic() - started
    figures.sort(
        key=lambda f: TABLE_ORDER.index(f.group) if f.group in TABLE_ORDER else len(TABLE_ORDER)
    )
    print(format_table(figures))
    write_json(
        out,
        profile=profile.name,
        started=started_at,
        elapsed_s=total,
        machine=machine,
        figures=figures,
        extra_versions=_host_versions(figures),
        notes=[*NOTES, f"group seconds: {elapsed}"],
    )
    print(f"\n{profile.name} profile in {total:.0f} s; results: {out}")
    return EXIT_GROUP_FAILED if failed else EXIT_OK


def _host_versions(figures: list[Figure]) -> dict[str, object]:
    """Package versions each real host reported from inside its env."""
    return {
        f"host:{f.name.split(':')[0]}": f.details["versions"]
        for f in figures
        if "versions" in f.details
    }


if __name__ == "__main__":
    sys.exit(main())
