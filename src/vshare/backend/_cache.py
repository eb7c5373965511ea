"""A bounded cache of one volume's attributes, names and file data, invalidated by object.

What a gateway keeps so that a guest's repeated ``stat``, path walk or re-read does not reach
the storage: the backend fills it on a miss and empties an object's entries when that object
changes — when the storage says so (GlusterFS upcalls) or when the backend changed it itself.

Keys are qid paths (unique across the volume). Three kinds of entry:

- **attr**: ``qid → Attr``;
- **name**: ``(parent qid, name) → payload`` (the backend's handle on the child, closed by
  the ``close`` callable given with it when the entry goes), indexed by child too;
- **data**: ``(qid, block) → bytes``, blocks of :data:`BLOCK` bytes; a short block is the end
  of the file (any change to the file drops all its blocks, so that stays true);
- **listing**: ``directory qid → entries`` (the backend's, with their attributes), a whole
  listing from its start to its end (or, kept apart, only its head: the first entries of a
  longer one), indexed by the directory and by every entry's object: a change to any of
  them drops it (a name added or removed changes the directory).

Coherence: ``invalidate(qid)`` drops every entry of ``qid``: its attr, its data, the names
*in* it (when it is a directory) and the names that lead *to* it. A fill must not put back
what an invalidation that happened while the value was being fetched removed, so a fill
carries the :meth:`VolumeCache.token` taken *before* the fetch, and is dropped if any object
it concerns was invalidated after that token (see :meth:`_fresh`). Entries also expire after
``ttl`` seconds, a bound for invalidations that never arrive (a storage that forgets us).

Memory: every entry is charged an estimate of what it holds (Python objects, and for names
the backend's handle); the least recently used entries go when the total passes the bound.
The estimates are checked against ``tracemalloc`` by the tests.

Thread-safe: one lock, held for dictionary operations only (never across a callback that
could block, except the ``close`` of an evicted name's payload, which must not block).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Final, Generic, TypeVar

from vshare.backend.base import Attr, CacheStats

__all__ = ["BLOCK", "CacheStats", "VolumeCache"]

#: Data is cached in blocks of this size, aligned to it.
BLOCK: Final = 128 * 1024
#: Bytes charged per entry on top of its value: the OrderedDict node and slot, the key tuple,
#: the entry object and the per-object index set (~700 measured with tracemalloc: the tests
#: check the charge covers what is allocated).
_OVERHEAD: Final = 760
#: An Attr: a 15-field tuple and its int objects (~420 measured).
_ATTR_SIZE: Final = 450
#: What a name's payload holds outside Python: gfapi's object and the inode it keeps
#: referenced (inode, its dentry and per-translator contexts): an estimate.
_HANDLE_SIZE: Final = 1024
#: Invalidations remembered for in-flight fills (older ones: fills before them are refused).
_RECENT_MAX: Final = 4096

_V = TypeVar("_V")


class _Entry(Generic[_V]):
    __slots__ = ("close", "expires", "qids", "size", "value")

    def __init__(
        self,
        value: _V,
        size: int,
        expires: float,
        qids: tuple[int, ...],
        close: Callable[[], None] | None = None,
    ) -> None:
        self.value = value
        self.size = size
        self.expires = expires
        self.qids = qids  # the objects whose invalidation drops this entry
        self.close = close


class VolumeCache:
    """See the module docstring.

    Args:
        limit: the bound, in bytes, on what entries are charged in total.
        ttl: seconds an entry lives at most.
        clock: for tests.
    """

    def __init__(
        self, limit: int, ttl: float = 50.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 0:
            raise ValueError("the cache bound must be ≥ 0")
        self._limit = limit
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, _Entry[Any]] = OrderedDict()
        self._by_qid: dict[int, set[Hashable]] = {}  # qid → keys of the entries it concerns
        self._bytes = 0
        self._seq = 0  # one step per invalidation
        self._recent: OrderedDict[int, int] = OrderedDict()  # qid → seq of its last one
        self._forgotten = 0  # invalidations up to this seq are no longer in _recent
        self._stats = CacheStats(limit=limit)

    @property
    def limit(self) -> int:
        return self._limit

    # -- reading -------------------------------------------------------------------------------

    def attr(self, qid: int) -> Attr | None:
        value: Attr | None = self._get(("a", qid), "attr")
        return value

    def name(self, parent: int, name: bytes) -> Any:
        """The payload cached for ``parent/name``, or None. The caller must not close it."""
        return self._get(("n", parent, name), "name")

    def block(self, qid: int, index: int) -> bytes | None:
        value: bytes | None = self._get(("d", qid, index), "data")
        return value

    def listing(self, directory: int) -> tuple[Any, bool] | None:
        """The listing cached for ``directory`` and whether it is whole (else the head of
        a longer one: see :meth:`put_listing`), or None. One lookup."""
        with self._lock:
            whole = ("l", directory) in self._entries
            value, expired = self._lookup(("l" if whole else "h", directory), "listing")
        _close(expired)
        return None if value is None else (value, whole)

    def whole_listing(self, directory: int) -> Any:
        """The whole listing cached for ``directory``, or None, which is not counted as a
        miss (asked to learn whether a name is absent, not to list)."""
        with self._lock:
            value, expired = self._lookup(("l", directory), "listing", miss=False)
        _close(expired)
        return value

    def has_listing(self, directory: int, *, head: bool = False) -> bool:
        """Whether a whole listing of ``directory`` is cached now (``head``: the head of
        one); not counted as a lookup."""
        with self._lock:
            return ("h" if head else "l", directory) in self._entries

    def _get(self, key: Hashable, kind: str) -> Any:
        with self._lock:
            value, expired = self._lookup(key, kind)
        _close(expired)
        return value

    def _lookup(
        self, key: Hashable, kind: str, *, miss: bool = True
    ) -> tuple[Any, _Entry[Any] | None]:
        """Under the lock: the value of ``key`` or None (counted as a hit, or as a miss
        unless ``miss`` is False), and the entry it found expired, for the caller to close
        once the lock is released."""
        entry = self._entries.get(key)
        expired: _Entry[Any] | None = None
        if entry is not None and entry.expires <= self._clock():
            expired = self._remove(key)
            self._stats.expirations += 1
            entry = None
        if entry is None:
            if miss:
                self._stats.misses[kind] += 1
            return None, expired
        self._entries.move_to_end(key)
        self._stats.hits[kind] += 1
        return entry.value, None

    # -- filling -------------------------------------------------------------------------------

    def token(self) -> int:
        """Take before fetching a value to put: :meth:`put_attr` etc. need it."""
        with self._lock:
            return self._seq

    def put_attr(self, token: int, attr: Attr) -> bool:
        """Cache ``attr`` (of ``attr.qid_path``); False if it came too late (dropped)."""
        return self._put(token, ("a", attr.qid_path), attr, _ATTR_SIZE, (attr.qid_path,))

    def put_name(
        self,
        token: int,
        parent: int,
        name: bytes,
        child: int,
        payload: Any,
        close: Callable[[], None],
    ) -> bool:
        """Cache ``parent/name`` → ``payload`` (the child ``child``). The cache owns
        ``payload`` from now on and calls ``close`` when the entry goes — at once if it is
        not kept (False)."""
        size = _HANDLE_SIZE + len(name)
        return self._put(token, ("n", parent, name), payload, size, (parent, child), close)

    def put_listing(
        self,
        token: int,
        directory: int,
        listing: Any,
        children: tuple[int, ...],
        size: int,
        *,
        whole: bool = True,
    ) -> bool:
        """Cache ``listing``, all of ``directory`` (``whole`` False: its first entries only),
        entries of the objects ``children``, charged ``size`` bytes (the caller's estimate
        of what it holds)."""
        qids = (directory, *children)
        return self._put(token, ("l" if whole else "h", directory), listing, size, qids)

    def put_block(self, token: int, qid: int, index: int, data: bytes) -> bool:
        """Cache block ``index`` of ``qid``: :data:`BLOCK` bytes, fewer at the end of file."""
        if len(data) > BLOCK:
            raise ValueError("a block holds at most BLOCK bytes")
        return self._put(token, ("d", qid, index), data, 33 + len(data), (qid,))

    def _put(
        self,
        token: int,
        key: Hashable,
        value: Any,
        size: int,
        qids: tuple[int, ...],
        close: Callable[[], None] | None = None,
    ) -> bool:
        size += _OVERHEAD
        dropped: list[_Entry[Any]] = []
        with self._lock:
            keep = size <= self._limit and self._fresh(token, qids)
            if keep:
                old = self._remove(key)
                if old is not None:
                    dropped.append(old)
                entry = _Entry(value, size, self._clock() + self.ttl, qids, close)
                self._entries[key] = entry
                for qid in qids:
                    self._by_qid.setdefault(qid, set()).add(key)
                self._bytes += size
                while self._bytes > self._limit:
                    oldest = next(iter(self._entries))
                    evicted = self._remove(oldest)
                    assert evicted is not None
                    dropped.append(evicted)
                    self._stats.evictions += 1
        for entry_ in dropped:
            _close(entry_)
        if not keep and close is not None:
            close()
        return keep

    def _fresh(self, token: int, qids: tuple[int, ...]) -> bool:
        """Whether no object in ``qids`` was invalidated after ``token`` was taken."""
        if token < self._forgotten:
            return False  # too old to tell: refuse rather than risk a stale value
        return all(self._recent.get(qid, -1) <= token for qid in qids)

    # -- invalidating --------------------------------------------------------------------------

    def invalidate(self, qid: int, source: str, *, names: bool = True) -> int:
        """Drop every entry of object ``qid`` (module docstring: coherence), and refuse
        fills of it whose fetch began before now. ``source`` labels the count. Returns the
        token this invalidation took: :meth:`token` right after it, if no other came between.

        ``names=False`` keeps the names *in* directory ``qid`` (the caller changed one entry
        of it and drops that one with :meth:`forget_name`); fills of them are refused all
        the same until they are fetched again."""
        with self._lock:
            self._seq += 1
            self._recent[qid] = self._seq
            self._recent.move_to_end(qid)
            while len(self._recent) > _RECENT_MAX:
                _, seq = self._recent.popitem(last=False)
                self._forgotten = max(self._forgotten, seq)
            inv = self._stats.invalidations
            inv[source] = inv.get(source, 0) + 1
            keys = list(self._by_qid.get(qid, ()))
            if not names:
                keys = [k for k in keys if not (k[0] == "n" and k[1] == qid)]  # type: ignore[index]
            dropped = [self._remove(key) for key in keys]
            seq = self._seq
        for entry in dropped:
            _close(entry)
        return seq

    def forget_name(self, parent: int, name: bytes) -> None:
        """Drop the entry of ``parent/name`` (after this process changed that name)."""
        with self._lock:
            entry = self._remove(("n", parent, name))
        _close(entry)

    def clear(self) -> None:
        """Drop everything (closing names' payloads)."""
        with self._lock:
            dropped = [self._remove(key) for key in list(self._entries)]
        for entry in dropped:
            _close(entry)

    def _remove(self, key: Hashable) -> _Entry[Any] | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self._bytes -= entry.size
        for qid in entry.qids:
            keys = self._by_qid.get(qid)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_qid[qid]
        return entry

    # -- looking on ----------------------------------------------------------------------------

    def stats(self) -> CacheStats:
        with self._lock:
            s = self._stats
            return CacheStats(
                hits=dict(s.hits),
                misses=dict(s.misses),
                invalidations=dict(s.invalidations),
                evictions=s.evictions,
                expirations=s.expirations,
                bytes=self._bytes,
                limit=self._limit,
                entries=len(self._entries),
            )


def _close(entry: _Entry[Any] | None) -> None:
    if entry is not None and entry.close is not None:
        entry.close()
