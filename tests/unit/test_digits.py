from __future__ import annotations

import pytest

from voxflow.digits import ascii_digits


@pytest.mark.parametrize("text", ["0", "7", "0123456789", "00012"])
def test_ascii_digits(text: str) -> None:
    assert ascii_digits(text)
    int(text)  # and int() reads it


@pytest.mark.parametrize("text", ["", " 1", "1 ", "-1", "+1", "1.5", "\u00b2", "\u0663", "1\u00b9"])
def test_not_ascii_digits(text: str) -> None:
    assert not ascii_digits(text)
