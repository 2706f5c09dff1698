"""Placing one call on its leg and recording what happens, status by status.

``dialing`` is already committed when this starts. Then ``ringing`` → ``answered`` → the
keypress plan, counted from the answer → the hold time (until the call-flow runner lands) →
hang-up → ``completed``; or ``busy`` / ``no-answer`` / ``rejected`` / ``failed``, with the
SIP code. Each keypress is an event with its planned and actual offset from the answer.
Cancelling the task hangs the leg up (CANCEL while ringing, BYE once answered); the caller
records why.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voxflow.domain.calls import CallStatus
from voxflow.domain.dialstring import DEFAULT_GAP_MS, DEFAULT_TONE_MS
from voxflow.services.call_records import CallRecords, DueCall
from voxflow.store.group_commit import Writer
from voxflow.telephony.leg import CallLeg


@dataclass(frozen=True)
class LegPlan:
    """A leg for one call and the timings of the trunk it goes through."""

    leg: CallLeg
    tone_ms: int = DEFAULT_TONE_MS
    gap_ms: int = DEFAULT_GAP_MS
    hold_s: float = 30.0


LegFactory = Callable[[DueCall], LegPlan]


class Placer:
    """``writer``: where the record's writes run, batched with those of the other calls."""

    def __init__(self, records: CallRecords, writer: Writer) -> None:
        self.records = records
        self.writer = writer

    async def move(self, call: DueCall, status: CallStatus, **kwargs: Any) -> bool:
        move = functools.partial(self.records.move_on, pk=call.pk, status=status, **kwargs)
        return bool(await self.writer.run(move))

    async def place(self, call: DueCall, plan: LegPlan) -> None:
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
            move = self.move(call, CallStatus.RINGING, sip_code=code, sip_reason=reason)
            progress.append(loop.create_task(move))

        result = await leg.dial(ringing)
        await asyncio.gather(*progress)  # so that the record keeps the order of events
        if result.status is not CallStatus.ANSWERED or result.answered_at is None:
            await self.move(
                call, result.status, sip_code=result.sip_code, sip_reason=result.sip_reason
            )
            return
        await self.move(
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
        await self.move(
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
            await self.writer.run(
                functools.partial(self.records.event_on, pk=call.pk, kind="keypress", detail=detail)
            )
