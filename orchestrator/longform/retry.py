"""Which failed pieces of a long recording get another attempt, on which host, and what is said
when none is left.

An hour of audio is over a hundred pieces spread over every host of the model; one host passing
the per-piece deadline under load, or crashing, must not throw away the rest of the run. A piece
whose failure says something about a host or the moment, not about the request, is tried again,
up to ``piece_attempts`` times in all:

- ``deadline_exceeded``: that host (or the queue in front of it) was too slow this time;
- ``host_crashed``: its process died mid-piece (the coordinator has already tried one other
  replica; the supervisor restarts the dead one);
- ``no_host_available``: no replica was serving just then (restarting, stopped by an operator).

A busy host is not an error: the coordinator queues the piece until a replica has room.

Everything else fails the run at once, as it always did: ``bad_audio``, ``bad_request`` and
``unknown_model`` are the caller's mistakes and fail the same way on any host; a model that is
``model_unavailable`` has already been tried on every host of its route by the coordinator, and
missing weights do not appear in seconds; ``internal`` is an engine bug that a retry would hide
(and pay for in time); the protocol and stream codes are not a one-shot request's. Nor is
``overloaded``: it is the coordinator's admission control saying its queue is full of work, and
not this run's (the runner keeps no more pieces in flight than the model's replicas take). The
answer to it, sending less, is the caller's: the HTTP face turns it into a 429 with
Retry-After so its clients back off, which retrying here would hide while adding to the load.
One exception: when a retry was pinned to a host by this module (not by the caller) and that
host answers ``model_unavailable``, that says "not on this host", and the next host is tried.

Where a retry goes: when the caller pinned ``host=``, to that host again (a comparison run must
not mix hosts). Otherwise to the first host of the model's fallback order that has not failed
this piece, pinned so the coordinator cannot hand it back to the host that just failed it; when
every host has failed it, the coordinator chooses again. The coordinator names the host and
replica in the details of every error for a request it had sent (a deadline, a crash, the host's
own error): that is how a host is known to have failed a piece that was not pinned. When the
error does not say (a deadline passed in the queue, the client's own timer), only the hosts this
module pinned count as failed, so successive retries still walk the fallback order.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping, Sequence

from orchestrator.wire.errors import BadRequestError, ErrorCode, OrchestratorError

#: Attempts per piece, the first included: survives one bad host and one unlucky moment, and
#: bounds a piece's worst case at three deadlines.
DEFAULT_PIECE_ATTEMPTS = 3
#: More would only multiply a dead route's wait by the per-piece deadline.
MAX_PIECE_ATTEMPTS = 10
#: Wait before a retry: lets a restarting replica come back; nothing next to a piece's seconds
#: of compute.
DEFAULT_RETRY_BACKOFF_S = 0.5

#: Failures that say something about a host or the moment, not about the request.
TRANSIENT_CODES = frozenset(
    {
        ErrorCode.DEADLINE_EXCEEDED,
        ErrorCode.HOST_CRASHED,
        ErrorCode.NO_HOST_AVAILABLE,
    }
)
#: Also transient when this module chose the host: "not on this host", so try the next.
NOT_ON_THIS_HOST_CODES = frozenset({ErrorCode.MODEL_UNAVAILABLE})

#: The fix named when a piece's every attempt failed, by the last failure's code.
_FIXES: Mapping[ErrorCode, str] = {
    ErrorCode.DEADLINE_EXCEEDED: (
        "raise the per-piece timeout (timeout= / --timeout), or take the slow host out of the "
        "model's route"
    ),
    ErrorCode.HOST_CRASHED: (
        "see the host's log and `python -m orchestrator health`; the coordinator restarts it"
    ),
    ErrorCode.NO_HOST_AVAILABLE: (
        "check `python -m orchestrator health`; `python -m orchestrator host restart NAME` "
        "brings a failed host back"
    ),
    ErrorCode.MODEL_UNAVAILABLE: (
        "check `python -m orchestrator health` for why the model is unavailable on its hosts"
    ),
}


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard one piece is tried: ``attempts`` in all (1: never retried), ``backoff_s`` apart."""

    attempts: int = DEFAULT_PIECE_ATTEMPTS
    backoff_s: float = DEFAULT_RETRY_BACKOFF_S

    def __post_init__(self) -> None:
        attempts = self.attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            attempts = -1  # refused below with the same message as an out-of-range count
        if not 1 <= attempts <= MAX_PIECE_ATTEMPTS:
            raise BadRequestError(
                f"piece_attempts must be a whole number from 1 to {MAX_PIECE_ATTEMPTS}, got "
                f"{self.attempts!r} (fix: e.g. piece_attempts={DEFAULT_PIECE_ATTEMPTS}; 1 never "
                "retries)",
                field="piece_attempts",
            )
        backoff = self.backoff_s
        if isinstance(backoff, bool) or not isinstance(backoff, int | float):
            backoff = math.nan
        if not 0 <= backoff < math.inf:
            raise BadRequestError(
                f"retry_backoff_s must be a finite number of seconds >= 0, got {self.backoff_s!r} "
                f"(fix: e.g. retry_backoff_s={DEFAULT_RETRY_BACKOFF_S})",
                field="retry_backoff_s",
            )


@dataclasses.dataclass(frozen=True, slots=True)
class Retry:
    """One retried attempt of a piece: what failed where, and where the next attempt goes."""

    start_s: float
    end_s: float
    #: The attempt about to be made (2 for the first retry).
    attempt: int
    attempts: int
    code: str
    #: The host that failed the piece, when known.
    failed_on: str | None
    #: The host the next attempt is pinned to; None lets the coordinator choose.
    retry_on: str | None

    def line(self) -> str:
        """The warning a user reads: the piece, the failure, where it went next."""
        return (
            f"piece {self.start_s:.1f}-{self.end_s:.1f}s: {self.code} on "
            f"{self.failed_on or 'an unnamed host'}; retried on {self.retry_on or 'any host'} "
            f"(attempt {self.attempt} of {self.attempts})"
        )


def is_transient(err: OrchestratorError, *, host_chosen_here: bool) -> bool:
    """Whether another attempt may succeed; ``host_chosen_here``: this module pinned the host."""
    return err.code in TRANSIENT_CODES or (host_chosen_here and err.code in NOT_ON_THIS_HOST_CODES)


def failed_host(err: OrchestratorError, hosts: Collection[str]) -> str | None:
    """The host among ``hosts`` that the error says failed, or None when it does not say.

    The coordinator names the host (and replica) in the details of every error it answers for a
    request it had sent to one: a deadline, a crash, or the host's own error. Only the model's own
    hosts are taken.
    """
    host = err.details.get("host")
    return host if isinstance(host, str) and host in hosts else None


def retry_host(hosts: Sequence[str], failed: Collection[str], pinned: str | None) -> str | None:
    """Where the next attempt goes: the caller's pin, else the first host in fallback order that
    has not failed this piece, else None (every one has: the coordinator chooses)."""
    if pinned is not None:
        return pinned
    return next((h for h in hosts if h not in failed), None)


def exhausted(
    err: OrchestratorError, start_s: float, end_s: float, attempts: int, failed: Sequence[str]
) -> OrchestratorError:
    """The last failure again, same class and code, its message on one line naming the piece,
    the attempts, the hosts that failed it and the fix."""
    where = f" (failed on {', '.join(failed)})" if failed else ""
    message = (
        f"piece {start_s:.1f}-{end_s:.1f}s failed all {attempts} attempt(s){where}: "
        f"{err.message.strip()}"
    )
    if "fix:" not in message:
        fix = _FIXES.get(err.code, "check `python -m orchestrator health`")
        message += f" (fix: {fix}; or pass a higher piece_attempts / --piece-attempts)"
    details = {
        **err.details,
        "piece_start_s": round(start_s, 3),
        "piece_end_s": round(end_s, 3),
        "attempts": attempts,
    }
    return type(err)(" ".join(message.split()), **details)
