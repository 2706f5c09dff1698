from __future__ import annotations

import gc
import sys

from voxflow.telephony.interpreter import (
    SWITCH_INTERVAL_S,
    YOUNG_THRESHOLD,
    tune_after_start,
)


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_start_up_heap_is_frozen_and_later_cycles_are_still_collected() -> None:
    threshold, interval = gc.get_threshold(), sys.getswitchinterval()
    start_up = Node()
    try:
        tune_after_start()
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
        assert sys.getswitchinterval() == SWITCH_INTERVAL_S
        assert gc.get_freeze_count() > 0
        assert not gc.is_tracked(start_up) or start_up not in gc.get_objects()  # frozen
        del start_up
        later = Node()
        assert later in gc.get_objects()  # a call's objects are in the collected generations
        del later
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        sys.setswitchinterval(interval)
