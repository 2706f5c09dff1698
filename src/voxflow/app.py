"""The composition root: builds the database, the clock and the HTTP app from settings."""

from __future__ import annotations

from starlette.applications import Starlette

from voxflow.api.http import build_app
from voxflow.clock import Clock, SystemClock
from voxflow.config import Settings
from voxflow.store.db import Database


def open_database(settings: Settings, *, migrate: bool = True) -> Database:
    db = Database(settings.database_url)
    if migrate:
        db.upgrade()
    return db


def create_app(settings: Settings, clock: Clock | None = None) -> tuple[Starlette, Database]:
    db = open_database(settings)
    return build_app(db, clock or SystemClock()), db
