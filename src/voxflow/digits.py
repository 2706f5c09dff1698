"""Reading numbers from text that comes from outside (clients, SIP peers, configuration)."""

from __future__ import annotations


def ascii_digits(text: str) -> bool:
    """Only the ASCII digits 0-9, at least one. ``str.isdigit`` also takes "²" and other
    Unicode digits that ``int`` refuses, which would turn a client's typo into a 500."""
    return text.isascii() and text.isdigit()
