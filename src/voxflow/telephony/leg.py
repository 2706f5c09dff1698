"""The call-leg contract shared by real SIP legs and the sandbox."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from voxflow.domain.calls import CallStatus

# The statuses a dial attempt can end in (besides answered).
DIAL_OUTCOMES = frozenset(
    {
        CallStatus.ANSWERED,
        CallStatus.BUSY,
        CallStatus.NO_ANSWER,
        CallStatus.REJECTED,
        CallStatus.FAILED,
        CallStatus.CANCELLED,
    }
)


@dataclass(frozen=True)
class DialResult:
    """How a dial attempt ended; ``answered_at`` is the event-loop time of the 200 OK."""

    status: CallStatus
    sip_code: int | None = None
    sip_reason: str = ""
    answered_at: float | None = None


@dataclass(frozen=True)
class KeypressSent:
    key: str
    planned_at: float  # event-loop time the plan asked for
    actual_at: float  # event-loop time the first packet (or the INFO) went out


class CallLeg(Protocol):
    """One leg of a call, from dialling to hang-up. Times are ``loop.time()`` values."""

    async def dial(self, on_ringing: Callable[[int, str], None]) -> DialResult:
        """Ring the far end; return when it answers or the attempt has ended."""
        ...

    async def send_keypress(self, key: str, at: float, tone_ms: int) -> KeypressSent:
        """Send one keypress starting at loop time ``at``; return once it is fully sent."""
        ...

    async def wait_remote_hangup(self) -> None:
        """Return when the far end hangs up (a BYE)."""
        ...

    async def hangup(self) -> None:
        """End the call from our side (BYE when answered, CANCEL while ringing)."""
        ...
