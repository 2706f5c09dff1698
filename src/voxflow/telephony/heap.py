"""The garbage collector for a process that places calls.

Calls are made of short-lived objects (messages, actions, futures) that die by reference
count, and of objects that wait a while (transactions waiting out Timer M or K, calls on
hold). CPython's cyclic collector walks every object of a generation when it collects it;
the start-up heap (modules, SQLAlchemy's metadata, the settings), some hundred thousand
objects that never die, would be walked by every full collection. So once start-up is done:

- ``gc.freeze()`` moves everything alive to the permanent generation, out of the walks;
- a larger first generation (``YOUNG_THRESHOLD`` allocations instead of 700) lets a call's
  transient objects die before a collection sees them, so fewer are promoted to the older
  generations and full collections come rarer.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("voxflow.telephony.heap")

YOUNG_THRESHOLD = 20_000
OLDER_THRESHOLD = 10  # collections of the generation below before this one is collected


def settle_after_start() -> None:
    """Collect, freeze what is left and widen the youngest generation."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
    log.debug("froze %d objects of the start-up heap", gc.get_freeze_count())
