"""Routing: from a model name or alias to the replica that should serve a request now.

The rule, in one place: walk the model's hosts in fallback order and take the least-loaded
replica that is serving, has the model loaded and has room. If none has room but one could
(busy, starting, restarting), the caller queues; if none ever could (failed, stopped, or the
model is unavailable there), the caller answers with a typed error at once.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from orchestrator.coordinator.config import Config, ModelRoute
from orchestrator.coordinator.supervisor import COMING, SERVING, Replica
from orchestrator.wire.errors import ModelUnavailableError, NoHostAvailableError, UnknownModelError


class Verdict(enum.Enum):
    DISPATCH = "dispatch"
    WAIT = "wait"


@dataclass(frozen=True, slots=True)
class Choice:
    verdict: Verdict
    replica: Replica | None = None


class Router:
    """Picks replicas; holds no state of its own beyond the config and the replica list."""

    def __init__(self, config: Config, replicas: Sequence[Replica]) -> None:
        self.config = config
        self._by_host: dict[str, list[Replica]] = {}
        for rep in replicas:
            self._by_host.setdefault(rep.host.name, []).append(rep)

    def route(self, model: str) -> ModelRoute:
        route = self.config.resolve_model(model)
        if route is None:
            known = sorted({n for r in self.config.models.values() for n in (r.name, *r.aliases)})
            raise UnknownModelError(f"unknown model {model!r}; known: {known}", model=model)
        return route

    def hosts_for(self, route: ModelRoute, only_host: str | None = None) -> tuple[str, ...]:
        """The hosts to try, in fallback order; a pin (``--all-hosts`` comparisons) narrows them
        to one host, with no fallback."""
        if only_host is None:
            return route.hosts
        if only_host not in route.hosts:
            raise NoHostAvailableError(
                f"host {only_host!r} does not serve {route.name!r} (hosts: {list(route.hosts)})",
                model=route.name,
            )
        return (only_host,)

    def takers(self, host: str, model: str, exclude: Collection[str] = ()) -> list[Replica]:
        """Replicas of ``host`` that take new work for ``model`` now, before any capacity check.

        A replica being stopped takes no new work, even while it drains.
        """
        return [r for r in self._by_host[host] if _takes(r, model, exclude)]

    def _least_loaded(self, host: str, model: str, exclude: Collection[str]) -> Replica | None:
        """The taker of ``host`` with room and the fewest requests, then streams (the first of
        equals): one pass, as every request asks."""
        best: Replica | None = None
        for rep in self._by_host[host]:
            if rep.inflight >= rep.host.max_inflight or not _takes(rep, model, exclude):
                continue
            if best is None or (rep.inflight, rep.streams) < (best.inflight, best.streams):
                best = rep
        return best

    def coming(self, host: str, exclude: Collection[str] = ()) -> bool:
        """Whether a replica of ``host`` will serve again without anyone acting: worth waiting for."""
        return any(
            r.state in COMING
            for r in self._by_host[host]
            if r.name not in exclude and r.stop_target is None
        )

    def choose(
        self, route: ModelRoute, exclude: Collection[str] = (), only_host: str | None = None
    ) -> Choice:
        """A replica to dispatch to, or WAIT; raises when no replica can ever serve the model."""
        could_serve = False
        unavailable: list[str] = []
        for host_name in self.hosts_for(route, only_host):
            best = self._least_loaded(host_name, route.name, exclude)
            if best is not None:
                return Choice(Verdict.DISPATCH, best)
            if self.takers(host_name, route.name, exclude) or self.coming(host_name, exclude):
                could_serve = True
            for rep in self._by_host[host_name]:
                reason = rep.ready_info.get("unavailable", {}).get(route.name)
                if (
                    reason
                    and rep.state in SERVING
                    and rep.name not in exclude
                    and rep.stop_target is None
                ):
                    unavailable.append(f"{rep.name}: {reason}")
        if could_serve:
            return Choice(Verdict.WAIT)
        if unavailable:
            raise ModelUnavailableError(
                f"model {route.name!r} could not be loaded on any host: " + "; ".join(unavailable),
                model=route.name,
            )
        raise NoHostAvailableError(
            f"no host can serve {route.name!r} now (hosts {list(route.hosts)} are failed or stopped)",
            model=route.name,
        )

    def replicas_of(self, host: str) -> list[Replica]:
        return self._by_host.get(host, [])


def _takes(rep: Replica, model: str, exclude: Collection[str]) -> bool:
    """Whether ``rep`` takes new work for ``model`` now, before any capacity check: serving, not
    being stopped, not excluded, the model loaded or loadable there."""
    return (
        rep.state in SERVING
        and rep.stop_target is None
        and rep.name not in exclude
        and rep.serves(model)
    )
