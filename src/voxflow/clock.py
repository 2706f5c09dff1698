"""Time is injected: the product uses :class:`SystemClock`, tests pass their own."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Protocol

WIRE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time as a naive UTC datetime (the form the store keeps)."""
        ...


_EPOCH = datetime(1970, 1, 1)


class SystemClock:
    def now(self) -> datetime:
        # datetime.now(UTC).replace(tzinfo=None), in half the time (one datetime, not two).
        return _EPOCH + timedelta(microseconds=time.time_ns() // 1000)


def wire_time(value: datetime | None) -> str:
    """A stored time in the iovox ``YYYY-MM-DD HH:MM:SS`` form ("" for none)."""
    if value is None:
        return ""
    if value.tzinfo is None and value.year >= 1000:
        return value.isoformat(" ", "seconds")  # the same text, a fifth of strftime's time
    return value.strftime(WIRE_TIME_FORMAT)


def parse_wire_time(value: str) -> datetime | None:
    """Parse ``YYYY-MM-DD HH:MM:SS`` (or a bare ``YYYY-MM-DD``); None when it is not one."""
    for fmt in (WIRE_TIME_FORMAT, "%Y-%m-%d"):
        try:
            return datetime.strptime(value, fmt)
        except ValueError:
            continue
    return None
