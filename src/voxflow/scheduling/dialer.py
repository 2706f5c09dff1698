"""The dialer: takes due calls from the store, places them on legs, records what happens.

For each call: ``dialing`` (committed before any SIP request) → ``ringing`` → ``answered`` →
the keypress plan, counted from the answer → the hold time (until the call-flow runner lands)
→ hang-up → ``completed``; or ``busy`` / ``no-answer`` / ``rejected`` / ``failed``, with the
SIP code. Each keypress is an event with its planned and actual offset from the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from voxflow.domain.calls import CallStatus
from voxflow.domain.dialstring import DEFAULT_GAP_MS, DEFAULT_TONE_MS
from voxflow.services.call_records import CallRecords, DueCall
from voxflow.telephony.leg import CallLeg

log = logging.getLogger("voxflow.dialer")


@dataclass(frozen=True)
class LegPlan:
    """A leg for one call and the timings of the trunk it goes through."""

    leg: CallLeg
    tone_ms: int = DEFAULT_TONE_MS
    gap_ms: int = DEFAULT_GAP_MS
    hold_s: float = 30.0


LegFactory = Callable[[DueCall], LegPlan]


class Dialer:
    def __init__(
        self,
        records: CallRecords,
        legs: LegFactory,
        *,
        max_calls: int = 500,
        poll_s: float = 0.2,
        owner: str | None = None,
    ) -> None:
        self.records = records
        self.legs = legs
        self.max_calls = max_calls
        self.poll_s = poll_s
        self.owner = owner or f"dialer-{uuid.uuid4().hex[:8]}"
        self.active: set[asyncio.Task[None]] = set()
        self._by_pk: dict[int, asyncio.Task[None]] = {}
        self._cancelling: set[int] = set()
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Claim and place due calls until :meth:`stop`."""
        while not self._stopping.is_set():
            await self.dial_due()
            await self.cancel_requested()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.poll_s)

    async def dial_due(self) -> int:
        """Claim as many due calls as there is room for, and start placing them."""
        room = self.max_calls - len(self.active)
        calls = await asyncio.to_thread(self.records.claim_due, self.owner, room)
        for call in calls:
            task = asyncio.create_task(self.place(call), name=f"call-{call.call_id}")
            self.active.add(task)
            self._by_pk[call.pk] = task
            task.add_done_callback(self.active.discard)
            task.add_done_callback(functools.partial(self._forget, call.pk))
        return len(calls)

    def _forget(self, pk: int, _task: asyncio.Task[None]) -> None:
        self._by_pk.pop(pk, None)

    async def cancel_requested(self) -> int:
        """Hang up the calls of this dialer that cancelCall asked to end."""
        if not self._by_pk:
            return 0
        pks = await asyncio.to_thread(self.records.cancel_requests, self.owner)
        count = 0
        for pk in pks:
            task = self._by_pk.get(pk)
            if task is not None and pk not in self._cancelling:
                self._cancelling.add(pk)
                task.cancel()
                count += 1
        return count

    async def stop(self) -> None:
        self._stopping.set()
        if self.active:
            await asyncio.gather(*self.active, return_exceptions=True)

    async def place(self, call: DueCall) -> None:
        try:
            await self._place(call)
        except asyncio.CancelledError:
            if call.pk not in self._cancelling:
                raise
            self._cancelling.discard(call.pk)
            await self._move(call, CallStatus.CANCELLED, detail={"by": "cancelCall"})
        except Exception as exc:
            log.exception("call %s failed", call.call_id)
            await self._move(call, CallStatus.FAILED, detail={"error": str(exc)[:500]})

    async def _move(self, call: DueCall, status: CallStatus, **kwargs: object) -> bool:
        return await asyncio.to_thread(self.records.move, call.pk, status, **kwargs)  # type: ignore[arg-type]

    async def _place(self, call: DueCall) -> None:
        plan = self.legs(call)
        try:
            await self._run_leg(call, plan)
        except asyncio.CancelledError:
            await plan.leg.hangup()  # CANCEL while ringing, BYE once answered
            raise

    async def _run_leg(self, call: DueCall, plan: LegPlan) -> None:
        leg = plan.leg
        loop = asyncio.get_running_loop()

        progress: list[asyncio.Task[bool]] = []

        def ringing(code: int, reason: str) -> None:
            move = self._move(call, CallStatus.RINGING, sip_code=code, sip_reason=reason)
            progress.append(loop.create_task(move))

        result = await leg.dial(ringing)
        await asyncio.gather(*progress)  # so that the record keeps the order of events
        if result.status is not CallStatus.ANSWERED or result.answered_at is None:
            await self._move(
                call, result.status, sip_code=result.sip_code, sip_reason=result.sip_reason
            )
            return
        await self._move(
            call, CallStatus.ANSWERED, sip_code=result.sip_code, sip_reason=result.sip_reason
        )
        remote_bye = asyncio.create_task(leg.wait_remote_hangup())
        try:
            await self._keypresses(call, plan, result.answered_at, remote_bye)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(remote_bye), plan.hold_s)
        finally:
            by_remote = remote_bye.done()
            remote_bye.cancel()
            if not by_remote:
                await leg.hangup()
        await self._move(
            call, CallStatus.COMPLETED, detail={"hangup": "remote" if by_remote else "local"}
        )

    async def _keypresses(
        self, call: DueCall, plan: LegPlan, answered_at: float, remote_bye: asyncio.Task[None]
    ) -> None:
        for keypress in call.keypresses:
            if remote_bye.done():
                return
            at = answered_at + keypress.offset_s(plan.tone_ms, plan.gap_ms)
            sent = await plan.leg.send_keypress(keypress.key, at, plan.tone_ms)
            detail = {
                "key": sent.key,
                "planned_ms": round((sent.planned_at - answered_at) * 1000, 3),
                "actual_ms": round((sent.actual_at - answered_at) * 1000, 3),
                "error_ms": round((sent.actual_at - sent.planned_at) * 1000, 3),
            }
            await asyncio.to_thread(self.records.event, call.pk, "keypress", detail)
