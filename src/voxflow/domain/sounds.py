"""Sound file references: ``<sound group>|<sound label>``."""

from __future__ import annotations

from typing import NamedTuple

DEFAULT_SOUND_GROUP = "default"
GROUP_MAX = 64
LABEL_MAX = 255


class SoundRef(NamedTuple):
    group: str
    label: str

    def __str__(self) -> str:
        return f"{self.group}|{self.label}"


def parse_sound_ref(value: str) -> SoundRef | None:
    """``group|label`` or a bare ``label`` (the default group); None when the label is empty."""
    group, sep, label = value.strip().partition("|")
    if not sep:
        group, label = DEFAULT_SOUND_GROUP, group
    group, label = group.strip() or DEFAULT_SOUND_GROUP, label.strip()
    if not label:
        return None
    return SoundRef(group, label)
