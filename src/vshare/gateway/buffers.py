"""Read buffers reused across requests, so a Tread does not allocate and zero a fresh
megabyte each time."""

from __future__ import annotations

import threading


class BufferPool:
    """A bounded free list of equal-sized ``bytearray`` buffers.

    A buffer taken with :meth:`take` belongs to the taker until it gives it back with
    :meth:`give` (after the reply that views it has been sent). A recycled buffer still
    holds the bytes of its last use: callers send only the part they filled in this use.
    """

    def __init__(self, size: int, keep: int) -> None:
        self.size = size
        self._keep = keep
        self._free: list[bytearray] = []
        self._lock = threading.Lock()  # give() may run in a worker thread

    def take(self) -> bytearray:
        with self._lock:
            if self._free:
                return self._free.pop()
        return bytearray(self.size)

    def give(self, buf: object) -> None:
        """Return a buffer; anything not taken from this pool is ignored."""
        if not isinstance(buf, bytearray) or len(buf) != self.size:
            return
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(buf)
