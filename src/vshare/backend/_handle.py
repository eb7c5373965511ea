"""A handle that outlives no call using it: the one use count both backends build on."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from types import TracebackType


class UseCounted:
    """A handle (an fd, a gfapi pointer) that is not released while a call uses it:
    ``with ref as handle: ...``.

    ``close()`` marks it closed at once (new uses fail with EBADF) and releases the handle
    when the last use ends, so a handle number is never used after its release (a reused fd
    could belong to another share). A handle dropped without ``close()`` is released by the
    collector: nobody can be using it then. Safe to share between threads; the ``with``
    block keeps no state in the object except the use count.
    """

    __slots__ = ("__weakref__", "_closed", "_handle", "_lock", "_release", "_users")

    def __init__(self, handle: int, release: Callable[[int], None]) -> None:
        self._handle = handle
        self._release = release
        self._users = 0
        self._closed = False
        self._lock = threading.Lock()

    def __enter__(self) -> int:
        with self._lock:
            if self._closed:
                raise OSError(errno.EBADF, os.strerror(errno.EBADF))
            self._users += 1
            return self._handle

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._users -= 1
            if not (self._closed and self._users == 0):
                return
        self._free()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._users:
                return  # the last user releases it
        self._free()

    def _free(self) -> None:
        self._release(self._handle)

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            try:
                self._free()
            except OSError:
                pass


class FileSpan:
    """``count`` bytes of an open file from ``offset``, all in the page cache when made: a
    read's data, sent from the file with ``sendfile`` (no copy into this process; on a Unix
    or TCP socket the kernel hands the pages over without copying them either).

    It holds one use of the file's fd (``fd``) until :meth:`release`: a clunk meanwhile
    closes the file only when the span is sent, so the number is never another file's.
    A span dropped unreleased is released by the collector.
    """

    __slots__ = ("_ref", "count", "fd", "offset")

    def __init__(self, ref: UseCounted, offset: int, count: int) -> None:
        self.fd = ref.__enter__()  # EBADF if the file is closed already
        self._ref: UseCounted | None = ref
        self.offset = offset
        self.count = count

    def __len__(self) -> int:
        return self.count

    def release(self) -> None:
        ref, self._ref = self._ref, None
        if ref is not None:
            ref.__exit__(None, None, None)

    def __del__(self) -> None:
        self.release()
