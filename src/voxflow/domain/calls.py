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
