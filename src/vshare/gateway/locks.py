"""POSIX byte-range locks held by guests, kept by the gateway.

Locks are keyed by the file (qid path) and owned by ``(session, client_id, proc_id)``, so
two guests — or two processes of one guest — conflict exactly as two processes on one
host would. The gateway does not take fcntl locks on the backend: those would all belong
to the gateway process and never conflict with each other.

Semantics are those of fcntl(F_SETLK): a lock by an owner replaces that owner's locks over
the same range (upgrading, downgrading, splitting), and merges with its locks of the same
type that touch it; read locks share, a write lock excludes every other owner. Contended
requests answer BLOCKED; the Linux client polls. All methods run on the event loop
thread: no locking needed.

Cost (the lock count is the peer's to choose, and this runs on the event loop): per file,
each owner's read and write locks are sorted lists of disjoint ranges, and the file keeps
all write locks (disjoint across owners too: a write lock excludes the others) and all read
locks (sorted by start, and their ends sorted apart). Whether a request conflicts is then a
matter of counting, in O(log n): the locks of everyone overlapping the range, against the
requester's own. Taking a lock changes only the ranges of its owner that it touches. The
one search that is not logarithmic is Tgetlock's answer when the conflicting lock is a read
lock that begins before the range: then the owners of the file are looked through.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Final, Protocol

from vshare.protocol import LOCK_TYPE_RDLCK, LOCK_TYPE_UNLCK, LOCK_TYPE_WRLCK

Owner = tuple[int, str, int]  # (session id, client_id, proc_id)
EOF_END: Final = 1 << 64


class Charge(Protocol):
    """A session's lock budget (``vshare.gateway.context.Account``)."""

    def take(self, n: int = 1) -> bool: ...

    def give(self, n: int = 1) -> None: ...


class TooManyLocks(Exception):
    """The owner's session is at its lock budget (ENOLCK)."""


@dataclass(frozen=True, slots=True)
class HeldLock:
    owner: Owner
    type: int
    start: int
    end: int  # exclusive; EOF_END for "to the end of the file"

    @property
    def length(self) -> int:
        return 0 if self.end == EOF_END else self.end - self.start


def _end(start: int, length: int) -> int:
    return EOF_END if length == 0 else start + length


class _Ranges:
    """Disjoint half-open ranges, sorted."""

    __slots__ = ("ends", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def overlapping(self, start: int, end: int) -> tuple[int, int]:
        """Indexes ``[i, j)`` of the ranges that overlap ``[start, end)``."""
        return bisect.bisect_right(self.ends, start), bisect.bisect_left(self.starts, end)

    def touching(self, start: int, end: int) -> tuple[int, int]:
        """Indexes ``[i, j)`` of the ranges that overlap or adjoin ``[start, end)``."""
        return bisect.bisect_left(self.ends, start), bisect.bisect_right(self.starts, end)

    def count(self, start: int, end: int) -> int:
        i, j = self.overlapping(start, end)
        return j - i


@dataclass(slots=True)
class _Owned:
    """One owner's locks on one file."""

    reads: _Ranges
    writes: _Ranges

    def __len__(self) -> int:
        return len(self.reads.starts) + len(self.writes.starts)


class _File:
    """The locks on one file: by owner, and all of them for counting (see the module
    docstring)."""

    __slots__ = ("owners", "r_ends", "r_locks", "w_owners", "writes")

    def __init__(self) -> None:
        self.owners: dict[Owner, _Owned] = {}
        self.writes = _Ranges()  # every owner's write locks: disjoint
        self.w_owners: list[Owner] = []
        self.r_locks: list[tuple[int, int, Owner]] = []  # every read lock, sorted
        self.r_ends: list[int] = []  # their ends, sorted

    def add(self, owner: Owner, write: bool, start: int, end: int) -> None:
        if write:
            i = bisect.bisect_left(self.writes.starts, start)
            self.writes.starts.insert(i, start)
            self.writes.ends.insert(i, end)
            self.w_owners.insert(i, owner)
        else:
            bisect.insort(self.r_locks, (start, end, owner))
            bisect.insort(self.r_ends, end)

    def remove(self, owner: Owner, write: bool, start: int, end: int) -> None:
        if write:
            i = bisect.bisect_left(self.writes.starts, start)
            del self.writes.starts[i], self.writes.ends[i], self.w_owners[i]
        else:
            del self.r_locks[bisect.bisect_left(self.r_locks, (start, end, owner))]
            del self.r_ends[bisect.bisect_left(self.r_ends, end)]

    def conflicts(self, owner: Owner, lock_type: int, start: int, end: int) -> bool:
        """Whether another owner holds a lock that this one collides with: the locks of
        everyone overlapping the range outnumber the owner's own (O(log n))."""
        own = self.owners.get(owner)
        if self.writes.count(start, end) > (own.writes.count(start, end) if own else 0):
            return True
        if lock_type != LOCK_TYPE_WRLCK:
            return False
        reads = bisect.bisect_left(self.r_locks, (end,)) - bisect.bisect_right(self.r_ends, start)
        return reads > (own.reads.count(start, end) if own else 0)

    def witness(self, owner: Owner, lock_type: int, start: int, end: int) -> HeldLock | None:
        """A lock of another owner that this one collides with (None if there is none)."""
        own = self.owners.get(owner) or _Owned(_Ranges(), _Ranges())
        # A write lock: among the disjoint write locks overlapping, the first not ours
        # (binary search on how many of a prefix are ours).
        i, j = self.writes.overlapping(start, end)
        if j - i > own.writes.count(start, end):
            starts = self.writes.starts
            base = bisect.bisect_left(own.writes.starts, starts[i])
            lo, hi = i, j - 1  # the answer m: the first index in [i, j) not ours
            while lo < hi:
                mid = (lo + hi) // 2
                ours = bisect.bisect_right(own.writes.starts, starts[mid]) - base
                if mid + 1 - i > ours:  # one of [i, mid] is not ours
                    hi = mid
                else:
                    lo = mid + 1
            return HeldLock(self.w_owners[lo], LOCK_TYPE_WRLCK, starts[lo], self.writes.ends[lo])
        if lock_type != LOCK_TYPE_WRLCK:
            return None
        # A read lock that begins within the range: likewise among those.
        a0 = bisect.bisect_left(self.r_locks, (start,))
        a1 = bisect.bisect_left(self.r_locks, (end,))
        own_starts = own.reads.starts
        base = bisect.bisect_left(own_starts, start)
        if a1 - a0 > bisect.bisect_left(own_starts, end) - base:
            lo, hi = a0, a1 - 1
            while lo < hi:
                mid = (lo + hi) // 2
                here = self.r_locks[mid]
                k = bisect.bisect_left(own_starts, here[0])  # ours beginning before it...
                if (
                    k < len(own_starts)
                    and own_starts[k] == here[0]
                    and (here[0], own.reads.ends[k], owner) <= here
                ):
                    k += 1  # ...and the one of ours at its start, if it sorts before it
                if mid + 1 - a0 > k - base:
                    hi = mid
                else:
                    lo = mid + 1
            s, e, o = self.r_locks[lo]
            return HeldLock(o, LOCK_TYPE_RDLCK, s, e)
        # A read lock that begins before the range and covers its start.
        for other, owned in self.owners.items():
            if other != owner and owned.reads.count(start, start + 1):
                k = bisect.bisect_right(owned.reads.ends, start)
                return HeldLock(other, LOCK_TYPE_RDLCK, owned.reads.starts[k], owned.reads.ends[k])
        return None


class LockTable:
    def __init__(self) -> None:
        self._files: dict[int, _File] = {}
        self._by_session: dict[int, set[int]] = {}  # session → the files it holds locks on

    def conflict(
        self, key: int, owner: Owner, lock_type: int, start: int, length: int
    ) -> HeldLock | None:
        """A lock of another owner that a lock of this type would collide with."""
        if lock_type == LOCK_TYPE_UNLCK:
            return None
        f = self._files.get(key)
        if f is None:
            return None
        return f.witness(owner, lock_type, start, _end(start, length))

    def lock(
        self,
        key: int,
        owner: Owner,
        lock_type: int,
        start: int,
        length: int,
        charge: Charge | None = None,
    ) -> bool:
        """Take, change or release (UNLCK) a lock; False if another owner holds a conflict.

        Raises:
            ValueError: an unknown lock type.
            TooManyLocks: the change adds locks and ``charge`` refuses them.
        """
        if lock_type not in (LOCK_TYPE_RDLCK, LOCK_TYPE_WRLCK, LOCK_TYPE_UNLCK):
            raise ValueError(f"lock type {lock_type}")
        end = _end(start, length)
        f = self._files.get(key)
        if f is None:
            if lock_type == LOCK_TYPE_UNLCK:
                return True
            f = self._files[key] = _File()
        elif lock_type != LOCK_TYPE_UNLCK and f.conflicts(owner, lock_type, start, end):
            return False
        own = f.owners.get(owner)
        if own is None:
            own = f.owners[owner] = _Owned(_Ranges(), _Ranges())
        # What changes in each of the owner's two lists: the ranges that overlap or adjoin
        # [start, end) and what replaces them.
        plans = []
        delta = 0
        for write, ranges in ((False, own.reads), (True, own.writes)):
            lo, hi = ranges.touching(start, end)
            old = list(zip(ranges.starts[lo:hi], ranges.ends[lo:hi], strict=True))
            new: list[tuple[int, int]] = []
            if lock_type == (LOCK_TYPE_WRLCK if write else LOCK_TYPE_RDLCK):
                merged = (min(start, old[0][0]), max(end, old[-1][1])) if old else (start, end)
                new.append(merged)
            else:
                for a, b in old:
                    if a < start:
                        new.append((a, min(b, start)))
                    if b > end:
                        new.append((max(a, end), b))
            delta += len(new) - len(old)
            plans.append((write, ranges, lo, hi, old, new))
        if delta > 0 and charge is not None and not charge.take(delta):
            if not own:
                del f.owners[owner]
                if not f.owners:
                    del self._files[key]
            raise TooManyLocks
        for write, _, _, _, old, _ in plans:
            for a, b in old:
                f.remove(owner, write, a, b)
        for write, ranges, lo, hi, _, new in plans:
            ranges.starts[lo:hi] = [a for a, _ in new]
            ranges.ends[lo:hi] = [b for _, b in new]
            for a, b in new:
                f.add(owner, write, a, b)
        if delta < 0 and charge is not None:
            charge.give(-delta)
        if not own:
            del f.owners[owner]
            if not f.owners:
                del self._files[key]
        else:
            self._by_session.setdefault(owner[0], set()).add(key)
        return True

    def release_session(self, session: int) -> int:
        """Drop every lock of a session (it ended); returns how many were dropped."""
        dropped = 0
        for key in self._by_session.pop(session, ()):
            f = self._files.get(key)
            if f is None:
                continue
            gone = [o for o in f.owners if o[0] == session]
            for owner in gone:
                dropped += len(f.owners.pop(owner))
            if not f.owners:
                del self._files[key]
                continue
            # Rebuilt in one pass each rather than removed one by one: a session may hold
            # tens of thousands of locks on a file.
            keep = [i for i, o in enumerate(f.w_owners) if o[0] != session]
            f.writes.starts = [f.writes.starts[i] for i in keep]
            f.writes.ends = [f.writes.ends[i] for i in keep]
            f.w_owners = [f.w_owners[i] for i in keep]
            f.r_locks = [t for t in f.r_locks if t[2][0] != session]
            f.r_ends = sorted(t[1] for t in f.r_locks)
        return dropped

    def held(self, key: int) -> list[HeldLock]:
        f = self._files.get(key)
        if f is None:
            return []
        out = []
        for owner, own in f.owners.items():
            for kind, ranges in ((LOCK_TYPE_RDLCK, own.reads), (LOCK_TYPE_WRLCK, own.writes)):
                out += [
                    HeldLock(owner, kind, a, b)
                    for a, b in zip(ranges.starts, ranges.ends, strict=True)
                ]
        return sorted(out, key=lambda h: (h.start, h.end))
