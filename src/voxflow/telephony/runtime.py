"""Everything that places calls in one process: the media clock, the SIP user agent, the
dialer, and (when no trunk is configured) a built-in softphone that the calls go to."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from datetime import timedelta

from voxflow.clock import Clock
from voxflow.config import Settings
from voxflow.domain.dispatch import TrunkPace
from voxflow.media.clock import MediaClock
from voxflow.scheduling.dialer import Dialer, DialerSettings, LegPlan
from voxflow.services.call_leases import Pacing
from voxflow.services.call_records import CallRecords, DueCall
from voxflow.sip.useragent import UserAgent
from voxflow.store.db import Database
from voxflow.telephony.registration import Registration
from voxflow.telephony.sandbox import SandboxLeg, SandboxSettings
from voxflow.telephony.sip_leg import SipLeg
from voxflow.telephony.softphone import Softphone
from voxflow.trunks import Trunk, find_trunk

log = logging.getLogger("voxflow.telephony")

DEMO_CALLER_ID = "441234567890"


class Telephony:
    def __init__(self, db: Database, clock: Clock, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.records = CallRecords(db, clock)
        self.trunks: list[Trunk] = list(settings.trunks)
        self.media = MediaClock()
        self.ua = UserAgent()
        self.softphone: Softphone | None = None
        self.dialer: Dialer | None = None
        self._task: asyncio.Task[None] | None = None
        self.registrations: list[tuple[Registration, asyncio.Task[None]]] = []

    async def start(self) -> None:
        tel = self.settings.telephony
        self.media.start()
        await self.ua.start(tel.sip_host, tel.sip_port)
        log.info("SIP user agent on %s:%d", self.ua.host, self.ua.port)
        if not self.trunks:
            await self._start_softphone()
        loop = asyncio.get_running_loop()
        for trunk in self.trunks:
            if trunk.register:
                registration = Registration(self.ua, trunk)
                self.registrations.append((registration, loop.create_task(registration.run())))
        self.dialer = self._dialer()
        self._task = asyncio.get_running_loop().create_task(self.dialer.run())

    def _dialer(self) -> Dialer:
        tel = self.settings.telephony
        settings = DialerSettings(
            max_calls=tel.max_calls,
            lease_s=tel.lease_s,
            recheck_s=tel.recheck_s,
            poll_s=tel.poll_s,
            max_lateness_s=tel.max_lateness_s,
            shutdown_s=tel.shutdown_s,
        )
        pacing = Pacing(
            trunks={t.name: TrunkPace(t.cps, t.max_calls) for t in self.trunks},
            default_trunk=self.trunks[0].name if self.trunks else None,
            account_max_calls=tel.max_concurrent_account,
            link_max_calls=tel.max_concurrent_link,
            horizon=timedelta(seconds=min(1.0, tel.lease_s / 4)),
        )
        # The SIP address is this dialer's own (no two live dialers can bind it), so it makes
        # a stable default name: a restart takes back what the previous run left at once.
        name = tel.dialer_name or f"{socket.gethostname()}:{self.ua.host}:{self.ua.port}"
        return Dialer(
            self.records,
            self.leg_for,
            settings=settings,
            pacing=pacing,
            name=name[-50:].replace("/", "_"),
            listen_url=None if self.db.is_sqlite else self.db.url,
        )

    async def _start_softphone(self) -> None:
        tel = self.settings.telephony
        record_dir = self.settings.data_dir / "softphone"
        self.softphone = Softphone(self.media, answer_after_s=0.5, record_dir=record_dir)
        await self.softphone.start("127.0.0.1", tel.softphone_port)
        port = self.softphone.ua.port
        self.trunks = [
            Trunk(
                name="softphone", host="127.0.0.1", port=port, caller_id=DEMO_CALLER_ID, hold_s=10
            )
        ]
        log.warning(
            "no trunk configured: calls go to the built-in softphone at sip:127.0.0.1:%d, "
            "which logs the keypresses it hears and saves the audio in %s",
            port,
            record_dir,
        )

    def leg_for(self, call: DueCall) -> LegPlan:
        if call.sandbox:
            tel = self.settings.telephony
            sandbox = SandboxSettings(tel.sandbox_answer_after_s, tel.sandbox_hold_s)
            return LegPlan(SandboxLeg(sandbox), hold_s=sandbox.hold_s)
        trunk = find_trunk(self.trunks, call.trunk)
        leg = SipLeg(self.ua, self.media, trunk, call.destination)
        return LegPlan(leg, trunk.tone_ms, trunk.gap_ms, trunk.hold_s)

    async def stop(self) -> None:
        if self.dialer is not None:
            await self.dialer.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for registration, task in self.registrations:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if registration.registered.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(registration.unregister(), 5)
        if self.softphone is not None:
            await self.softphone.close()
        await self.ua.close()
        await self.media.stop()
