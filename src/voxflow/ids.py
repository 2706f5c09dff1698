"""Random identifiers (call ids, request ids) without a system call for each one.

``uuid.uuid4()`` reads 16 bytes from ``os.urandom`` every time, and that call lets go of the
GIL: on a busy server the thread then waits for the GIL to come back, which cost more than
everything else in building a call. Here the random bytes come from the same source, read
4 KiB at a time. A child process after ``fork`` starts with a fresh buffer, so two processes
never hand out the same bytes.
"""

from __future__ import annotations

import os
import threading
import uuid

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


def uuid4() -> uuid.UUID:
    """A random (version 4) UUID, as ``uuid.uuid4()`` makes."""
    return uuid.UUID(bytes=_random.take(16), version=4)


def request_id() -> str:
    """16 hex digits naming one HTTP request in the log."""
    return _random.take(8).hex()
