"""The composition root: builds the database, the clock, the HTTP app and the telephony."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

from starlette.applications import Starlette

from voxflow.api.http import build_app
from voxflow.clock import Clock, SystemClock
from voxflow.config import Settings
from voxflow.scheduling.callbacks import CallbackSender
from voxflow.store.db import Database
from voxflow.telephony.runtime import Telephony


def open_database(settings: Settings, *, migrate: bool = True) -> Database:
    db = Database(settings.database_url)
    if migrate:
        db.upgrade()
    return db


@contextlib.asynccontextmanager
async def status_callbacks(
    db: Database, clock: Clock, settings: Settings
) -> AsyncIterator[CallbackSender]:
    """The status callback sender, a task of its own in every process that dials."""
    sender = CallbackSender(db, clock, settings.callbacks)
    task = asyncio.get_running_loop().create_task(sender.run())
    try:
        yield sender
    finally:
        await sender.stop()
        await task


def create_app(
    settings: Settings, clock: Clock | None = None, *, dialer: bool = True
) -> tuple[Starlette, Database]:
    """The API, and with ``dialer`` the telephony that places accepted calls, in one process."""
    db = open_database(settings)
    clock = clock or SystemClock()
    lifespan = None
    if dialer:

        @contextlib.asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            async with status_callbacks(db, clock, settings):
                telephony = Telephony(db, clock, settings)
                await telephony.start()
                try:
                    yield
                finally:
                    await telephony.stop()

    return build_app(db, clock, lifespan, limits=settings.limits, start_writer=True), db


async def run_dialer(db: Database, settings: Settings, clock: Clock | None = None) -> None:
    """A dialer alone (``voxflow dialer``) until SIGTERM or SIGINT, then a graceful stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    clock = clock or SystemClock()
    telephony = Telephony(db, clock, settings)
    async with status_callbacks(db, clock, settings):
        try:
            await telephony.start()
            await stop.wait()
        finally:
            await telephony.stop()
