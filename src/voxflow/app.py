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
from voxflow.store.db import Database
from voxflow.telephony.runtime import Telephony


def open_database(settings: Settings, *, migrate: bool = True) -> Database:
    db = Database(settings.database_url)
    if migrate:
        db.upgrade()
    return db


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
            telephony = Telephony(db, clock, settings)
            await telephony.start()
            try:
                yield
            finally:
                await telephony.stop()

    return build_app(db, clock, lifespan), db


async def run_dialer(db: Database, settings: Settings, clock: Clock | None = None) -> None:
    """A dialer alone (``voxflow dialer``) until SIGTERM or SIGINT, then a graceful stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    telephony = Telephony(db, clock or SystemClock(), settings)
    try:
        await telephony.start()
        await stop.wait()
    finally:
        await telephony.stop()
