"""Identifiers (call ids, request ids) without a system call for the random part of each.

``uuid.uuid4()`` reads 16 bytes from ``os.urandom`` every time, and that call lets go of the
GIL: on a busy server the thread then waits for the GIL to come back, which cost more than
everything else in building a call. Here the random bytes come from the same source, read
4 KiB at a time. A child process after ``fork`` starts with a fresh buffer, so two processes
never hand out the same bytes.
"""

from __future__ import annotations

import os
import threading
import time

_CHUNK = 4096


class _RandomBytes:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._position = 0

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._position + n > len(self._buffer):
                self._buffer = os.urandom(_CHUNK)
                self._position = 0
            start = self._position
            self._position += n
            return self._buffer[start : start + n]

    def forget(self) -> None:
        self._buffer = b""
        self._position = 0
        self._lock = threading.Lock()


_random = _RandomBytes()
os.register_at_fork(after_in_child=_random.forget)


def uuid7() -> str:
    """A time-ordered (version 7, RFC 9562) UUID, in its usual text form: Unix milliseconds,
    then the fraction of the millisecond in 12 bits (RFC 9562 6.2, method 3), then 62 random
    bits. Written straight from its 128 bits, without building a ``uuid.UUID``.

    Call ids are these rather than version 4: ids made one after the other sort together, so
    the unique index on ``calls.call_id`` grows at its end instead of at a random page per
    call (a page written and often read per call: about a tenth of the writer's time).
    """
    millis, fraction = divmod(time.time_ns(), 1_000_000)
    sub = fraction * 4096 // 1_000_000
    random = int.from_bytes(_random.take(8), "big") & _RANDOM_62
    value = (millis & _MILLIS_48) << 80 | 0x7 << 76 | sub << 64 | 0b10 << 62 | random
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_MILLIS_48 = (1 << 48) - 1
_RANDOM_62 = (1 << 62) - 1


def request_id() -> str:
    """16 hex digits naming one HTTP request in the log."""
    return _random.take(8).hex()
