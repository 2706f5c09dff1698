"""The interpreter settings of a process that places calls, applied once start-up is done.

The garbage collector. Calls are made of short-lived objects (messages, actions, futures)
that die by reference count, and of objects that wait a while (transactions waiting out
Timer M or K, calls on hold). CPython's cyclic collector walks every object of a generation
when it collects it; the start-up heap (modules, SQLAlchemy's metadata, the settings), some
hundred thousand objects that never die, would be walked by every full collection. So:

- ``gc.freeze()`` moves everything alive to the permanent generation, out of the walks;
- a larger first generation (``YOUNG_THRESHOLD`` allocations instead of 700) lets a call's
  transient objects die before a collection sees them, so fewer are promoted to the older
  generations and full collections come rarer.

The GIL. The store is written from worker threads (``asyncio.to_thread``) while the event loop
times keypresses and the media clock. A thread that wants the GIL waits for the holder to
let go, at the latest after the switch interval: 5 ms by default, the whole keypress budget.
``SWITCH_INTERVAL_S`` (1 ms) bounds that wait for the event loop.
"""

from __future__ import annotations

import gc
import logging
import sys

log = logging.getLogger("voxflow.telephony.interpreter")

YOUNG_THRESHOLD = 20_000
OLDER_THRESHOLD = 10  # collections of the generation below before this one is collected
SWITCH_INTERVAL_S = 0.001


def tune_after_start() -> None:
    """Collect, freeze what is left, widen the youngest generation, shorten the GIL switch."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    log.debug("froze %d objects of the start-up heap", gc.get_freeze_count())
