"""Operator model loads and unloads: one client call fanned out to every replica of a host.

``client.load_model("whisper", host="legacy_host")`` arrives as a CONTROL message. The table
sends a MODEL message to each live replica of that host, collects their answers (or notes the
ones that died or did not answer within ``model_op_timeout_s``) and answers the client once: a
CONTROL_REPLY with each replica's outcome, or the typed error when no replica did it. A replica
that is still starting is skipped (it loads its models on its own; on-demand ones at first use).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from orchestrator.coordinator.config import CoordinatorSettings
from orchestrator.coordinator.outbox import Sender, reply_error
from orchestrator.coordinator.router import Router
from orchestrator.coordinator.supervisor import SERVING, Replica
from orchestrator.wire.bodies import Control, ModelRequest
from orchestrator.wire.errors import (
    BadRequestError,
    DeadlineExceededError,
    HostCrashedError,
    NoHostAvailableError,
    OrchestratorError,
    error_from_wire,
)
from orchestrator.wire.protocol import Kind, Message

#: What an operator may do to a model.
MODEL_ACTIONS = frozenset({"load", "unload"})


@dataclass(eq=False)
class ModelOp:
    """One operator call, from its arrival until every replica asked has answered."""

    op_id: str
    client: bytes
    client_id: Any
    action: str
    model: str
    host: str
    deadline: float
    waiting: dict[str, Replica] = field(default_factory=dict)
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[OrchestratorError] = field(default_factory=list)


class ModelOpTable:
    """Every model load/unload in flight; the broker's loop drives it."""

    def __init__(self, settings: CoordinatorSettings, router: Router, outbox: Sender) -> None:
        self.settings = settings
        self.router = router
        self.out = outbox
        self.ops: dict[str, ModelOp] = {}
        self._ids = itertools.count(1)

    def on_client_control(self, client: bytes, body: Control) -> None:
        """Start a load or unload of ``body.model`` on every replica of ``body.host``."""
        action, host = body.action, body.host
        route = self.router.route(body.model or "")
        if host not in route.hosts:
            raise BadRequestError(
                f"host {host!r} does not serve {route.name!r}; its hosts: {list(route.hosts)}",
                model=route.name,
            )
        targets = [
            r for r in self.router.replicas_of(host) if r.state in SERVING and r.stop_target is None
        ]
        if not targets:
            raise NoHostAvailableError(
                f"no replica of {host!r} is up to {action} {route.name!r}; start it first",
                model=route.name,
            )
        op = ModelOp(
            op_id=f"m{next(self._ids)}",
            client=client,
            client_id=body.id,
            action=action,
            model=route.name,
            host=host,
            deadline=time.monotonic() + self.settings.model_op_timeout_s,
        )
        self.ops[op.op_id] = op
        for rep in targets:
            op.waiting[rep.name] = rep
            request = ModelRequest(op.op_id, op.action, op.model)
            self.out.to_host(rep, Message(Kind.MODEL, request.to_header()))

    def on_host_reply(self, rep: Replica, msg: Message) -> None:
        """A replica's CONTROL_REPLY, or its ERROR marked ``control``."""
        op = self.ops.get(str(msg.header.get("id")))
        if op is None or op.waiting.pop(rep.name, None) is None:
            return  # answered already (timed out), or a replica we did not ask
        if msg.kind is Kind.CONTROL_REPLY:
            outcome = {k: v for k, v in msg.header.items() if k not in ("id", "model")}
            op.outcomes[rep.name] = outcome
        else:
            self._failed(op, rep.name, error_from_wire(msg.header.get("error") or {}))
        self._maybe_answer(op)

    def on_replica_lost(self, rep: Replica, reason: str) -> None:
        for op in list(self.ops.values()):
            if op.waiting.pop(rep.name, None) is not None:
                self._failed(op, rep.name, HostCrashedError(f"host {rep.name} died: {reason}"))
                self._maybe_answer(op)

    def tick(self, now: float) -> None:
        for op in list(self.ops.values()):
            if now >= op.deadline:
                for name in list(op.waiting):
                    del op.waiting[name]
                    self._failed(
                        op,
                        name,
                        DeadlineExceededError(
                            f"{name} did not {op.action} {op.model!r} within "
                            f"{self.settings.model_op_timeout_s:g}s (model_op_timeout_s)"
                        ),
                    )
                self._maybe_answer(op)

    def close_all(self, reason: str) -> None:
        for op in list(self.ops.values()):
            op.waiting.clear()
            self._failed(op, "coordinator", HostCrashedError(reason))
            self._maybe_answer(op)

    @staticmethod
    def _failed(op: ModelOp, replica: str, err: OrchestratorError) -> None:
        op.errors.append(err)
        op.outcomes[replica] = {"error": err.to_wire()}

    def _maybe_answer(self, op: ModelOp) -> None:
        """Answer once every replica asked has answered: the error if none succeeded."""
        if op.waiting:
            return
        del self.ops[op.op_id]
        if len(op.errors) == len(op.outcomes):
            reply_error(self.out, op.client, op.client_id, op.errors[0], model=op.model)
            return
        body = {
            "id": op.client_id,
            "ok": True,
            "action": op.action,
            "model": op.model,
            "host": op.host,
            "replicas": op.outcomes,
        }
        self.out.to_client(op.client, Message(Kind.CONTROL_REPLY, body))
