"""The dialer: claims due calls from the store, waits for each one's send slot, places it.

One loop per dialer (see :mod:`voxflow.services.call_leases` for what a claim round does):

- claim a round, then sleep until the next due call, a paced trunk's next slot, or the
  re-check period (``recheck_s``), whichever is first; an accepted call (announced in this
  process, or by ``NOTIFY`` on PostgreSQL) or a call ending while calls wait for capacity
  wakes it at once;
- each claimed call waits for its slot, moves to ``dialing`` (committed, only if the lease is
  still ours and the call was not cancelled) and is placed (:mod:`.placing`);
- the leases of every call this dialer holds are renewed in bulk every ``lease_s / 3``;
- calls in progress are checked for cancelCall's requests every ``poll_s``;
- on start, what an earlier run of the same dialer name left is taken back at once.

The store work on the way to a call's INVITE (claim rounds, the move to ``dialing``) runs on
threads of the dialer's own, so that it never queues behind the bookkeeping of calls in
progress (their status moves and events, on a pool of their own too).

:meth:`Dialer.stop` is the graceful shutdown: stop claiming, give back claims that have not
reached ``dialing``, let calls in progress finish for up to ``shutdown_s``, then hang up the
rest and record why.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import uuid
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from voxflow.domain.calls import CallStatus
from voxflow.domain.dispatch import lease_owner
from voxflow.scheduling.placing import LegFactory, LegPlan, Placer
from voxflow.services import due_signal
from voxflow.services.call_leases import CallLeases, Claim, ClaimRound, Pacing
from voxflow.services.call_records import CallRecords, DueCall
from voxflow.store.group_commit import GroupCommit

__all__ = ["Dialer", "DialerSettings", "LegFactory", "LegPlan"]

log = logging.getLogger("voxflow.dialer")

RETRY_AFTER = timedelta(seconds=1)
# The dialer's writes go through two group-commit writers (one thread each): moves to
# ``dialing``, which must not wait behind anything, and the record of calls in progress (status
# moves and events, three or four per call). A thread per write, as before, meant a score of
# threads wanting the GIL at 150 calls/s on PostgreSQL, and the event loop waiting behind them
# long enough to miss due times by 100s of ms.

SHUTDOWN_REASON = "hung up at shutdown: the call outlived shutdown_s ({:g} s)"


@dataclass(frozen=True)
class DialerSettings:
    max_calls: int = 500  # calls this dialer holds at once (waiting for a slot or in progress)
    lease_s: float = 30.0
    recheck_s: float = 5.0  # the longest a dialer sleeps without looking at the store
    poll_s: float = 0.2  # how often calls in progress are checked for cancel requests
    max_lateness_s: float = 3600.0  # 0: never expire
    shutdown_s: float = 30.0

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_s)

    @property
    def max_lateness(self) -> timedelta | None:
        return timedelta(seconds=self.max_lateness_s) if self.max_lateness_s > 0 else None


class Dialer:
    def __init__(
        self,
        records: CallRecords,
        legs: LegFactory,
        *,
        settings: DialerSettings | None = None,
        pacing: Pacing | None = None,
        name: str | None = None,
        listen_url: str | None = None,
    ) -> None:
        self.records = records
        self.legs = legs
        self.settings = settings or DialerSettings()
        self.pacing = pacing or Pacing(trunks={}, default_trunk=None)
        self.clock = records.clock
        self.leases = CallLeases(records.db, records.clock)
        self._recording = GroupCommit(
            records.db, refusals=(), savepoints=False, name="voxflow-record"
        )
        self.placer = Placer(records, self._recording)
        self.owner = lease_owner(name or f"dialer-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:12])
        self.listen_url = listen_url  # PostgreSQL: LISTEN for calls accepted elsewhere
        self.active: set[asyncio.Task[None]] = set()
        self.waiting: dict[int, asyncio.Task[None]] = {}  # claimed, waiting for the slot
        self.calls: dict[int, asyncio.Task[None]] = {}  # dialing or later
        self.last_round: ClaimRound | None = None
        self._unstarted: set[int] = set()
        self._cancelling: set[int] = set()
        self._shutting: set[int] = set()
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._wake_at: datetime | None = None
        self._left_waiting = asyncio.Event()
        self._running = False  # run() is claiming
        self._loop_done = asyncio.Event()
        self._helpers: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        # Claim rounds are serial; moves to dialing must not wait behind a slow round.
        self._claiming = ThreadPoolExecutor(1, thread_name_prefix="voxflow-claim")
        self._starting = GroupCommit(
            records.db, refusals=(), savepoints=False, name="voxflow-start"
        )

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Claim and place due calls until :meth:`stop`."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._running = True
        unsubscribe = due_signal.subscribe(self.records.db, self._announced)
        try:
            released, reconciled = await asyncio.to_thread(self.leases.recover, self.owner)
            log.info(
                "dialer %s started; from its earlier run: %d claims released, %d calls unknown",
                self.owner,
                released,
                reconciled,
            )
            self._helper(self._renew_leases())
            self._helper(self._watch_cancels())
            if self.listen_url is not None:
                from voxflow.scheduling.pg_wakeup import listen

                self._helper(listen(self.listen_url, self._announced))
            while not self._stopping.is_set():
                try:
                    round_ = await self.dial_due_round()
                except Exception:  # the store is away for a moment: look again soon
                    log.exception("claim round failed")
                    round_ = ClaimRound([], 0, 0, self.clock.now() + RETRY_AFTER, False)
                await self._sleep(round_)
        finally:
            unsubscribe()
            self._running = False
            self._loop_done.set()

    def _helper(self, coro: Coroutine[Any, Any, None]) -> None:
        self._helpers.append(asyncio.get_running_loop().create_task(coro))

    async def dial_due(self) -> int:
        """One claim round; returns how many calls it claimed."""
        return len((await self.dial_due_round()).claims)

    async def dial_due_round(self) -> ClaimRound:
        self._wake_at = None  # an announcement during the round means: look again at once
        self._wake.clear()
        room = self.settings.max_calls - len(self.active)
        claiming = functools.partial(
            self.leases.claim,
            self.owner,
            room=room,
            lease=self.settings.lease,
            pacing=self.pacing,
            max_lateness=self.settings.max_lateness,
        )
        round_ = await asyncio.get_running_loop().run_in_executor(self._claiming, claiming)
        self.last_round = round_
        if round_.expired or round_.reconciled:
            log.warning(
                "%d calls expired (past max_lateness_s), %d calls in progress of a lost dialer"
                " marked unknown",
                round_.expired,
                round_.reconciled,
            )
        for claim in round_.claims:
            self._start(claim)
        return round_

    def _start(self, claim: Claim) -> None:
        task = asyncio.create_task(self._claimed(claim), name=f"call-{claim.call.call_id}")
        pk = claim.call.pk
        self.active.add(task)
        self.waiting[pk] = task
        task.add_done_callback(lambda done: self._finished(pk, done))

    def _finished(self, pk: int, task: asyncio.Task[None]) -> None:
        self.active.discard(task)
        if self.waiting.pop(pk, None) is not None:
            self._left_waiting.set()
        self.calls.pop(pk, None)
        if self.last_round is not None and self.last_round.waiting_for_capacity:
            self._wake.set()

    async def _sleep(self, round_: ClaimRound) -> None:
        now = self.clock.now()
        target = now + timedelta(seconds=self.settings.recheck_s)
        if round_.wake_at is not None:
            target = min(target, round_.wake_at)
        self._wake_at = target
        if self._wake.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.0, (target - now).total_seconds()))

    def _announced(self, due_at: datetime | None) -> None:
        """A call was accepted (any thread): wake the loop if it is due before the planned look."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            # On the loop already (initiateCall's outcome, read from the writer process): no
            # need to wake it through its self-pipe.
            self._wake_if_sooner(due_at)
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._wake_if_sooner, due_at)

    def _wake_if_sooner(self, due_at: datetime | None) -> None:
        # Calls are claimed up to a horizon ahead of their due time.
        if due_at is None or self._wake_at is None or due_at - self.pacing.horizon <= self._wake_at:
            self._wake.set()

    # ------------------------------------------------------------------ one call

    async def _claimed(self, claim: Claim) -> None:
        pk = claim.call.pk
        delay = (claim.slot - self.clock.now()).total_seconds()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        if self._stopping.is_set():
            self._unstarted.add(pk)
            return
        try:
            started = await self._starting.run(
                functools.partial(
                    self.leases.start_dialing_on,
                    claim=claim,
                    owner=self.owner,
                    lease=self.settings.lease,
                )
            )
        except Exception:  # not dialled; the lease runs out and the call is claimed again
            log.exception("cannot move call %s to dialing", claim.call.call_id)
            return
        if not started:
            log.info("call %s was cancelled or taken over before dialing", claim.call.call_id)
            return
        task = self.waiting.pop(pk)
        self._left_waiting.set()
        self.calls[pk] = task
        await self.place(claim.call)

    async def place(self, call: DueCall) -> None:
        """Place a call that is ``dialing``, recording how it ended."""
        try:
            await self.placer.place(call, self.legs(call))
        except asyncio.CancelledError:
            if call.pk in self._cancelling:
                self._cancelling.discard(call.pk)
                await self.placer.move(call, CallStatus.CANCELLED, detail={"by": "cancelCall"})
            elif call.pk in self._shutting:
                reason = SHUTDOWN_REASON.format(self.settings.shutdown_s)
                detail = {"by": self.owner, "hangup": "shutdown"}
                for status in (CallStatus.COMPLETED, CallStatus.CANCELLED):
                    if await self.placer.move(call, status, detail=detail, status_reason=reason):
                        break
            else:
                raise
        except Exception as exc:
            log.exception("call %s failed", call.call_id)
            await self.placer.move(call, CallStatus.FAILED, detail={"error": str(exc)[:500]})

    # ------------------------------------------------------------------ helpers

    async def _renew_leases(self) -> None:
        every = self.settings.lease_s / 3
        while True:
            await asyncio.sleep(every)
            try:
                await self.renew()
            except Exception:  # the store is away for a moment: try again next time
                log.exception("cannot renew leases")

    async def renew(self) -> int:
        """Renew the leases of every call this dialer holds; returns how many it still holds."""
        pks = [*self.waiting, *self.calls]
        if not pks:
            return 0
        return await asyncio.to_thread(self.leases.renew, self.owner, pks, self.settings.lease)

    async def _watch_cancels(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_s)
            try:
                await self.cancel_requested()
            except Exception:
                log.exception("cannot look for cancel requests")

    async def cancel_requested(self) -> int:
        """Hang up the calls of this dialer that cancelCall asked to end."""
        if not self.calls:
            return 0
        pks = await asyncio.to_thread(self.records.cancel_requests, self.owner)
        count = 0
        for pk in pks:
            task = self.calls.get(pk)
            if task is not None and pk not in self._cancelling:
                self._cancelling.add(pk)
                task.cancel()
                count += 1
        return count

    # ------------------------------------------------------------------ shutdown

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop claiming; release claims not yet dialling; let calls in progress finish for up
        to ``grace_s`` (default ``shutdown_s``), then hang them up and record it."""
        grace = self.settings.shutdown_s if grace_s is None else grace_s
        self._stopping.set()
        self._wake.set()
        if self._running:  # a round may be claiming right now: let it end first
            await self._loop_done.wait()
        while self.waiting:  # each sees the stop, or is already moving to dialing
            self._left_waiting.clear()
            await self._left_waiting.wait()
        if self._unstarted:
            released = await asyncio.to_thread(
                self.leases.release, self.owner, sorted(self._unstarted)
            )
            log.info("released %d claimed calls that had not started", released)
        running = list(self.calls.items())
        if running:
            log.info("waiting up to %g s for %d calls in progress", grace, len(running))
            _done, pending = await asyncio.wait([task for _, task in running], timeout=grace)
            for pk, task in running:
                if task in pending:
                    self._shutting.add(pk)
                    task.cancel()
            if pending:
                log.warning("hanging up %d calls at shutdown", len(pending))
                await asyncio.gather(*pending, return_exceptions=True)
        for helper in self._helpers:
            helper.cancel()
        await asyncio.gather(*self._helpers, return_exceptions=True)
        self._helpers.clear()
        self._claiming.shutdown(wait=False)
        for writer in (self._starting, self._recording):  # every call has ended: nothing queued
            await asyncio.to_thread(writer.close)
