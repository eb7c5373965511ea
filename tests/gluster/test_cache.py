"""The gateway's cache of a GlusterFS volume (cache modes meta and all), against a real volume.

"Another client" is GlusterFS's own FUSE client on the same volume (a separate process and
connection), so its changes reach this process only as upcalls from the brick. Each test
works in a fresh directory of the session's volume; the cache is the volume's, shared by every
backend of it in this process, so the tests look at differences of its counters.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.gluster.conftest import Session
from vshare.backend import _gfapi
from vshare.backend.base import Attr, CacheMode, DirEntry, Node, OpenFile
from vshare.backend.gluster import GlusterBackend
from vshare.backend.gluster._backend import _LIST_AHEAD_MAX
from vshare.testing import glusterd as gd

#: The goal for another client's change to be seen here.
BOUND = 1.0


@pytest.fixture(scope="module")
def other(gluster_session: Session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The volume mounted by GlusterFS's native client: another client."""
    with gd.fuse_mount(gluster_session.volume, tmp_path_factory.mktemp("native") / "m") as m:
        yield m


@pytest.fixture
def backend(gluster_session: Session) -> Iterator[GlusterBackend]:
    b = GlusterBackend(gluster_session.uri)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def area(gluster_session: Session, other: Path) -> tuple[str, Path]:
    """A fresh directory: (its path in the volume, its path through the other client)."""
    rel = gluster_session.fresh_root("cache")
    return rel, other / rel


def _calls_during(fn: Callable[[], object]) -> dict[str, int]:
    before = _gfapi.calls()
    fn()
    after = _gfapi.calls()
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def _stat_path(b: GlusterBackend, root: Node, name: str) -> int:
    node = b.lookup(root, name)
    try:
        return b.getattr(node).size
    finally:
        node.close()


def _read_all(b: GlusterBackend, root: Node, name: str) -> bytes:
    node = b.lookup(root, name)
    try:
        f = b.open(node, os.O_RDONLY)
        try:
            buf = bytearray(1 << 20)
            n = b.read(f, 0, memoryview(buf))
            return bytes(buf[:n])
        finally:
            f.close()
    finally:
        node.close()


def _until(predicate: Callable[[], bool], limit: float = 10.0) -> float:
    """Seconds until ``predicate()`` held (fails after ``limit``)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > limit:
            pytest.fail(f"not seen after {limit} s")
        time.sleep(0.001)
    return time.monotonic() - start


@pytest.mark.parametrize("mode", ["meta", "all"])
def test_repeats_are_answered_without_gfapi(
    backend: GlusterBackend, area: tuple[str, Path], mode: CacheMode
) -> None:
    rel, there = area
    (there / "f").write_bytes(b"x" * 100)
    root = backend.open_root(rel, cache=mode)
    try:
        assert _stat_path(backend, root, "f") == 100  # fills the cache
        # The native client's write above is told by an upcall that may come after the
        # fill and drop the entry (seen once in CI): let it come, then fill again.
        time.sleep(0.3)
        assert _stat_path(backend, root, "f") == 100
        before = backend.cache_stats()
        assert before is not None
        calls = _calls_during(lambda: [_stat_path(backend, root, "f") for _ in range(50)])
        assert "lookup" not in calls and "stat" not in calls, calls
        after = backend.cache_stats()
        assert after is not None
        assert after.hits["name"] - before.hits["name"] == 50
        assert after.hits["attr"] - before.hits["attr"] == 50
    finally:
        root.close()


def test_none_asks_gfapi_every_time(backend: GlusterBackend, area: tuple[str, Path]) -> None:
    rel, there = area
    (there / "f").write_bytes(b"x")
    root = backend.open_root(rel, cache="none")
    try:
        _stat_path(backend, root, "f")
        calls = _calls_during(lambda: [_stat_path(backend, root, "f") for _ in range(20)])
        assert calls.get("lookup") == 20 and calls.get("stat") == 20, calls
    finally:
        root.close()


@pytest.mark.parametrize("mode", ["none", "meta", "all"])
def test_another_clients_change_is_seen_within_the_bound(
    backend: GlusterBackend, area: tuple[str, Path], mode: CacheMode
) -> None:
    """Size, removal and replacement by another client: seen within a second, with the
    cache on (through upcalls) and off (gfapi's own md-cache is kept from answering)."""
    rel, there = area
    (there / "f").write_bytes(b"a" * 10)
    (there / "gone").write_bytes(b"g")
    root = backend.open_root(rel, cache=mode)
    try:
        _stat_path(backend, root, "f")
        _stat_path(backend, root, "gone")
        before = backend.cache_stats()
        assert before is not None
        (there / "f").write_bytes(b"b" * 20)
        lag = [_until(lambda: _stat_path(backend, root, "f") == 20)]
        (there / "gone").unlink()

        def gone() -> bool:
            try:
                _stat_path(backend, root, "gone")
            except FileNotFoundError:
                return True
            except OSError as e:
                # A name cached before the upcall came leads to an object that is gone:
                # ESTALE, and the cache drops it, so the next lookup says ENOENT.
                if e.errno != errno.ESTALE:
                    raise
            return False

        lag.append(_until(gone))
        (there / "new").write_bytes(b"n" * 7)
        os.replace(there / "new", there / "f")
        lag.append(_until(lambda: _stat_path(backend, root, "f") == 7))
        assert max(lag) <= BOUND, lag
        after = backend.cache_stats()
        assert after is not None
        if mode != "none":
            assert after.invalidations.get("upcall", 0) > before.invalidations.get("upcall", 0)
    finally:
        root.close()


def test_all_caches_data_and_sees_another_clients_write(
    backend: GlusterBackend, area: tuple[str, Path]
) -> None:
    rel, there = area
    (there / "f").write_bytes(b"1" * 300_000)  # three blocks, the last one short
    root = backend.open_root(rel, cache="all")
    try:
        assert _read_all(backend, root, "f") == b"1" * 300_000
        calls = _calls_during(lambda: _read_all(backend, root, "f"))
        assert "read" not in calls, calls
        with open(there / "f", "r+b") as fh:
            fh.seek(200_000)
            fh.write(b"2" * 10)
        want = b"1" * 200_000 + b"2" * 10 + b"1" * 99_990
        assert _until(lambda: _read_all(backend, root, "f") == want) <= BOUND
    finally:
        root.close()


@pytest.mark.parametrize("mode", ["meta", "all"])
def test_this_gateways_own_changes_are_seen_at_once(
    backend: GlusterBackend, area: tuple[str, Path], mode: CacheMode
) -> None:
    """GlusterFS sends no upcall to the client that made a change: the backend drops what
    it changed itself, so nothing here waits."""
    rel, _ = area
    root = backend.open_root(rel, cache=mode)
    try:
        node, f = backend.create(root, "f", os.O_RDWR, 0o644)
        backend.write(f, 0, memoryview(b"abc"))
        assert backend.getattr(node).size == 3
        assert _read_all(backend, root, "f") == b"abc"
        backend.write(f, 1, memoryview(b"ZZ"))
        assert _read_all(backend, root, "f") == b"aZZ"
        assert _stat_path(backend, root, "f") == 3
        backend.setattr(node, size=1, mode=0o600)
        attr = backend.getattr(node)
        assert (attr.size, attr.mode & 0o777) == (1, 0o600)
        assert _read_all(backend, root, "f") == b"a"
        f.close()
        backend.rename(root, "f", root, "g")
        with pytest.raises(FileNotFoundError):
            backend.lookup(root, "f")
        assert _stat_path(backend, root, "g") == 1
        other_node, other_f = backend.create(root, "h", os.O_RDWR, 0o644)
        backend.write(other_f, 0, memoryview(b"hhhh"))
        other_f.close()
        backend.rename(root, "h", root, "g")  # replaces g
        assert _read_all(backend, root, "g") == b"hhhh"
        with pytest.raises(OSError) as gone:  # the replaced file: not its cached attributes
            backend.getattr(node)
        assert gone.value.errno in (errno.ENOENT, errno.ESTALE)
        backend.unlink(root, "g", rmdir=False)
        with pytest.raises(OSError) as e:
            backend.lookup(root, "g")
        assert e.value.errno == errno.ENOENT
        d = backend.mkdir(root, "d", 0o755)
        assert backend.lookup(root, "d").is_dir
        backend.unlink(root, "d", rmdir=True)
        with pytest.raises(FileNotFoundError):
            backend.lookup(root, "d")
        for n in (node, other_node, d):
            n.close()
    finally:
        root.close()


def test_a_mode_change_is_coherent_with_old_attachments(
    backend: GlusterBackend, area: tuple[str, Path]
) -> None:
    """A share attached as none and again as meta: changes made through the none attachment
    are seen at once by the meta one (local changes invalidate whatever the node's mode)."""
    rel, there = area
    (there / "f").write_bytes(b"x")
    strict = backend.open_root(rel, cache="none")
    cached = backend.open_root(rel, cache="meta")
    try:
        assert _stat_path(backend, cached, "f") == 1
        node = backend.lookup(strict, "f")
        backend.setattr(node, size=5)
        node.close()
        assert _stat_path(backend, cached, "f") == 5
    finally:
        strict.close()
        cached.close()


def test_open_root_refuses_an_unknown_mode(backend: GlusterBackend) -> None:
    with pytest.raises(OSError) as e:
        backend.open_root("", cache="most")  # type: ignore[arg-type]
    assert e.value.errno == errno.EINVAL


def test_all_defers_read_only_opens(backend: GlusterBackend, area: tuple[str, Path]) -> None:
    """A read-only open in mode all makes no OPEN (nor FLUSH at close) when the data cache
    answers every read; the file stays readable after its unlink, as POSIX says."""
    rel, there = area
    (there / "f").write_bytes(b"q" * 5000)
    root = backend.open_root(rel, cache="all")
    try:
        assert _read_all(backend, root, "f") == b"q" * 5000
        calls = _calls_during(lambda: [_read_all(backend, root, "f") for _ in range(10)])
        assert not {"open", "flush", "read", "lookup", "stat"} & set(calls), calls
        node = backend.lookup(root, "f")
        f = backend.open(node, os.O_RDONLY)
        backend.unlink(root, "f", rmdir=False)
        buf = bytearray(10)
        assert backend.read(f, 4990, memoryview(buf)) == 10 and bytes(buf) == b"q" * 10
        f.close()
        node.close()
    finally:
        root.close()


@pytest.mark.parametrize("mode", ["meta", "all"])
def test_reads_without_opening_while_reads_reach_the_end(
    backend: GlusterBackend, area: tuple[str, Path], mode: CacheMode
) -> None:
    """In modes meta and all a read-only open is put off, as GlusterFS's own client's
    open-behind does by default: no OPEN (nor FLUSH at close) for an open never read, or
    whose reads each reach the end of the file (one READ through an anonymous fd: a small
    file read whole; in all, the read that fills the data cache); the first read that
    stops short opens it, for the reads that follow. A file unlinked through this backend
    meanwhile stays readable, as POSIX says."""
    rel, there = area
    (there / "f").write_bytes(b"m" * 5000)
    root = backend.open_root(rel, cache=mode)
    node = backend.lookup(root, "f")
    try:
        calls = _calls_during(lambda: backend.open(node, os.O_RDONLY).close())
        assert not {"open", "flush", "read"} & set(calls), calls

        def whole() -> bytes:
            f = backend.open(node, os.O_RDONLY)
            try:
                buf = bytearray(8192)
                return bytes(buf[: backend.read(f, 0, memoryview(buf))])
            finally:
                f.close()

        data: list[bytes] = []
        calls = _calls_during(lambda: data.append(whole()))
        assert data == [b"m" * 5000] and calls == {"read": 1}, calls
        buf = bytearray(10)
        if mode == "meta":  # (in all, the data cache answers these)
            f = backend.open(node, os.O_RDONLY)
            calls = _calls_during(lambda: backend.read(f, 0, memoryview(buf)))
            assert calls == {"read": 1}, calls
            calls = _calls_during(lambda: backend.read(f, 10, memoryview(buf)))
            assert calls == {"open": 1, "read": 1}, calls
            f.close()
        f = backend.open(node, os.O_RDONLY)
        backend.unlink(root, "f", rmdir=False)
        assert backend.read(f, 4990, memoryview(buf)) == 10 and bytes(buf) == b"m" * 10
        f.close()
    finally:
        node.close()
        root.close()


@pytest.mark.parametrize("mode", ["meta", "all"])
def test_getattrs_from_memory_answer_only_what_the_cache_holds(
    backend: GlusterBackend, area: tuple[str, Path], mode: CacheMode
) -> None:
    """``getattr_nowait`` / ``getattr_at_nowait`` / ``lookup_nowait`` (what the gateway
    answers on its event loop): the cache's attributes and nodes, with no call to
    GlusterFS; None for what it does not hold, and None again once this gateway changed
    the file."""
    rel, there = area
    (there / "f").write_bytes(b"x" * 100)
    root = backend.open_root(rel, cache=mode)
    try:
        assert backend.getattr_at_nowait(root, "f") is None  # never looked up here
        assert backend.lookup_nowait(root, "f") is None
        assert _stat_path(backend, root, "f") == 100  # fills the cache
        time.sleep(0.3)  # the native write's upcall may come after the fill: fill again
        assert _stat_path(backend, root, "f") == 100
        node = backend.lookup(root, "f")
        try:
            asked = backend.getattr(node)
            got: list[object] = []
            calls = _calls_during(
                lambda: got.extend(
                    [
                        backend.getattr_at_nowait(root, "f"),
                        backend.getattr_nowait(node),
                        backend.lookup_nowait(root, "f"),
                    ]
                )
            )
            assert calls == {}, calls
            assert got[:2] == [asked, asked]
            held = got[2]
            assert isinstance(held, Node) and held.qid_path == node.qid_path
            held.close()
            backend.setattr(node, mode=0o600)  # this gateway's change: dropped at once
            assert backend.getattr_nowait(node) is None
            assert backend.getattr_at_nowait(root, "f") is None
            assert backend.lookup_nowait(root, "f") is None
            assert backend.getattr(node).mode & 0o7777 == 0o600
        finally:
            node.close()
    finally:
        root.close()


def test_getattrs_from_memory_in_none_never_answer(
    backend: GlusterBackend, area: tuple[str, Path]
) -> None:
    rel, there = area
    (there / "f").write_bytes(b"x")
    root = backend.open_root(rel, cache="none")
    try:
        for _ in range(2):
            assert _stat_path(backend, root, "f") == 1
        node = backend.lookup(root, "f")
        try:
            assert backend.getattr_nowait(node) is None
        finally:
            node.close()
        assert backend.getattr_at_nowait(root, "f") is None
        assert backend.lookup_nowait(root, "f") is None
    finally:
        root.close()


@pytest.mark.parametrize("mode", ["meta", "all"])
def test_a_file_made_here_is_known_without_a_lookup(
    backend: GlusterBackend, area: tuple[str, Path], mode: CacheMode
) -> None:
    """The create's own answer fills the cache: the next lookup and getattr of the new name
    reach no brick, and say what another client sees."""
    rel, there = area
    root = backend.open_root(rel, cache=mode)
    try:
        # An upcall of any object coming in the microseconds between the create and its
        # parent's invalidation keeps the create out of the cache (the fill cannot tell it
        # is not about the new file): a few tries, of which nearly all fill.
        filled = []
        for i in range(3):
            name = f"new{i}"
            node, f = backend.create(root, name, os.O_RDWR, 0o640)
            f.close()
            node.close()
            got: list[object] = []
            calls = _calls_during(
                lambda n=name, out=got: out.append(backend.getattr_at_nowait(root, n))
            )
            assert calls == {}, calls
            if got[0] is not None:
                filled.append(name)
                st = os.stat(there / name)
                attr = backend.getattr_at(root, name)
                assert got[0] == attr
                assert (attr.mode, attr.size, attr.nlink) == (st.st_mode, 0, 1)
        assert filled, "no create was entered in the cache"
    finally:
        root.close()


@pytest.mark.parametrize("mode", ["meta", "all"])
def test_unlink_takes_the_type_from_the_cache(
    backend: GlusterBackend, area: tuple[str, Path], mode: CacheMode
) -> None:
    """An unlink or rmdir of a name the cache holds checks the type there: the right errno,
    no lookup; the entry goes from the volume."""
    rel, there = area
    (there / "f").write_bytes(b"x")
    (there / "d").mkdir()
    root = backend.open_root(rel, cache=mode)
    try:
        for name in ("f", "d"):
            _stat_path(backend, root, name)  # fills the cache
        time.sleep(0.3)  # the native client's upcalls may drop them: fill again
        for name in ("f", "d"):
            _stat_path(backend, root, name)
        for name, rmdir, code in (("f", True, errno.ENOTDIR), ("d", False, errno.EISDIR)):
            with pytest.raises(OSError) as refused:
                backend.unlink(root, name, rmdir=rmdir)
            assert refused.value.errno == code
        calls = _calls_during(
            lambda: [backend.unlink(root, "f", rmdir=False), backend.unlink(root, "d", rmdir=True)]
        )
        assert "lookup" not in calls and calls.get("unlink") == 2, calls
        brick = backend.open_root(rel, cache="none")  # asks the brick, as another client
        try:
            for name in ("f", "d"):
                with pytest.raises(OSError) as gone:
                    backend.lookup(brick, name)
                assert gone.value.errno == errno.ENOENT
        finally:
            brick.close()
    finally:
        root.close()


def _listed(b: GlusterBackend, directory: Node, batch: int = 1000) -> dict[str, Attr | None]:
    """A whole listing through ``readdir_attrs``, ``batch`` entries at a time: name → attr
    (each name once)."""
    f = b.open(directory, os.O_RDONLY)
    try:
        out: dict[str, Attr | None] = {}
        cookie = 0
        while entries := b.readdir_attrs(directory, f, cookie, batch).entries:
            for entry, attr in entries:
                assert entry.name not in out, f"{entry.name} listed twice"
                out[entry.name] = attr
            cookie = entries[-1][0].cookie
        return out
    finally:
        f.close()


@pytest.mark.parametrize("mode", ["meta", "all"])
def test_a_name_a_whole_listing_lacks_is_absent_without_a_call(
    backend: GlusterBackend, area: tuple[str, Path], mode: CacheMode
) -> None:
    """A lookup of a name that a cached whole listing of its directory does not have finds
    nothing, with no call to GlusterFS (a ``stat`` of a missing file, a search along a
    path); on the event loop too. Another client adding the name drops the listing (its
    upcall names the directory): the name is found within the bound."""
    rel, there = area
    for i in range(5):
        (there / f"f{i}").write_bytes(b"x")
    root = backend.open_root(rel, cache=mode)

    def absent() -> bool:
        try:
            backend.lookup(root, "later").close()
        except FileNotFoundError:
            return True
        return False

    try:
        backend.open(root, os.O_RDONLY | os.O_DIRECTORY).close()  # lists it ahead
        calls = _calls_during(lambda: [absent() for _ in range(3)])
        assert calls == {}, calls
        with pytest.raises(FileNotFoundError):
            backend.lookup_nowait(root, "later")
        with pytest.raises(FileNotFoundError):
            backend.getattr_at_nowait(root, "later")
        (there / "later").write_bytes(b"n")  # GlusterFS's own client: another client
        assert _until(lambda: not absent()) <= BOUND
        node = backend.lookup(root, "later")
        assert backend.getattr(node).size == 1
        node.close()
    finally:
        root.close()


@pytest.mark.parametrize("mode", ["meta", "all"])
def test_a_listing_is_kept_whole_and_dropped_on_any_change(
    backend: GlusterBackend, area: tuple[str, Path], mode: CacheMode
) -> None:
    """A directory listed again is answered from the cache (entries and attributes, in
    batches by its cookies as gfapi's), and its names are cached as lookups' are; a change
    made here shows in the next listing at once, another client's within the bound."""
    rel, there = area
    for name in ("a", "b", "c"):
        (there / name).write_bytes(name.encode())
    root = backend.open_root(rel, cache=mode)
    try:
        first = _listed(backend, root)
        time.sleep(0.3)  # the native writes' upcalls may come after the fill: fill again
        first = _listed(backend, root)
        assert sorted(first) == [".", "..", "a", "b", "c"]
        before = backend.cache_stats()
        for batch in (1000, 2, 1):
            again = _listed(backend, root, batch)
            assert again == first
        after = backend.cache_stats()
        assert after.hits["listing"] - before.hits["listing"] >= 3
        # The listing brought each name's object: a stat or a walk of a name never looked
        # up here reaches no brick.
        got: list[object] = []
        calls = _calls_during(
            lambda: got.extend(
                [backend.getattr_at_nowait(root, "c"), backend.lookup_nowait(root, "c")]
            )
        )
        assert calls == {} and got[0] == first["c"] and first["c"] is not None
        held = got[1]
        assert isinstance(held, Node) and held.qid_path == first["c"].qid_path
        held.close()
        # This gateway's changes: a new name, a child's new mode.
        node, f = backend.create(root, "d", os.O_RDWR, 0o600)
        f.close()
        node.close()
        node = backend.lookup(root, "a")
        try:
            backend.setattr(node, mode=0o640)
        finally:
            node.close()
        now = _listed(backend, root)
        assert sorted(now) == [".", "..", "a", "b", "c", "d"]
        a = now["a"]
        assert a is not None and a.mode & 0o7777 == 0o640
        # Another client's: a name added and one removed.
        _listed(backend, root)  # cached again
        (there / "e").write_bytes(b"e")
        (there / "b").unlink()
        _until(lambda: sorted(_listed(backend, root)) == [".", "..", "a", "c", "d", "e"], BOUND)
    finally:
        root.close()


def test_none_keeps_no_listing(backend: GlusterBackend, area: tuple[str, Path]) -> None:
    rel, there = area
    (there / "a").write_bytes(b"a")
    root = backend.open_root(rel, cache="none")
    try:
        before = backend.cache_stats()
        for _ in range(3):
            assert sorted(_listed(backend, root)) == [".", "..", "a"]
        after = backend.cache_stats()
        assert after.hits["listing"] == before.hits["listing"]
    finally:
        root.close()


@pytest.mark.parametrize("mode", ["none", "meta", "all"])
def test_a_directory_is_listed_by_its_open(
    backend: GlusterBackend, area: tuple[str, Path], mode: CacheMode
) -> None:
    """In ``meta`` and ``all`` the open of a directory whose listing is not cached reads it
    (GlusterFS's readdir-ahead, in the open's own call), caches it and closes the directory
    again: its listing (with attributes or without) and its close then reach no brick, and
    wait for nothing. A longer directory stays open, its first entries cached as the head
    of its listing, and lists whole. In ``none`` an open only opens."""
    rel, there = area
    (there / "small").mkdir()
    (there / "small" / "a").write_bytes(b"a")
    (there / "large").mkdir()
    many = {f"f{i:04}" for i in range(_LIST_AHEAD_MAX + 1)}
    root = backend.open_root(rel, cache=mode)
    try:
        large = backend.lookup(root, "large")
        try:
            for name in many:
                node, made = backend.create(large, name, os.O_RDWR, 0o600)
                made.close()
                node.close()
        finally:
            large.close()
        for name, names in (("small", {"a"}), ("large", many)):
            d = backend.lookup(root, name)
            try:
                caching = mode != "none"
                _open_and_list(backend, d, names, whole=caching and name == "small")
                if caching and name == "large":  # the head's answer, before any brick's
                    f = backend.open(d, os.O_RDONLY)
                    try:
                        head = backend.readdir_attrs_nowait(d, f, 0, 10_000)
                        assert head is not None and not head.end
                        assert len(head.entries) == _LIST_AHEAD_MAX
                    finally:
                        f.close()
            finally:
                d.close()
    finally:
        root.close()


def _open_and_list(backend: GlusterBackend, d: Node, names: set[str], *, whole: bool) -> None:
    """Open ``d``: one OPENDIR; its listing ``names`` from memory at once if ``whole``; its
    listing, read whole with attributes and without, sends no other OPENDIR; its close is
    quick if ``whole``."""
    opened: list[OpenFile] = []
    calls = _calls_during(lambda: opened.append(backend.open(d, os.O_RDONLY)))
    f = opened[0]
    try:
        assert calls.get("opendir") == 1, calls
        assert backend.close_is_quick(f) == whole
        held = backend.readdir_attrs_nowait(d, f, 0, 1000)
        if whole:
            assert held is not None
            assert held.end
            assert {e.name for e, _ in held.entries} - {".", ".."} == names
            assert all(a is not None for e, a in held.entries if e.name not in (".", ".."))
        got: set[str] = set()
        plain: set[str] = set()

        def list_all() -> None:
            cookie = 0
            while entries := backend.readdir_attrs(d, f, cookie, 200).entries:
                got.update(e.name for e, _ in entries)
                cookie = entries[-1][0].cookie
            cookie = 0
            while more := backend.readdir(f, cookie, 200).entries:
                plain.update(e.name for e in more)
                cookie = more[-1].cookie

        calls = _calls_during(list_all)
        assert got - {".", ".."} == names
        assert plain == got
        assert "opendir" not in calls, calls  # the open's own fd, or none needed
    finally:
        f.close()


@pytest.mark.parametrize("mode", ["meta", "all"])
def test_a_directory_whose_listing_is_cached_opens_when_a_listing_misses(
    backend: GlusterBackend, area: tuple[str, Path], mode: CacheMode
) -> None:
    """With its listing cached, a directory's open sends no OPENDIR; a listing that then
    misses (a name added meanwhile) opens it and reads it from the brick."""
    rel, there = area
    (there / "a").write_bytes(b"a")
    root = backend.open_root(rel, cache=mode)
    try:
        _listed(backend, root)
        time.sleep(0.3)  # the native write's upcall may come after the fill: fill again
        _listed(backend, root)
        listed: list[dict[str, Attr | None]] = []
        calls = _calls_during(lambda: listed.append(_listed(backend, root)))
        assert "opendir" not in calls, calls
        assert sorted(listed[0]) == [".", "..", "a"]
        f = backend.open(root, os.O_RDONLY)  # deferred
        try:
            node, made = backend.create(root, "b", os.O_RDWR, 0o600)  # drops the listing
            made.close()
            node.close()
            got: list[list[tuple[DirEntry, Attr | None]]] = []
            calls = _calls_during(
                lambda: got.append(list(backend.readdir_attrs(root, f, 0, 100).entries))
            )
            assert calls.get("opendir") == 1, calls
            assert sorted(e.name for e, _ in got[0]) == [".", "..", "a", "b"]
        finally:
            f.close()
    finally:
        root.close()
