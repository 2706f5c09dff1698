from __future__ import annotations

import pytest

from voxflow.domain.dialstring import DialStringError, Keypress, parse_dial_string


def offsets(value: str) -> list[tuple[str, float]]:
    return [(k.key, round(k.offset_s(), 9)) for k in parse_dial_string(value).keypresses]


def test_number_alone_has_no_keypresses() -> None:
    assert parse_dial_string("449789123123") == parse_dial_string(" 449789123123 ")
    assert parse_dial_string("449789123123").keypresses == ()


@pytest.mark.parametrize(
    ("dial", "expected"),
    [
        ("449789123123,1", [("1", 2.0)]),
        ("449789123123,,1,,2", [("1", 4.0), ("2", 8.0)]),
        ("1000,12", [("1", 2.0), ("2", 2.25)]),
        ("1000,,1,,2", [("1", 4.0), ("2", 8.0)]),
        ("1000,*#,a", [("*", 2.0), ("#", 2.25), ("A", 4.0)]),
        ("1000,123,,4", [("1", 2.0), ("2", 2.25), ("3", 2.5), ("4", 6.0)]),
        ("1000,,,", []),
    ],
)
def test_keypress_schedule(dial: str, expected: list[tuple[str, float]]) -> None:
    assert offsets(dial) == expected


def test_tone_and_gap_are_per_trunk() -> None:
    second = parse_dial_string("1000,12").keypresses[1]
    assert second == Keypress("2", 1, 1)
    assert second.offset_s(tone_ms=100, gap_ms=100) == pytest.approx(2.2)


@pytest.mark.parametrize(
    "dial",
    ["", ",1", "+449789", "0044 1234", "12a4", "1" * 21, "1234,1x", "١٢٣", "1234;1", "1234,,1 2"],
)
def test_invalid_dial_strings(dial: str) -> None:
    with pytest.raises(DialStringError):
        parse_dial_string(dial)


def test_twenty_digits_is_the_longest_number() -> None:
    assert parse_dial_string("1" * 20).number == "1" * 20
