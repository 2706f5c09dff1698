"""Stored blocked-number rules, for :func:`voxflow.domain.blocking.blocked`.

Exceptions are stored as JSON text: ``[{"link_id": .., "action": .., "time_template": ..}]``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import Connection, bindparam, select

from voxflow.domain.blocking import BlockException, BlockRule
from voxflow.store import tables as t
from voxflow.store.raw import RawStatement

_bn = t.blocked_numbers
# Read by every initiateCall: run on the driver (see store.raw).
_RULES_OF_ACCOUNT = RawStatement(
    select(_bn.c.number, _bn.c.in_or_out, _bn.c.operator, _bn.c.default_action, _bn.c.exceptions)
    .where(_bn.c.account_id == bindparam("account_id"))
    .order_by(_bn.c.id)
)


def load_rules(conn: Connection, account_id: int) -> list[BlockRule]:
    """Every blocked-number rule of the account."""
    return [
        BlockRule(number, in_or_out, operator, action, load_exceptions(exceptions))
        for number, in_or_out, operator, action, exceptions in _RULES_OF_ACCOUNT.rows(
            conn, {"account_id": account_id}
        )
    ]


def load_exceptions(raw: str) -> tuple[BlockException, ...]:
    return tuple(
        BlockException(str(e["link_id"]), str(e["action"]), str(e.get("time_template", "")))
        for e in json.loads(raw or "[]")
    )


def dump_exceptions(exceptions: Sequence[BlockException]) -> str:
    return json.dumps(
        [
            {"link_id": e.link_id, "action": e.action, "time_template": e.time_template}
            for e in exceptions
        ]
    )
