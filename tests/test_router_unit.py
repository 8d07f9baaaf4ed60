"""The router's rule, built directly on processless replicas: fallback order, load, waiting."""

from __future__ import annotations

import pytest

from orchestrator.coordinator.router import Verdict
from orchestrator.coordinator.supervisor import HostState
from orchestrator.wire.errors import ModelUnavailableError, NoHostAvailableError, UnknownModelError
from table_support import build_parts, make_ready, unit_config


def test_route_resolves_names_and_aliases_and_lists_known_names_for_an_unknown_one() -> None:
    parts = build_parts(unit_config(models={"m": {"hosts": ["a", "b"], "aliases": ["mm"]}}))
    assert parts.router.route("m").name == "m"
    assert parts.router.route("mm").name == "m"
    with pytest.raises(UnknownModelError, match=r"unknown model 'x'; known: \['m', 'mm'\]"):
        parts.router.route("x")


def test_first_host_in_fallback_order_wins_while_it_has_room() -> None:
    parts = build_parts()
    choice = parts.router.choose(parts.router.route("m"))
    assert choice.verdict is Verdict.DISPATCH and choice.replica is not None
    assert choice.replica.host.name == "a"


def test_least_loaded_replica_of_the_host_is_chosen() -> None:
    parts = build_parts()
    parts.replica("a.0").inflight = 2
    choice = parts.router.choose(parts.router.route("m"))
    assert choice.replica is parts.replica("a.1")
    parts.replica("a.1").inflight = 2
    parts.replica("a.1").streams = 1  # ties on requests go to fewer streams
    assert parts.router.choose(parts.router.route("m")).replica is parts.replica("a.0")


def test_full_first_host_falls_back_to_the_next() -> None:
    parts = build_parts()
    for name in ("a.0", "a.1"):
        parts.replica(name).inflight = parts.replica(name).host.max_inflight
    assert parts.router.choose(parts.router.route("m")).replica is parts.replica("b.0")


def test_every_replica_full_means_wait_not_refuse() -> None:
    parts = build_parts()
    for rep in parts.supervisor.replicas:
        rep.inflight = rep.host.max_inflight
    assert parts.router.choose(parts.router.route("m")).verdict is Verdict.WAIT


def test_starting_replicas_are_worth_waiting_for() -> None:
    parts = build_parts(ready=())
    for rep in parts.supervisor.replicas:
        parts.supervisor.spawn(rep)  # STARTING, not ready yet
    assert parts.router.choose(parts.router.route("m")).verdict is Verdict.WAIT


def test_stopped_or_failed_everywhere_is_no_host_available_now() -> None:
    parts = build_parts(ready=())
    with pytest.raises(NoHostAvailableError, match="failed or stopped"):
        parts.router.choose(parts.router.route("m"))


def test_a_model_unavailable_on_every_serving_host_says_why() -> None:
    parts = build_parts(ready=())
    for rep in parts.supervisor.replicas:
        make_ready(parts.supervisor, rep, models={}, unavailable={"m": "no weights"})
    with pytest.raises(ModelUnavailableError, match="no weights"):
        parts.router.choose(parts.router.route("m"))


def test_excluded_replicas_are_skipped() -> None:
    parts = build_parts()
    choice = parts.router.choose(parts.router.route("m"), exclude={"a.0", "a.1"})
    assert choice.replica is parts.replica("b.0")


def test_a_pin_narrows_to_one_host_with_no_fallback() -> None:
    parts = build_parts()
    route = parts.router.route("m")
    assert parts.router.choose(route, only_host="b").replica is parts.replica("b.0")
    parts.replica("b.0").inflight = parts.replica("b.0").host.max_inflight
    assert parts.router.choose(route, only_host="b").verdict is Verdict.WAIT
    with pytest.raises(NoHostAvailableError, match="does not serve"):
        parts.router.choose(route, only_host="c")


def test_a_replica_being_stopped_takes_no_new_work() -> None:
    parts = build_parts()
    for name in ("a.0", "a.1"):
        parts.supervisor.stop(parts.replica(name))
    assert parts.router.choose(parts.router.route("m")).replica is parts.replica("b.0")


def test_unhealthy_replicas_take_no_work_but_are_coming_back() -> None:
    parts = build_parts(
        unit_config(hosts={"a": {"python": "current", "engine": "x.y:E", "models": {"m": "r"}}})
    )
    parts.supervisor.drain(parts.replica("a.0"), "memory")
    assert parts.replica("a.0").state is HostState.UNHEALTHY
    assert parts.router.takers("a", "m") == []
    assert parts.router.choose(parts.router.route("m")).verdict is Verdict.WAIT


def test_on_demand_models_are_served_before_their_first_load() -> None:
    host = {
        "python": "current",
        "engine": "x.y:E",
        "models": {"m": "r"},
        "on_demand_models": {"big": "r2"},
    }
    parts = build_parts(unit_config(hosts={"a": host}), ready=())
    make_ready(parts.supervisor, parts.replica("a.0"), models={"m": "r"}, on_demand={"big": "r2"})
    choice = parts.router.choose(parts.router.route("big"))
    assert choice.replica is parts.replica("a.0")
