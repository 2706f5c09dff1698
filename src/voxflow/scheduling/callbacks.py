"""The status callback sender: POSTs the outbox (voxflow.services.callbacks) to receivers.

One asyncio task per process that runs a dialer, apart from the dialer: it claims due
callbacks with a lease, POSTs each as JSON with a timeout, and records delivered / retry
later (exponential backoff) / given up. At most ``concurrency`` POSTs are in flight, each
bounded by ``timeout_s``, and the database work runs in worker threads, so a slow, failing or
hanging receiver delays only its own callbacks, never the dialling of calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import timedelta

import httpx

from voxflow.clock import Clock
from voxflow.config import CallbackSettings
from voxflow.services import callbacks
from voxflow.services.callbacks import Callback, RetryPolicy
from voxflow.store.db import Database

log = logging.getLogger("voxflow.callbacks")

USER_AGENT = "voxflow-status-callback/1"
LEASE_MARGIN = timedelta(seconds=30)


class CallbackSender:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: CallbackSettings | None = None,
        *,
        owner: str | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings or CallbackSettings()
        self.owner = owner or f"callbacks-{uuid.uuid4().hex[:8]}"
        s = self.settings
        self.policy = RetryPolicy(
            max_attempts=s.max_attempts,
            max_age=timedelta(seconds=s.max_age_s),
            backoff=timedelta(seconds=s.backoff_s),
            backoff_max=timedelta(seconds=s.backoff_max_s),
        )
        # A lease outlives the POST (which wait_for bounds to 2 timeouts) by a margin.
        self.lease = timedelta(seconds=2 * s.timeout_s) + LEASE_MARGIN
        self.inflight: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(max_connections=self.settings.concurrency)
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.settings.timeout_s),
                limits=limits,
                follow_redirects=False,
                headers={"user-agent": USER_AGENT},
            )
        return self._client

    async def run(self) -> None:
        """Deliver callbacks until :meth:`stop`."""
        while not self._stopping.is_set():
            try:
                started = await self.start_due()
            except Exception:  # the database may be away for a moment: keep the task alive
                log.exception("claiming status callbacks failed")
                started = 0
            if started == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.poll_s)

    async def start_due(self) -> int:
        """Claim due callbacks for the free delivery slots and start POSTing them."""
        room = self.settings.concurrency - len(self.inflight)
        if room <= 0:
            return 0
        claimed = await asyncio.to_thread(self._claim, room)
        for callback in claimed:
            task = asyncio.create_task(self._deliver(callback), name=f"callback-{callback.id}")
            self.inflight.add(task)
            task.add_done_callback(self._done)
        return len(claimed)

    async def deliver_due(self) -> int:
        """Start every due callback there is room for and wait until they are recorded."""
        started = await self.start_due()
        if self.inflight:
            await asyncio.gather(*self.inflight, return_exceptions=True)
        return started

    def _done(self, task: asyncio.Task[None]) -> None:
        self.inflight.discard(task)
        self._wake.set()  # a slot is free, and the call's next callback may now be due

    def _claim(self, limit: int) -> list[Callback]:
        with self.db.write() as conn:
            return callbacks.claim(
                conn, self.owner, self.clock.now(), lease=self.lease, limit=limit
            )

    async def post(self, callback: Callback) -> str | None:
        """POST one callback; None when the receiver took it (2xx), else the reason."""
        headers = {
            "content-type": "application/json",
            "x-voxflow-callback-id": str(callback.id),
            "x-voxflow-attempt": str(callback.attempt),
        }
        try:
            response = await asyncio.wait_for(
                self._http().post(callback.url, content=callback.payload, headers=headers),
                2 * self.settings.timeout_s,
            )
        except TimeoutError:
            return "timed out"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    async def _deliver(self, callback: Callback) -> None:
        error = await self.post(callback)
        await asyncio.to_thread(self._record, callback, error)

    def _record(self, callback: Callback, error: str | None) -> None:
        now = self.clock.now()
        with self.db.write() as conn:
            if error is None:
                callbacks.delivered(conn, callback, self.owner, now)
                return
            gave_up = callbacks.attempt_failed(
                conn, callback, self.owner, now, error=error, policy=self.policy
            )
        level = logging.WARNING if gave_up else logging.INFO
        log.log(
            level,
            "status callback %d to %s attempt %d: %s%s",
            callback.id,
            callback.url,
            callback.attempt,
            error,
            " (given up)" if gave_up else "",
        )

    async def stop(self) -> None:
        """Stop claiming, abandon POSTs in flight and give their leases back."""
        self._stopping.set()
        self._wake.set()
        for task in list(self.inflight):
            task.cancel()
        await asyncio.gather(*self.inflight, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._release)

    def _release(self) -> None:
        with self.db.write() as conn:
            callbacks.release(conn, self.owner)
