"""Share quotas: how many bytes a share holds, kept by the gateway.

Usage is the sum of the apparent sizes (``st_size``) of the share's regular files: what a
guest can predict from its own writes, and what ``df`` in the guest shows as used.

How it stays right:

- When a share is first attached after the gateway starts, a scan walks the whole share
  (in a worker thread, through the backend's confined handles) and sets the usage. The
  attach that triggers it waits for it, so no write is judged against an unknown usage.
  This is what makes a restart safe: nothing is persisted that could go stale.
- After that, the gateway's own operations move the figure: writes past the end of a file,
  truncation (setattr size), and unlinking the last link of a file — or, if a fid of any
  session still holds the file (an open file, or only a walked one: its handle keeps the
  inode and its blocks), the last such fid's clunk. The gateway counts the fids holding
  each regular file (:meth:`ShareUsage.hold`/:meth:`ShareUsage.let_go`); an unlinked file
  still held is an *orphan*, whose bytes stay counted (and grow with writes to it) until
  then. A scan, which cannot see orphans, adds them.
- Changes made behind the gateway's back (another gateway of a fleet writing the same
  share, an operator on the host) are picked up by a new scan: :meth:`ShareUsage.stale`
  says when the last one is older than ``rescan_after`` seconds, and the next attach
  re-scans.

Enforcement: a write, or a truncation that grows a file, that would take usage beyond the
share's size fails with EDQUOT before anything is written. Growth is reserved under a lock
before the backend call, so concurrent writers cannot overshoot together.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from vshare.backend.base import Backend, Node
from vshare.backend.tree import apparent_size


class ShareUsage:
    """The bytes used in one share, and the reservations of writes in progress."""

    def __init__(self, rescan_after: float = 600.0) -> None:
        self.used = 0
        self.scanned_at: float | None = None
        self.rescan_after = rescan_after
        self._lock = threading.Lock()
        self._scan_lock = threading.Lock()
        #: Fids of any session holding each regular file (by qid path).
        self._holders: dict[int, int] = {}
        #: Unlinked files still held: qid path → the bytes still counted for it.
        self._orphans: dict[int, int] = {}

    def stale(self) -> bool:
        return self.scanned_at is None or time.monotonic() - self.scanned_at > self.rescan_after

    def scan(self, backend: Backend, root: Node) -> int:
        """Walk the share and set the usage (blocking: call from a worker thread)."""
        with self._scan_lock:
            if not self.stale():
                return self.used  # another attach scanned meanwhile
            total = apparent_size(backend, root)
            with self._lock:
                self.used = total + sum(self._orphans.values())
                self.scanned_at = time.monotonic()
            return total

    @contextmanager
    def growing(self, limit: int | None, growth: int, qid_path: int = -1) -> Iterator[None]:
        """Reserve ``growth`` bytes for an operation on file ``qid_path``, or fail with
        EDQUOT if that would pass ``limit``. The reservation stands if the operation
        succeeds and is undone if it raises. Negative growth (truncation) is applied as is."""
        with self._lock:
            if growth > 0 and limit is not None and self.used + growth > limit:
                raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
            self._move(growth, qid_path)
        try:
            yield
        except BaseException:
            with self._lock:
                self._move(-growth, qid_path)
            raise

    def adjust(self, delta: int, qid_path: int = -1) -> None:
        with self._lock:
            self._move(delta, qid_path)

    def _move(self, delta: int, qid_path: int) -> None:
        self.used = max(0, self.used + delta)
        if qid_path in self._orphans:
            self._orphans[qid_path] = max(0, self._orphans[qid_path] + delta)

    # --- files held, and unlinked while held ----------------------------------------------

    def hold(self, qid_path: int) -> None:
        """A fid holds the regular file ``qid_path`` (of this share)."""
        with self._lock:
            self._holders[qid_path] = self._holders.get(qid_path, 0) + 1

    def let_go(self, qid_path: int) -> None:
        """A fid no longer holds it: the last of an unlinked file gives its bytes back."""
        with self._lock:
            left = self._holders.get(qid_path, 0) - 1
            if left > 0:
                self._holders[qid_path] = left
                return
            self._holders.pop(qid_path, None)
            self.used = max(0, self.used - self._orphans.pop(qid_path, 0))

    def unlinked(self, qid_path: int, size: int) -> None:
        """The last link of file ``qid_path`` (``size`` bytes) is gone: its bytes go back
        now, or when the last fid holding it lets go."""
        with self._lock:
            if qid_path in self._holders:
                self._orphans[qid_path] = self._orphans.get(qid_path, 0) + size
            else:
                self.used = max(0, self.used - size)

    @property
    def orphaned(self) -> int:
        """Bytes counted for unlinked files still held."""
        return sum(self._orphans.values())
