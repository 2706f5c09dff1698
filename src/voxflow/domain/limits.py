"""Call limits: how many calls one destination may get, and how many may run at once.

Pure values and one decision; the store queries that produce the counts live in
:mod:`voxflow.services.limits`. A limit of ``0`` means unlimited.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import timedelta

UNLIMITED = 0

# The per-destination windows, by the name of the limit that applies to each.
WINDOWS: dict[str, timedelta] = {
    "per_destination_15m": timedelta(minutes=15),
    "per_destination_1h": timedelta(hours=1),
    "per_destination_24h": timedelta(hours=24),
}


@dataclass(frozen=True)
class Limits:
    """An account's limits (each the account's own value or the configured default)."""

    per_destination_15m: int = 7
    per_destination_1h: int = 9
    per_destination_24h: int = 15
    max_concurrent_account: int = UNLIMITED
    max_concurrent_link: int = UNLIMITED

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return _NAMES

    def value(self, name: str) -> int:
        number: int = getattr(self, name)
        return number

    def overridden(self, own: Mapping[str, int | None]) -> Limits:
        """These limits with an account's own values over them (``None`` keeps the default)."""
        changes: dict[str, int] = {}
        for name in self.names():
            value = own.get(name)
            if value is not None:
                changes[name] = value
        return replace(self, **changes)

    @property
    def checks_destination(self) -> bool:
        return any(getattr(self, name) != UNLIMITED for name in WINDOWS)

    @property
    def checks_concurrency(self) -> bool:
        return self.max_concurrent_account != UNLIMITED or self.max_concurrent_link != UNLIMITED


_NAMES = tuple(f.name for f in fields(Limits))


@dataclass(frozen=True)
class Counts:
    """What is already there when a new call asks to be accepted.

    ``per_destination`` holds, for each window name of :data:`WINDOWS`, the calls to this
    destination accepted within that window; the concurrent counts are calls in progress.
    """

    per_destination: Mapping[str, int]
    concurrent_account: int = 0
    concurrent_link: int = 0


def passed(limits: Limits, counts: Counts) -> list[str]:
    """The names of the limits that one more call would pass (empty: the call may go)."""
    current = {
        **counts.per_destination,
        "max_concurrent_account": counts.concurrent_account,
        "max_concurrent_link": counts.concurrent_link,
    }
    return [
        name
        for name in _NAMES
        if (limit := getattr(limits, name)) != UNLIMITED and current.get(name, 0) >= limit
    ]
