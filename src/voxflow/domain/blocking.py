"""Blocked numbers (the Rules interface): does a rule set refuse a call to or from a number?

A rule names a ``number`` (digits, a prefix, ``WITHHELD`` or ``*``), a direction (``IN``/``OUT``),
an ``operator`` (``EQUALS``/``STARTSWITH``) and a ``default_action`` (``BLOCK``/``ALLOW``). Its
exceptions name links whose calls get another action. For one call, the most specific matching
rule decides: an exact match (``EQUALS``, or ``WITHHELD`` for a withheld number) beats a prefix,
a longer prefix beats a shorter one, and ``*`` comes last. Between equally specific rules, the
one that blocks wins.

Exceptions may name a time template; time templates do not take part in the decision yet (an
exception applies at all times), but the field is kept so that stored rules need no migration.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from voxflow.digits import ascii_digits

IN, OUT = "IN", "OUT"
EQUALS, STARTSWITH = "EQUALS", "STARTSWITH"
BLOCK, ALLOW = "BLOCK", "ALLOW"
WITHHELD = "WITHHELD"
ANY = "*"

DIRECTIONS = (IN, OUT)
OPERATORS = (EQUALS, STARTSWITH)
ACTIONS = (BLOCK, ALLOW)


@dataclass(frozen=True)
class BlockException:
    """Calls of ``link_id`` get ``action`` instead of the rule's default."""

    link_id: str
    action: str
    time_template: str = ""


@dataclass(frozen=True)
class BlockRule:
    number: str
    in_or_out: str
    operator: str
    default_action: str
    exceptions: tuple[BlockException, ...] = field(default=())

    def action_for(self, link_id: str | None) -> str:
        if link_id is not None:
            for exc in self.exceptions:
                if exc.link_id == link_id:
                    return exc.action
        return self.default_action


def valid_number(number: str) -> bool:
    """Digits (a number or a prefix), ``WITHHELD`` or ``*``."""
    return number in (WITHHELD, ANY) or ascii_digits(number)


def normalise(number: str) -> str:
    """The dialled digits of a destination: before any keypress tail, without a leading ``+``."""
    head = number.split(",", 1)[0].strip()
    return head.removeprefix("+")


def is_withheld(number: str) -> bool:
    return number == "" or number.upper() in (WITHHELD, "ANONYMOUS")


def specificity(rule: BlockRule, number: str) -> tuple[int, int] | None:
    """How closely ``rule`` matches ``number`` (higher is closer); None when it does not match."""
    if rule.number == ANY:
        return (0, 0)
    if rule.number == WITHHELD:
        return (2, 0) if is_withheld(number) else None
    if rule.operator == EQUALS:
        return (2, len(rule.number)) if number == rule.number else None
    if rule.operator == STARTSWITH and number.startswith(rule.number):
        return (1, len(rule.number))
    return None


def decision(
    rules: Iterable[BlockRule],
    destination: str,
    direction: str = OUT,
    link_id: str | None = None,
) -> str | None:
    """``BLOCK`` or ``ALLOW`` from the most specific matching rule; None when none matches."""
    number = normalise(destination)
    direction = direction.upper()
    best: tuple[int, int, bool] | None = None
    for rule in rules:
        rank = specificity(rule, number) if rule.in_or_out == direction else None
        if rank is None:
            continue
        key = (*rank, rule.action_for(link_id) == BLOCK)
        best = key if best is None else max(best, key)
    if best is None:
        return None
    return BLOCK if best[2] else ALLOW


def blocked(
    rules: Iterable[BlockRule],
    destination: str,
    direction: str = OUT,
    link_id: str | None = None,
) -> bool:
    """Whether a call to (``OUT``) or from (``IN``) ``destination`` on ``link_id`` is refused."""
    return decision(rules, destination, direction, link_id) == BLOCK
