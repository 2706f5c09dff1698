"""``LISTEN voxflow_due`` on PostgreSQL: wake a dialer when another process accepts a call.

One dedicated autocommit connection per dialer. When it breaks, the listener wakes the dialer
(a notification may have been lost), waits a little and listens again; the dialer's bounded
re-check period covers the gap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

import psycopg
from sqlalchemy.engine import make_url

from voxflow.services.due_signal import CHANNEL

log = logging.getLogger("voxflow.dialer")

RETRY_S = 2.0


def libpq_url(sqlalchemy_url: str) -> str:
    """The libpq form of a ``postgresql+psycopg://`` URL."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def listen(url: str, wake: Callable[[datetime | None], None]) -> None:
    """Call ``wake(due_at)`` for each notification until cancelled."""
    conninfo = libpq_url(url)
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
            async with conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                wake(None)  # anything announced before LISTEN took effect is looked at now
                async for notify in conn.notifies():
                    try:
                        due: datetime | None = datetime.fromisoformat(notify.payload)
                    except ValueError:
                        due = None
                    wake(due)
        except (psycopg.Error, OSError) as exc:
            log.warning("LISTEN %s failed, again in %.0f s: %s", CHANNEL, RETRY_S, exc)
            wake(None)
            await asyncio.sleep(RETRY_S)
