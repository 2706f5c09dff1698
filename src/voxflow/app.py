"""The composition root: builds the database, the clock, the HTTP app and the telephony."""

from __future__ import annotations

import asyncio
import contextlib
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
            # Status callbacks go out from the process that dials, in a task of their own.
            sender = CallbackSender(db, clock, settings.callbacks)
            sending = asyncio.get_running_loop().create_task(sender.run())
            try:
                yield
            finally:
                await telephony.stop()
                await sender.stop()
                await sending

    return build_app(db, clock, lifespan, limits=settings.limits), db
