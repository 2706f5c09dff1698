from __future__ import annotations

import pytest

from voxflow.domain.blocking import (
    BlockException,
    BlockRule,
    blocked,
    decision,
    normalise,
    valid_number,
)


def rule(
    number: str,
    operator: str = "STARTSWITH",
    default: str = "BLOCK",
    direction: str = "OUT",
    *exceptions: BlockException,
) -> BlockRule:
    return BlockRule(number, direction, operator, default, tuple(exceptions))


def test_no_rules_blocks_nothing() -> None:
    assert not blocked([], "33123456789")
    assert decision([], "33123456789") is None


def test_prefix_blocks_every_number_under_it() -> None:
    france = [rule("33")]
    assert blocked(france, "33123456789")
    assert blocked(france, "33")
    assert not blocked(france, "44123456789")
    assert not blocked(france, "3")


def test_equals_matches_only_the_whole_number() -> None:
    rules = [rule("33123", "EQUALS")]
    assert blocked(rules, "33123")
    assert not blocked(rules, "331234")
    assert not blocked(rules, "3312")


def test_direction_is_respected() -> None:
    rules = [rule("33", direction="IN")]
    assert not blocked(rules, "33123456789")
    assert blocked(rules, "33123456789", direction="IN")
    assert blocked(rules, "33123456789", direction="in")


def test_star_matches_everything_and_loses_to_anything_specific() -> None:
    rules = [rule("*"), rule("44", default="ALLOW")]
    assert blocked(rules, "33123")
    assert not blocked(rules, "44123")
    assert blocked(rules, "")


def test_longer_prefix_wins_over_shorter() -> None:
    rules = [rule("33", default="BLOCK"), rule("336", default="ALLOW"), rule("3361", "STARTSWITH")]
    assert blocked(rules, "33123")
    assert not blocked(rules, "33623")
    assert blocked(rules, "336123")
    # Rule order does not matter.
    assert not blocked(list(reversed(rules)), "33623")


def test_equals_wins_over_a_longer_prefix() -> None:
    rules = [rule("3361234", "STARTSWITH", "BLOCK"), rule("336123", "EQUALS", "ALLOW")]
    assert not blocked(rules, "336123")
    rules = [rule("33", "STARTSWITH", "ALLOW"), rule("336123", "EQUALS", "BLOCK")]
    assert blocked(rules, "336123")
    assert not blocked(rules, "3361234")


def test_withheld_matches_a_withheld_caller_only() -> None:
    rules = [rule("WITHHELD", "EQUALS", direction="IN"), rule("*", default="ALLOW", direction="IN")]
    assert blocked(rules, "", direction="IN")
    assert blocked(rules, "withheld", direction="IN")
    assert blocked(rules, "anonymous", direction="IN")
    assert not blocked(rules, "33123", direction="IN")


def test_an_exception_flips_the_default_for_its_link_only() -> None:
    rules = [rule("33", "STARTSWITH", "BLOCK", "OUT", BlockException("sales", "ALLOW"))]
    assert not blocked(rules, "33123", link_id="sales")
    assert blocked(rules, "33123", link_id="support")
    assert blocked(rules, "33123")
    allow_all = [rule("44", "STARTSWITH", "ALLOW", "OUT", BlockException("trial", "BLOCK"))]
    assert blocked(allow_all, "44123", link_id="trial")
    assert not blocked(allow_all, "44123", link_id="other")


def test_exceptions_ignore_their_time_template_for_now() -> None:
    exc = BlockException("sales", "ALLOW", time_template="office hours")
    assert not blocked([rule("33", "STARTSWITH", "BLOCK", "OUT", exc)], "33123", link_id="sales")


def test_the_most_specific_rule_decides_even_with_exceptions() -> None:
    rules = [
        rule("33", "STARTSWITH", "BLOCK", "OUT", BlockException("sales", "ALLOW")),
        rule("336", "STARTSWITH", "BLOCK"),
    ]
    assert not blocked(rules, "33123", link_id="sales")
    assert blocked(rules, "33612", link_id="sales")  # the 336 rule has no exception


def test_equally_specific_rules_block() -> None:
    rules = [rule("*", "EQUALS", "ALLOW"), rule("*", "STARTSWITH", "BLOCK")]
    assert blocked(rules, "123")
    assert blocked(list(reversed(rules)), "123")


def test_destination_keypress_tail_and_plus_are_ignored() -> None:
    rules = [rule("449789123123", "EQUALS")]
    assert blocked(rules, "449789123123,,1,,2")
    assert blocked(rules, "+449789123123")
    assert normalise(" +33123,,1") == "33123"


@pytest.mark.parametrize(
    ("number", "ok"),
    [
        ("33", True),
        ("0", True),
        ("*", True),
        ("WITHHELD", True),
        ("", False),
        ("+33", False),
        ("3 3", False),
        ("withheld", False),
        ("٣٣", False),
        ("**", False),
    ],
)
def test_valid_numbers(number: str, ok: bool) -> None:
    assert valid_number(number) is ok
