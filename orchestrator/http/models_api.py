"""``/v1/models``: our model names (and aliases) with the hosts that serve them and their state.

Built from the coordinator's health snapshot, so it says what is true now: per host replica its
state and whether the model is loaded (in memory), loadable (on demand: loaded at the next
request, or after an unload) or unavailable (with the reason). The list has OpenAI's shape
(``{"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}``) with our
fields beside OpenAI's, which its SDK keeps as extra attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OWNER = "orchestrator"


def replica_model_state(replica: Mapping[str, Any], model: str) -> str:
    """``loaded``, ``loadable``, ``unavailable`` or ``absent`` (this replica has not said)."""
    if model in (replica.get("models") or {}):
        return "loaded"
    if model in (replica.get("unavailable") or {}):
        return "unavailable"
    if model in (replica.get("on_demand") or {}):
        return "loadable"
    return "absent"


def model_card(
    health: Mapping[str, Any], name: str, created: int, asked: str | None = None
) -> dict:
    """One model as /v1/models shows it; ``asked`` is the alias the caller used, if any."""
    route = health["models"][name]
    hosts = []
    for host in route["hosts"]:
        replicas = [
            {
                "name": r["name"],
                "state": r["state"],
                "model": replica_model_state(r, name),
                "reason": (r.get("unavailable") or {}).get(name),
                "rss_mb": r.get("rss_mb"),
                "idle_unload_s": r.get("idle_unload_s"),
            }
            for r in health["replicas"]
            if r["host"] == host
        ]
        hosts.append({"host": host, "replicas": replicas})
    return {
        "id": asked or name,
        "object": "model",
        "created": created,
        "owned_by": OWNER,
        "root": name,
        "aliases": list(route["aliases"]),
        "ready": bool(route["ready"]),
        "loaded_on": [
            rep["name"] for h in hosts for rep in h["replicas"] if rep["model"] == "loaded"
        ],
        "hosts": hosts,
    }


def resolve(health: Mapping[str, Any], name: str) -> str | None:
    """The model a name or alias means, or None."""
    models = health["models"]
    if name in models:
        return name
    return next((m for m, route in models.items() if name in route["aliases"]), None)


def model_list(health: Mapping[str, Any], created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [model_card(health, name, created) for name in sorted(health["models"])],
    }
