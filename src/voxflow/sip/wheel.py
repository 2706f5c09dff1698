"""Many deadlines on one event-loop timer: the SIP user agent's transaction timers.

Every call arms five to seven transaction timers (A, B, M for the INVITE; E, F, K for the BYE)
and stops most of them again. One ``loop.call_at`` each is a timer handle, a context copy and
a closure per timer, made and cancelled hundreds of times a second. Here a timer is an entry
in a slot of ``resolution`` seconds (a dict), found again by its item for an O(1) stop, and
one loop timer is armed for the earliest slot. A timer fires at most ``resolution`` late and
at most ``EARLY_S`` (1 ms, the loop's own timer granularity) early; SIP's timers start at
T1 = 500 ms.

A congested loop: when the wheel wakes more than ``LATE_S`` after its slot, the loop has been
busy that long and datagrams have queued up meanwhile, among them, likely, the responses that
would stop the retransmission timers now due (the loop runs due timers before it reads
sockets). Retransmitting then only adds load (and a SIPp UAS aborts a call on an INVITE
retransmission it no longer expects). So the wheel waits once more, as long as it was late
(at most ``MAX_DEFER_S``), letting the loop read first; SIP's timers are lower bounds.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger("voxflow.sip.wheel")

Item = TypeVar("Item", bound=Hashable)

RESOLUTION_S = 0.01
# uvloop arms its timers in whole milliseconds and wakes them up to a millisecond early (by
# its cached clock): a slot counts as due that close to its time, rather than spin until then.
EARLY_S = 0.001
LATE_S = 0.05
MAX_DEFER_S = 0.5


class TimerWheel(Generic[Item]):
    """``start(item, at)`` calls ``fire(item)`` once ``at`` (loop time) has passed, unless
    ``stop(item)`` (or another ``start`` of the same item) comes first."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fire: Callable[[Item], None],
        resolution: float = RESOLUTION_S,
    ) -> None:
        self._loop = loop
        self._fire = fire
        self._resolution = resolution
        self._slots: dict[int, dict[Item, None]] = {}
        self._slot_of: dict[Item, int] = {}
        self._order: list[int] = []  # slot numbers, a heap; emptied slots are skipped lazily
        self._handle: asyncio.TimerHandle | None = None
        self._armed_slot = 0
        self._running = False  # inside _run: it arms the loop timer when done
        self._deferred = False  # woke late once already for this slot: fire now

    def __len__(self) -> int:
        return len(self._slot_of)

    def start(self, item: Item, at: float) -> None:
        self.stop(item)
        slot = math.ceil(at / self._resolution)
        entries = self._slots.get(slot)
        if entries is None:
            entries = self._slots[slot] = {}
            heapq.heappush(self._order, slot)
        entries[item] = None
        self._slot_of[item] = slot
        if not self._running and (self._handle is None or slot < self._armed_slot):
            self._arm(slot)

    def stop(self, item: Item) -> None:
        slot = self._slot_of.pop(item, None)
        if slot is None:
            return
        entries = self._slots[slot]
        del entries[item]
        if not entries:
            del self._slots[slot]

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._slots.clear()
        self._slot_of.clear()
        self._order.clear()

    def _arm(self, slot: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_slot = slot
        self._deferred = False
        self._handle = self._loop.call_at(slot * self._resolution, self._run)

    def _run(self) -> None:
        now = self._loop.time()
        late = now - self._armed_slot * self._resolution
        if late > LATE_S and not self._deferred:
            self._deferred = True
            self._handle = self._loop.call_at(now + min(late, MAX_DEFER_S), self._run)
            return
        self._deferred = False
        self._running = True
        try:
            self._drain(math.floor((now + EARLY_S) / self._resolution))
        finally:
            self._running = False
            self._handle = None
        if self._order:
            self._arm(self._order[0])

    def _drain(self, due: int) -> None:
        """Fire the timers of every slot up to ``due``, one at a time: a timer that fires may
        start or stop others, in these slots too."""
        order, slots = self._order, self._slots
        while order and order[0] <= due:
            entries = slots.get(order[0])
            if not entries:
                heapq.heappop(order)
                continue
            item = next(iter(entries))
            del entries[item]
            del self._slot_of[item]
            if not entries:
                del slots[order[0]]
            try:
                self._fire(item)
            except Exception:  # one bad timer must not stop the others
                log.exception("timer %r failed", item)
        while order and order[0] not in slots:
            heapq.heappop(order)
