"""Dial strings: a number followed by an optional keypress tail (``449789123123,,1,,2``).

``,`` is a 2-second pause; a keypress is ``0-9``, ``*``, ``#`` or ``A-D``. Counted from the moment
the leg is answered, a keypress starts at
``PAUSE_S * (commas before it) + (tone + gap) * (keypresses directly before it in its run)``.
The plan keeps the counts, not seconds, so that each trunk can apply its own tone and gap.
"""

from __future__ import annotations

from dataclasses import dataclass

from voxflow.digits import ascii_digits

PAUSE_S = 2.0
DEFAULT_TONE_MS = 200
DEFAULT_GAP_MS = 50
MAX_NUMBER_DIGITS = 20
KEYPRESSES = frozenset("0123456789*#ABCD")


class DialStringError(ValueError):
    """The dial string is not a number with an optional keypress tail."""


@dataclass(frozen=True)
class Keypress:
    key: str
    pauses: int  # commas before this keypress
    run_index: int  # keypresses directly before it in the same run of keypresses

    def offset_s(self, tone_ms: int = DEFAULT_TONE_MS, gap_ms: int = DEFAULT_GAP_MS) -> float:
        """Seconds after answer at which this keypress starts."""
        return self.pauses * PAUSE_S + self.run_index * (tone_ms + gap_ms) / 1000.0

    def to_json(self) -> dict[str, object]:
        return {"key": self.key, "pauses": self.pauses, "run_index": self.run_index}


@dataclass(frozen=True)
class DialString:
    number: str
    keypresses: tuple[Keypress, ...]


def parse_dial_string(value: str) -> DialString:
    value = value.strip()
    number, sep, tail = value.partition(",")
    if not number or not ascii_digits(number):
        raise DialStringError("the number must be digits only")
    if len(number) > MAX_NUMBER_DIGITS:
        raise DialStringError(f"the number has more than {MAX_NUMBER_DIGITS} digits")
    plan: list[Keypress] = []
    pauses = 1 if sep else 0
    run = 0
    for char in tail.upper():
        if char == ",":
            pauses += 1
            run = 0
        elif char in KEYPRESSES:
            plan.append(Keypress(char, pauses, run))
            run += 1
        else:
            raise DialStringError(f"{char!r} is neither a pause nor a keypress")
    return DialString(number, tuple(plan))
