"""The package's shape: no import loops, the process boundary kept, the host side kept lean.

Parsed with ``ast`` (no module is imported for the graph), so a loop hidden behind a function-level
or TYPE_CHECKING import counts too: it is still a loop a reader has to untangle.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "orchestrator"
#: What code running inside a host env may import besides the standard library: the package's own
#: small, wide-ranged dependencies that every host lock carries (soxr resamples each stream; pyzmq's
#: Cython extensions register ``cython_runtime``, part of pyzmq; orjson writes and reads headers,
#: optional: the protocol falls back to the standard library). The model VAD is imported lazily.
HOST_THIRD_PARTY = {"numpy", "zmq", "soxr", "cython_runtime", "orjson"}
#: Packages that run in the coordinator's (or the user's) process, never inside a host env.
COORDINATOR_SIDE = (
    "orchestrator.coordinator",
    "orchestrator.cli",
    "orchestrator.client",
    "orchestrator.models",  # fetches and converts weights before any host starts
    "orchestrator.speech",  # fixtures and word error rate for the demo, benches and tests
)
HOSTS = PACKAGE.parent / "hosts"
#: What a host package (hosts/<name>/) may import of orchestrator: the host side, the wire, the
#: audio helpers and ``orchestrator.errors`` (the public path of the wire's errors).
HOST_PACKAGE_ALLOWED = (
    "orchestrator.host",
    "orchestrator.wire",
    "orchestrator.audio",
    "orchestrator.errors",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports (``from pkg import mod`` resolved to ``pkg.mod``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from pkg import mod`` imports the module; ``from mod import name`` the module.
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in modules
                else node.module
                for alias in node.names
            ]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    # Importing a.b runs a/__init__ first; that is no edge of a.b's own (a package's __init__
    # that imports its modules back shows as an edge of the __init__).
    return {name: imports_of(path, modules) - {name} for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_loop_and_passes_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 30  # the walk found the package, not an empty folder
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


def test_no_coordinator_side_module_imports_the_host_package() -> None:
    graph = import_graph()
    offenders = {
        module: sorted(dep for dep in deps if dep.startswith("orchestrator.host"))
        for module, deps in graph.items()
        if module.startswith(COORDINATOR_SIDE)
    }
    assert {m: d for m, d in offenders.items() if d} == {}


def test_the_wire_and_audio_import_nothing_of_either_side() -> None:
    graph = import_graph()
    for module, deps in graph.items():
        if module.startswith(("orchestrator.wire", "orchestrator.audio")):
            sides = [d for d in deps if d.startswith(("orchestrator.host", *COORDINATOR_SIDE))]
            assert sides == [], f"{module} imports {sides}"


def test_the_host_package_imports_only_the_wire_audio_and_itself() -> None:
    allowed = ("orchestrator.host", "orchestrator.wire", "orchestrator.audio")
    shared = {"orchestrator.call_queue"}  # the loop helper both processes use
    for module, deps in import_graph().items():
        if module.startswith("orchestrator.host"):
            other = sorted(d for d in deps if not d.startswith(allowed) and d not in shared)
            assert other == [], f"{module} imports {other}"


def orchestrator_imports(path: Path) -> set[str]:
    """Every ``orchestrator...`` module a file names in an import statement."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name == "orchestrator" or name.startswith("orchestrator.")}


def test_host_packages_import_only_the_host_side_wire_and_audio() -> None:
    files = sorted(HOSTS.glob("*/*/**/*.py"))
    assert {p.relative_to(HOSTS).parts[0] for p in files} >= {"mlx_host", "legacy_host", "ct2_host"}
    allowed = (*HOST_PACKAGE_ALLOWED, *(f"{name}." for name in HOST_PACKAGE_ALLOWED))
    offenders = {
        str(path.relative_to(HOSTS)): sorted(
            name for name in orchestrator_imports(path) if not name.startswith(allowed)
        )
        for path in files
    }
    assert {f: names for f, names in offenders.items() if names} == {}


_THIRD_PARTY_PROBE = """
import json, sys
before = set(sys.modules)
import orchestrator.host.runtime, orchestrator.host.synthetic, orchestrator.host.load_errors
stdlib = sys.stdlib_module_names
loaded = {name.split(".")[0] for name in set(sys.modules) - before}
print(json.dumps(sorted(n for n in loaded if n not in stdlib and not n.startswith("_"))))
"""


def test_the_host_runtime_imports_nothing_beyond_stdlib_numpy_pyzmq_soxr_and_orjson() -> None:
    """What a host env is promised: run in a fresh interpreter so nothing else is loaded yet."""
    out = subprocess.run(
        [sys.executable, "-c", _THIRD_PARTY_PROBE],
        capture_output=True,
        text=True,
        check=True,
        cwd=PACKAGE.parent,
    )
    third_party = set(json.loads(out.stdout)) - {"orchestrator"}
    assert "numpy" in third_party and "zmq" in third_party  # the probe saw real imports
    assert third_party <= HOST_THIRD_PARTY, f"host side imports {third_party - HOST_THIRD_PARTY}"


@pytest.mark.parametrize("entry", ["orchestrator.host", "orchestrator"])
def test_entry_points_still_answer_help(entry: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", entry, "--help"],
        capture_output=True,
        text=True,
        cwd=PACKAGE.parent,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
