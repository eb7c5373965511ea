"""VolumeCache: the bound holds (checked against tracemalloc), invalidation drops what it
must, and a fill racing an invalidation is refused."""

from __future__ import annotations

import gc
import threading
import tracemalloc

import pytest

from vshare.backend._cache import BLOCK, VolumeCache
from vshare.backend.base import Attr


def _attr(qid: int, size: int = 0) -> Attr:
    # Distinct values per entry, as real attributes are (no shared small-int objects).
    base = 1_700_000_000_000_000_000 + qid
    return Attr(qid, 0o100644, 1000 + qid, 1000 + qid, 1, 0, size + qid * 7919, 4096,
                qid % 977, base, base + 1, base + 2)  # fmt: skip


class _Payload:
    """Stands for a backend handle: records its close."""

    closed = 0

    def close(self) -> None:
        _Payload.closed += 1


def test_attr_hit_miss_and_invalidate() -> None:
    cache = VolumeCache(1 << 20)
    assert cache.attr(7) is None
    assert cache.put_attr(cache.token(), _attr(7))
    assert cache.attr(7) == _attr(7)
    cache.invalidate(7, "upcall")
    assert cache.attr(7) is None
    stats = cache.stats()
    assert stats.hits["attr"] == 1 and stats.misses["attr"] == 2
    assert stats.invalidations == {"upcall": 1}
    assert stats.bytes == 0 and stats.entries == 0


def test_invalidating_a_directory_drops_names_in_it_and_to_it() -> None:
    cache = VolumeCache(1 << 20)
    closes: list[str] = []
    t = cache.token()
    cache.put_name(t, 1, b"a", 10, "A", lambda: closes.append("a"))
    cache.put_name(t, 1, b"b", 11, "B", lambda: closes.append("b"))
    cache.put_name(t, 2, b"c", 10, "C", lambda: closes.append("c"))  # a hard link to 10
    cache.invalidate(10, "upcall")  # the object: both names leading to it go
    assert cache.name(1, b"a") is None and cache.name(2, b"c") is None
    assert cache.name(1, b"b") == "B"
    assert sorted(closes) == ["a", "c"]
    cache.invalidate(1, "local", names=False)  # the directory's attributes only
    assert cache.name(1, b"b") == "B"
    cache.invalidate(1, "upcall")  # the directory changed: its names go
    assert cache.name(1, b"b") is None
    assert sorted(closes) == ["a", "b", "c"]


def test_a_fill_that_began_before_an_invalidation_is_refused() -> None:
    cache = VolumeCache(1 << 20)
    token = cache.token()  # a lookup starts...
    cache.invalidate(5, "upcall")  # ...the object changes meanwhile...
    assert not cache.put_attr(token, _attr(5))  # ...so what it fetched is not kept
    assert cache.attr(5) is None
    closed: list[int] = []
    assert not cache.put_name(token, 5, b"x", 6, "X", lambda: closed.append(1))
    assert closed == [1]  # a refused payload is closed at once
    assert cache.put_attr(cache.token(), _attr(5))  # a fetch after it is kept
    assert cache.put_attr(token, _attr(9))  # other objects are not affected


def test_forgotten_invalidations_refuse_old_fills() -> None:
    cache = VolumeCache(1 << 20)
    token = cache.token()
    for qid in range(10_000):  # more than the cache remembers
        cache.invalidate(qid + 100, "upcall")
    assert not cache.put_attr(token, _attr(1))  # cannot tell any more: refused


def test_entries_expire() -> None:
    now = [0.0]
    cache = VolumeCache(1 << 20, ttl=5.0, clock=lambda: now[0])
    cache.put_attr(cache.token(), _attr(3))
    now[0] = 4.9
    assert cache.attr(3) is not None
    now[0] = 5.0
    assert cache.attr(3) is None
    assert cache.stats().expirations == 1


def test_data_blocks() -> None:
    cache = VolumeCache(1 << 22)
    t = cache.token()
    assert cache.put_block(t, 4, 0, b"x" * BLOCK)
    assert cache.put_block(t, 4, 1, b"tail")
    assert cache.block(4, 1) == b"tail"
    with pytest.raises(ValueError):
        cache.put_block(t, 4, 2, b"x" * (BLOCK + 1))
    cache.invalidate(4, "local")
    assert cache.block(4, 0) is None and cache.block(4, 1) is None


def test_lru_eviction_keeps_recent_entries() -> None:
    cache = VolumeCache(64 * 1024)
    t = cache.token()
    for qid in range(1000):
        cache.put_attr(t, _attr(qid))
        cache.attr(0)  # keep touching the first one
    stats = cache.stats()
    assert stats.bytes <= 64 * 1024
    assert stats.evictions > 0
    assert cache.attr(0) is not None  # recently used: kept
    assert cache.attr(1) is None  # old: evicted
    assert cache.attr(999) is not None


def test_an_entry_larger_than_the_bound_is_not_kept() -> None:
    cache = VolumeCache(1000)
    assert not cache.put_block(cache.token(), 1, 0, b"x" * 2000)
    assert cache.stats().bytes == 0


@pytest.mark.parametrize("kind", ["attr", "name", "data", "mixed"])
def test_memory_bound_holds(kind: str) -> None:
    """Fill far past a 2 MiB bound: what the cache is charged stays under it, and what
    Python really allocated for it (tracemalloc) is no more than it was charged."""
    limit = 2 * 1024 * 1024
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cache = VolumeCache(limit)
        t = cache.token()
        for i in range(40_000):
            which = kind if kind != "mixed" else ("attr", "name", "data")[i % 3]
            if which == "attr":
                cache.put_attr(t, _attr(i))
            elif which == "name":
                payload = _Payload()
                cache.put_name(t, i // 100, f"file-{i}".encode(), i, payload, payload.close)
            else:
                cache.put_block(t, i, 0, bytes(range(256)) * (1 + i % 16))
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    stats = cache.stats()
    assert stats.bytes <= limit
    assert stats.evictions > 0
    # The Python side of the charge; for names the charge also covers the backend's handle,
    # which lives outside Python (its _HANDLE_SIZE is not allocated here).
    assert used <= limit * 1.05, f"{used} bytes allocated for a {limit}-byte bound"


def test_threads_filling_and_invalidating() -> None:
    cache = VolumeCache(256 * 1024)
    stop = threading.Event()
    errors: list[BaseException] = []

    def fill() -> None:
        try:
            while not stop.is_set():
                for q in range(200):
                    cache.put_attr(cache.token(), _attr(q))
                    cache.attr(q)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def invalidate() -> None:
        try:
            while not stop.is_set():
                for q in range(200):
                    cache.invalidate(q, "upcall")
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=f) for f in (fill, fill, invalidate)]
    for th in threads:
        th.start()
    stop.wait(0.5)
    stop.set()
    for th in threads:
        th.join()
    assert not errors
    stats = cache.stats()
    assert stats.bytes <= 256 * 1024
    assert stats.entries == sum(1 for q in range(200) if cache.attr(q) is not None)
