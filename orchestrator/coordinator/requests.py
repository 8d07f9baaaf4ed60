"""The request table: one-shot transcribe requests from arrival until they are answered.

A request is dispatched to the replica the router picks, queued (bounded) while every capable
replica is busy or starting, retried once on another replica if its host dies, and answered with
the typed reason when no host can serve it. No request outlives its deadline; one stuck far past
it gets its host recycled. The broker's loop calls the ``on_*`` methods and :meth:`tick`; answers
go through the outbox, never the broker.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from orchestrator.coordinator.config import CoordinatorSettings, ModelRoute
from orchestrator.coordinator.outbox import Sender, reply_error
from orchestrator.coordinator.router import Choice, Router, Verdict
from orchestrator.coordinator.supervisor import Replica, Supervisor
from orchestrator.wire.bodies import HostResult, TranscribeRequest
from orchestrator.wire.errors import (
    BadAudioError,
    DeadlineExceededError,
    ErrorCode,
    HostCrashedError,
    OrchestratorError,
    OverloadedError,
    error_from_wire,
)
from orchestrator.wire.formats import BYTES_PER_SAMPLE
from orchestrator.wire.protocol import Kind, Message

#: A one-shot request is tried on at most this many replicas (the first, plus one retry).
MAX_ATTEMPTS = 2
#: Error codes with which a host says "not this model here": the next host is tried.
_TRY_ELSEWHERE = frozenset({ErrorCode.MODEL_UNAVAILABLE, ErrorCode.UNKNOWN_MODEL})


#: What a queued request waits for: (model, pinned host, hosts already tried).
WaitKind = tuple[str, str | None, frozenset[str]]


def _where(rep: Replica | None) -> dict[str, str]:
    """Error details naming the host and replica a request failed on (none if never sent):
    what a caller that retries elsewhere (the long-form runner) reads to avoid that host."""
    return {} if rep is None else {"host": rep.host.name, "replica": rep.name}


@dataclass(eq=False, slots=True)
class Request:
    """A one-shot transcribe request from the moment it arrives until it is answered."""

    rid: str
    client: bytes
    client_id: Any
    route: ModelRoute
    body: TranscribeRequest
    payloads: list[bytes]
    received: float
    deadline: float
    tried: set[str] = field(default_factory=set)
    replica: Replica | None = None
    dispatched_at: float = 0.0
    answered: bool = False
    #: What the last host said when it could not serve this request (reported if none can).
    last_error: OrchestratorError | None = None
    #: While queued: (model, pinned host, hosts tried), the replicas it waits for.
    waits_for: WaitKind | None = None

    @property
    def pinned_host(self) -> str | None:
        return self.body.host


class RequestTable:
    """Every one-shot request in flight or queued; the broker's loop drives it."""

    def __init__(
        self,
        settings: CoordinatorSettings,
        router: Router,
        supervisor: Supervisor,
        outbox: Sender,
    ) -> None:
        self.settings = settings
        self.router = router
        self.supervisor = supervisor
        self.out = outbox
        #: Dispatched and not yet heard back from, by the id the host sees.
        self.inflight: dict[str, Request] = {}
        self.pending: deque[Request] = deque()
        #: How many queued requests wait for each kind of replica (kept with ``pending``).
        self._pending_kinds: Counter[WaitKind] = Counter()
        self._ids = itertools.count(1)
        self.received = 0
        self.results = 0
        self.retries = 0
        self.recycled_stuck = 0

    def stats(self) -> dict[str, int]:
        """This table's part of the coordinator's health."""
        return {
            "queued": len(self.pending),
            "inflight": sum(1 for r in self.inflight.values() if not r.answered),
            "requests": self.received,
            "results": self.results,
            "retries": self.retries,
            "recycled_stuck": self.recycled_stuck,
        }

    # ------------------------------------------------------------------ from clients
    def on_client_request(self, client: bytes, msg: Message) -> None:
        """Admit a TRANSCRIBE: check it, then dispatch, queue or refuse it."""
        body = TranscribeRequest.from_header(msg.header)
        now = time.monotonic()
        route = self.router.route(body.model)
        self._check_audio_length(body, msg.payloads)
        timeout = body.timeout_s or self.settings.request_timeout_s  # 0 or none: the default
        req = Request(
            rid=str(next(self._ids)),
            client=client,
            client_id=body.id,
            route=route,
            body=body,
            payloads=msg.payloads,
            received=now,
            deadline=now + timeout,
        )
        self.received += 1
        self._place(req)

    def _check_audio_length(self, body: TranscribeRequest, payloads: list[bytes]) -> None:
        """Refuse a clip over ``max_audio_s`` here, before any host spends time on it."""
        width = BYTES_PER_SAMPLE[body.format]  # a checked name: equal to its AudioFormat
        seconds = sum(map(len, payloads)) / width / body.sample_rate
        limit = self.settings.max_audio_s
        if seconds > limit:
            raise BadAudioError(
                f"{seconds:.1f}s of audio is over the {limit:g}s limit of one request; stream it instead",
                seconds=round(seconds, 3),
                max_audio_s=limit,
            )

    # ------------------------------------------------------------------ placing
    def _place(self, req: Request, *, retry: bool = False) -> None:
        """Dispatch now, queue, or answer with the typed reason (the last host's, if one failed).

        The queue bound refuses new work; a retry is work already admitted, so it may wait.
        While older requests of its kind are queued it queues behind them without asking the
        router: every change that could free a replica for them (a reply, a replica ready or
        lost) drains the queue, so none is free now, and under pipelining this saves a routing
        decision per request.
        """
        # Its kind is only looked up while something is queued (and named when it queues).
        kind = _wait_kind(req) if self._pending_kinds else None
        if kind is not None and self._pending_kinds.get(kind):
            choice = Choice(Verdict.WAIT)
        else:
            try:
                choice = self.router.choose(req.route, exclude=req.tried, only_host=req.pinned_host)
            except OrchestratorError as exc:
                self._answer_error(req, req.last_error or exc)
                return
        if choice.verdict is Verdict.DISPATCH:
            assert choice.replica is not None
            self._dispatch(req, choice.replica)
        elif len(self.pending) >= self.settings.max_queue and not retry:
            self._answer_error(
                req,
                OverloadedError(
                    f"queue full ({self.settings.max_queue} waiting)", model=req.route.name
                ),
            )
        else:
            kind = _wait_kind(req) if kind is None else kind
            req.waits_for = kind
            self.pending.append(req)
            self._pending_kinds[kind] += 1

    def _dispatch(self, req: Request, rep: Replica) -> None:
        now = time.monotonic()
        req.replica, req.dispatched_at = rep, now
        req.tried.add(rep.name)
        self.inflight[req.rid] = req
        rep.inflight += 1
        # Re-addressed: the host answers the coordinator's id, for the route's model, and has
        # what is left of the deadline.
        header = req.body.to_header()
        header["id"], header["model"] = req.rid, req.route.name
        header["timeout_s"] = max(0.0, req.deadline - now)
        self.out.to_host(rep, Message(Kind.TRANSCRIBE, header, req.payloads))
        self.supervisor.update_load(rep)

    def _answer_error(self, req: Request, err: OrchestratorError) -> None:
        if not req.answered:
            req.answered = True
            reply_error(self.out, req.client, req.client_id, err, model=req.route.name)

    def drain_pending(self) -> None:
        """Offer queued requests to replicas that have room again, oldest first."""
        if not self.pending:
            return
        waiting, self.pending = self.pending, deque()
        left, self._pending_kinds = self._pending_kinds, Counter()  # recounted as they go back
        # Within one pass capacity only shrinks (dispatches take slots, queueing frees none), so
        # once a request of some (model, pinned host, hosts tried) has to wait, every later one
        # of the same kind would too: requeue those without asking the router again. Once every
        # request left is of a blocked kind, the rest goes back in one step: a reply under
        # pipelining costs one dispatch and one refusal, not a pass over the queue.
        blocked: set[WaitKind] = set()
        blocked_left = 0  # requests still in ``waiting`` whose kind is blocked
        while waiting:
            if blocked_left == len(waiting):
                self.pending.extend(waiting)
                self._pending_kinds.update(+left)
                return
            req = waiting.popleft()
            kind = req.waits_for
            left[kind] -= 1
            if kind in blocked:
                blocked_left -= 1
                self.pending.append(req)
                self._pending_kinds[kind] += 1
                continue
            self._place(req)
            if self.pending and self.pending[-1] is req:
                blocked.add(kind)
                blocked_left += left[kind]

    # ------------------------------------------------------------------ from hosts
    def on_host_reply(self, rep: Replica, msg: Message) -> None:
        """A RESULT or ERROR for a request dispatched to ``rep`` (late or foreign ones are void)."""
        rid = str(msg.header["id"])  # the one field a RESULT and an ERROR share
        req = self.inflight.get(rid)
        if req is None or req.replica is not rep:
            return  # a replica the request left (retried elsewhere) must not void it
        del self.inflight[rid]
        rep.inflight -= 1
        if msg.kind is Kind.RESULT:
            rep.served += 1
            self.results += 1
            if not req.answered:
                req.answered = True
                result = HostResult.from_header(msg.header)
                self.out.to_client(req.client, self._result_message(req, rep, result))
        else:
            rep.errors += 1
            error = msg.header.get("error") or {}
            code = str(error.get("code"))
            if code in _TRY_ELSEWHERE and not req.answered:
                # That host cannot serve it after all: try the next one, keeping its reason.
                req.last_error = error_from_wire(error)
                self._place(req)
            elif not req.answered:
                req.answered = True
                self.out.count_error(code)
                # The host's error as it said it, with where it happened among its details.
                error = dict(error) if isinstance(error, dict) else {}
                details = error.get("details")
                error["details"] = {
                    **(details if isinstance(details, dict) else {}),
                    **_where(rep),
                }
                self.out.to_client(
                    req.client,
                    Message(Kind.ERROR, {**msg.header, "error": error, "id": req.client_id}),
                )
        self.supervisor.update_load(rep)
        self.drain_pending()

    @staticmethod
    def _result_message(req: Request, rep: Replica, result: HostResult) -> Message:
        timings = {
            "queued_s": req.dispatched_at - req.received + result.host_queued_s,
            "load_s": result.load_s,
            "compute_s": result.compute_s,
            "total_s": time.monotonic() - req.received,
        }
        return Message(
            Kind.RESULT,
            {
                "id": req.client_id,
                "result": result.result,
                "model": req.route.name,
                "host": rep.host.name,
                "replica": rep.name,
                "timings": timings,
                "attempts": len(req.tried),
            },
        )

    # ------------------------------------------------------------------ time and failure
    def tick(self, now: float) -> None:
        """Answer what passed its deadline; recycle a host holding a request far past it."""
        if self.pending and any(r.deadline <= now for r in self.pending):
            keep: deque[Request] = deque()
            for req in self.pending:
                if req.deadline <= now:
                    self._pending_kinds[req.waits_for] -= 1  # type: ignore[index]
                    self._answer_error(req, DeadlineExceededError("deadline passed while queued"))
                else:
                    keep.append(req)
            self.pending = keep
        grace = self.settings.stuck_request_grace_s
        for req in list(self.inflight.values()):
            if req.deadline > now:
                continue
            if not req.answered:
                rep = req.replica
                where = rep.name if rep else "any host"
                self._answer_error(
                    req,
                    DeadlineExceededError(
                        f"no answer from {where} within the deadline", **_where(rep)
                    ),
                )
            elif now - req.deadline > grace and req.replica is not None:
                rep = req.replica
                self.inflight.pop(req.rid, None)
                self.recycled_stuck += 1
                self.supervisor.recycle(
                    rep, f"request stuck {now - req.deadline:.1f}s past its deadline"
                )

    def on_replica_lost(self, rep: Replica, reason: str) -> None:
        """``rep``'s process is gone (or going): retry its requests elsewhere once, or answer."""
        lost = [r for r in self.inflight.values() if r.replica is rep]
        rep.inflight = 0
        for req in lost:
            self.inflight.pop(req.rid, None)
            if req.answered:
                continue
            if len(req.tried) < MAX_ATTEMPTS and not self.supervisor.closing:
                self.retries += 1
                req.replica = None
                req.last_error = HostCrashedError(
                    f"host {rep.name} died ({reason}); no other host", **_where(rep)
                )
                self._place(req, retry=True)
            else:
                self._answer_error(
                    req, HostCrashedError(f"host {rep.name} died: {reason}", **_where(rep))
                )
        # Requests queued for replicas that may now never come back are answered now with the
        # router's reason, not at their deadline; those a restart will serve keep waiting.
        self.drain_pending()

    def close_all(self, reason: str) -> None:
        """Answer every open request (the coordinator is shutting down)."""
        for req in [*self.inflight.values(), *self.pending]:
            self._answer_error(req, HostCrashedError(reason))
        self.pending.clear()
        self._pending_kinds.clear()


def _wait_kind(req: Request) -> WaitKind:
    """What a queued request waits for: requests of one kind are served in order."""
    return (req.route.name, req.pinned_host, frozenset(req.tried))
