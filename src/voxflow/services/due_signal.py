"""Telling dialers at once that a call was accepted, so none waits for its next look.

:func:`announce` is called by the acceptance path after its transaction committed. Dialers in
this process that :func:`subscribe`\\ d to the same database hear it directly (from whatever
thread announces). On PostgreSQL a call due now is also sent as ``NOTIFY voxflow_due`` so that
dialers in other processes (``LISTEN``, see :mod:`voxflow.scheduling.pg_wakeup`) hear it.
A lost announcement costs only latency: every dialer looks again after a bounded period.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from voxflow.store.db import Database

CHANNEL = "voxflow_due"

log = logging.getLogger("voxflow.due")

Listener = Callable[[datetime], None]

_lock = threading.Lock()
_listeners: weakref.WeakKeyDictionary[Database, list[Listener]] = weakref.WeakKeyDictionary()


def subscribe(db: Database, listener: Listener) -> Callable[[], None]:
    """Call ``listener(due_at)`` for each call accepted through ``db`` in this process.

    The listener runs on the announcing thread and must be quick and thread-safe. Returns the
    function that unsubscribes.
    """
    with _lock:
        _listeners.setdefault(db, []).append(listener)

    def unsubscribe() -> None:
        with _lock:
            listeners = _listeners.get(db, [])
            if listener in listeners:
                listeners.remove(listener)

    return unsubscribe


def announce(db: Database, due_at: datetime, *, due_now: bool) -> None:
    """A call due at ``due_at`` was committed. Never raises: dialers look again anyway."""
    with _lock:
        listeners = list(_listeners.get(db, ()))
    for listener in listeners:
        listener(due_at)
    if due_now and not db.is_sqlite:
        try:
            with db.engine.connect() as conn:
                conn.execute(
                    text("SELECT pg_notify(:channel, :due)"),
                    {"channel": CHANNEL, "due": due_at.isoformat()},
                )
                conn.commit()
        except SQLAlchemyError as exc:
            log.warning("cannot notify dialers of a new call: %s", exc)
