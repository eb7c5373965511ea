"""POSIX byte-range locks held by guests, kept by the gateway.

Locks are keyed by the file (qid path) and owned by ``(session, client_id, proc_id)``, so
two guests — or two processes of one guest — conflict exactly as two processes on one
host would. The gateway does not take fcntl locks on the backend: those would all belong
to the gateway process and never conflict with each other.

Semantics are those of fcntl(F_SETLK): a lock by an owner replaces that owner's locks over
the same range (upgrading, downgrading, splitting); read locks share, a write lock
excludes every other owner. Contended requests answer BLOCKED; the Linux client polls.
All methods run on the event loop thread: no locking needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from vshare.protocol import LOCK_TYPE_RDLCK, LOCK_TYPE_UNLCK, LOCK_TYPE_WRLCK

Owner = tuple[int, str, int]  # (session id, client_id, proc_id)
EOF_END: Final = 1 << 64


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


class LockTable:
    def __init__(self) -> None:
        self._locks: dict[int, list[HeldLock]] = {}

    def conflict(
        self, key: int, owner: Owner, lock_type: int, start: int, length: int
    ) -> HeldLock | None:
        """The first lock of another owner that a lock of this type would collide with."""
        if lock_type == LOCK_TYPE_UNLCK:
            return None
        end = _end(start, length)
        for held in self._locks.get(key, ()):
            if held.owner == owner or held.end <= start or held.start >= end:
                continue
            if LOCK_TYPE_WRLCK in (lock_type, held.type):
                return held
        return None

    def lock(self, key: int, owner: Owner, lock_type: int, start: int, length: int) -> bool:
        """Take, change or release (UNLCK) a lock; False if another owner holds a conflict."""
        if lock_type not in (LOCK_TYPE_RDLCK, LOCK_TYPE_WRLCK, LOCK_TYPE_UNLCK):
            raise ValueError(f"lock type {lock_type}")
        if self.conflict(key, owner, lock_type, start, length) is not None:
            return False
        end = _end(start, length)
        kept: list[HeldLock] = []
        for held in self._locks.get(key, ()):
            if held.owner != owner or held.end <= start or held.start >= end:
                kept.append(held)
                continue
            # The new range replaces this owner's overlap; keep the parts outside it.
            if held.start < start:
                kept.append(HeldLock(owner, held.type, held.start, start))
            if held.end > end:
                kept.append(HeldLock(owner, held.type, end, held.end))
        if lock_type != LOCK_TYPE_UNLCK:
            kept.append(HeldLock(owner, lock_type, start, end))
        if kept:
            self._locks[key] = kept
        else:
            self._locks.pop(key, None)
        return True

    def release_session(self, session: int) -> int:
        """Drop every lock of a session (it ended); returns how many were dropped."""
        dropped = 0
        for key in list(self._locks):
            kept = [h for h in self._locks[key] if h.owner[0] != session]
            dropped += len(self._locks[key]) - len(kept)
            if kept:
                self._locks[key] = kept
            else:
                del self._locks[key]
        return dropped

    def held(self, key: int) -> list[HeldLock]:
        return list(self._locks.get(key, ()))
