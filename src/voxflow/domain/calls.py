"""Call records: the statuses a call moves through."""

from __future__ import annotations

from enum import StrEnum


class CallStatus(StrEnum):
    QUEUED = "queued"  # accepted, due now, waiting for a dialer
    SCHEDULED = "scheduled"  # accepted with a delay, not yet due
    DIALING = "dialing"  # the first SIP request is about to go, or went
    RINGING = "ringing"
    ANSWERED = "answered"
    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    UNKNOWN = "unknown"  # a dialer died mid-call; reconciled, never dialled again


MAX_DELAY_MINUTES = 43_200  # 30 days


FINAL = frozenset(
    {
        CallStatus.COMPLETED,
        CallStatus.BUSY,
        CallStatus.NO_ANSWER,
        CallStatus.REJECTED,
        CallStatus.FAILED,
        CallStatus.CANCELLED,
        CallStatus.EXPIRED,
        CallStatus.UNKNOWN,
    }
)

_ENDED_WHILE_DIALING = frozenset(
    {
        CallStatus.BUSY,
        CallStatus.NO_ANSWER,
        CallStatus.REJECTED,
        CallStatus.FAILED,
        CallStatus.CANCELLED,
        CallStatus.UNKNOWN,
    }
)

# Every status a call may move to from each status; anything else is a bug, refused by the store.
TRANSITIONS: dict[CallStatus, frozenset[CallStatus]] = {
    CallStatus.SCHEDULED: frozenset(
        {CallStatus.QUEUED, CallStatus.DIALING, CallStatus.CANCELLED, CallStatus.EXPIRED}
    ),
    CallStatus.QUEUED: frozenset({CallStatus.DIALING, CallStatus.CANCELLED, CallStatus.EXPIRED}),
    CallStatus.DIALING: frozenset({CallStatus.RINGING, CallStatus.ANSWERED}) | _ENDED_WHILE_DIALING,
    CallStatus.RINGING: frozenset({CallStatus.ANSWERED}) | _ENDED_WHILE_DIALING,
    CallStatus.ANSWERED: frozenset(
        {CallStatus.COMPLETED, CallStatus.FAILED, CallStatus.CANCELLED, CallStatus.UNKNOWN}
    ),
}


def predecessors(status: CallStatus) -> frozenset[CallStatus]:
    """The statuses from which a call may move to ``status``."""
    return frozenset(s for s, targets in TRANSITIONS.items() if status in targets)


IN_PROGRESS = frozenset({CallStatus.DIALING, CallStatus.RINGING, CallStatus.ANSWERED})
NOT_STARTED = frozenset({CallStatus.QUEUED, CallStatus.SCHEDULED})

# iovox's call_result for each final status (Calls::getCallData).
CALL_RESULTS = {
    CallStatus.COMPLETED: "ANSWERED",
    CallStatus.BUSY: "BUSY",
    CallStatus.NO_ANSWER: "NO_ANSWER",
    CallStatus.REJECTED: "REJECTED",
    CallStatus.CANCELLED: "CANCELLED",
    CallStatus.FAILED: "FAILED",
}
