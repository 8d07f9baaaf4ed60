"""``python -m orchestrator fetch``: pre-fetch models into the Hugging Face cache, with progress.

Models otherwise download on first use, which can mean a host start that takes many minutes (or a
first request that times out half way through a download). This command downloads each model of a
config ahead of time, with the huggingface-hub of the env that will load it (1.x for the MLX host,
0.x for the legacy one), showing that library's own progress bars. Local paths are checked, not
downloaded. Exit code 0 when every model is present, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
from pathlib import Path

from orchestrator.cli import logs
from orchestrator.coordinator.config import HostConfig, host_environment, host_python, load_config
from orchestrator.models import is_bundled, resolve
from orchestrator.wire.errors import ModelUnavailableError

log = logging.getLogger(logs.CLI_LOGGER)

EXIT_OK, EXIT_FAILED = 0, 1
DEFAULT_CONFIG = "orchestrator.toml"

#: Run by the host env's interpreter; prints the snapshot path or exits non-zero with the cause.
_FETCH_SCRIPT = """
import sys
from huggingface_hub import snapshot_download
try:
    print(snapshot_download(sys.argv[1]))
except Exception as exc:
    print(f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
    sys.exit(1)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"TOML config (default {DEFAULT_CONFIG})"
    )
    parser.add_argument(
        "--model",
        action="append",
        help="model or alias to fetch (repeatable; default: every eagerly loaded model)",
    )
    parser.add_argument("--all", action="store_true", help="also fetch every on-demand model")


def wanted(host: HostConfig, names: set[str] | None, everything: bool) -> dict[str, str]:
    """The models of one host this run should fetch."""
    table = host.all_models if everything or names else host.models
    return {m: ref for m, ref in table.items() if names is None or m in names}


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    names = None
    if args.model:
        names = set()
        for name in args.model:
            route = config.resolve_model(name)
            if route is None:
                raise ValueError(f"unknown model {name!r} in {config.source}")
            names.add(route.name)
    failed = 0
    for host in config.hosts.values():
        for model, ref in wanted(host, names, args.all).items():
            failed += not fetch_one(host, model, ref, config.root)
    return EXIT_FAILED if failed else EXIT_OK


def fetch_one(host: HostConfig, model: str, ref: str, root: str) -> bool:
    if is_bundled(ref):
        return fetch_bundled(host, model, ref)
    if Path(ref).expanduser().exists() or ref.startswith(("/", ".")):
        present = Path(ref).expanduser().exists()
        print(f"{host.name}: {model}: local path {ref} {'present' if present else 'MISSING'}")
        return present
    python = host_python(host, root)
    print(
        f"{host.name}: {model}: fetching {ref} with {host.name}'s huggingface-hub ...", flush=True
    )
    env = host_environment(host, root)
    done = subprocess.run(
        [str(python), "-c", _FETCH_SCRIPT, ref],
        env=env,
        check=False,
        stdout=subprocess.PIPE,
        text=True,
    )
    if done.returncode:
        print(f"{host.name}: {model}: FAILED (see the cause above)")
        return False
    print(f"{host.name}: {model}: ready at {done.stdout.strip()}")
    return True


def fetch_bundled(host: HostConfig, model: str, ref: str) -> bool:
    """Fetch and convert a bundled model into the model cache (what the coordinator would do)."""
    print(f"{host.name}: {model}: preparing {ref} ...", flush=True)
    try:
        folder = resolve(
            ref, progress=lambda line: print(f"{host.name}: {model}: {line}", flush=True)
        )
    except ModelUnavailableError as exc:
        print(f"{host.name}: {model}: FAILED: {exc.message}")
        return False
    print(f"{host.name}: {model}: ready at {folder}")
    return True
