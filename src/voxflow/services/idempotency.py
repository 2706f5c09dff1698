"""``Idempotency-Key``: a repeat of the same request within 24 hours gets the first answer.

The key's row is written in the same transaction as the call it answers for, so a key is
recorded exactly when its call is. Two requests racing with one key serialise on the row's
primary key: the loser's insert fails, its transaction (and call) roll back, and it returns
the winner's stored answer instead.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, select

from voxflow.errors import ApiError
from voxflow.store import tables as t
from voxflow.store.raw import RawStatement

TTL = timedelta(hours=24)
KEY_MAX = 255
KEY_REUSED = "Idempotency-Key already used with a different request"
KEY_INVALID = "Idempotency-Key Invalid"


_ik = t.idempotency_keys
_KEY = (_ik.c.account_id == bindparam("account_id")) & (_ik.c.key == bindparam("key"))
# On initiateCall's path: run on the driver (store.raw).
_LOOKUP = RawStatement(
    select(_ik.c.request_hash, _ik.c.status, _ik.c.body, _ik.c.created_at).where(_KEY)
)
_INSERT = RawStatement(_ik.insert())
_DELETE = _ik.delete().where(_KEY)


@dataclass(frozen=True)
class StoredAnswer:
    status: int
    tree: dict[str, str]


def request_hash(scope: str, body: bytes) -> str:
    return hashlib.sha256(scope.encode() + b"\0" + body).hexdigest()


def check_key(key: str) -> str:
    key = key.strip()
    if not key or len(key) > KEY_MAX or not key.isprintable():
        raise ApiError(KEY_INVALID)
    return key


def lookup(
    conn: Connection, account_id: int, key: str, digest: str, now: datetime
) -> StoredAnswer | None:
    """The stored answer for this key, None when the key is new (or expired and now removed)."""
    row = _LOOKUP.first(conn, {"account_id": account_id, "key": key})
    if row is None:
        return None
    request_hash, status, body, created_at = row
    if created_at < now - TTL:
        conn.execute(_DELETE, {"account_id": account_id, "key": key})
        return None
    if request_hash != digest:
        raise ApiError(KEY_REUSED, status=409)
    return StoredAnswer(status, json.loads(bytes(body)))


def remember(
    conn: Connection,
    *,
    account_id: int,
    key: str,
    digest: str,
    answer: StoredAnswer,
    now: datetime,
) -> None:
    _INSERT.insert(
        conn,
        {
            "account_id": account_id,
            "key": key,
            "request_hash": digest,
            "status": answer.status,
            "body": json.dumps(answer.tree).encode(),
            "created_at": now,
        },
    )
