"""The state and helpers of the GlusterFS backend: the volume it holds, the handles it gave
out, the one place that resolves a name (through the volume's cache), opens and the data
cache's reads. :class:`~vshare.backend.gluster.GlusterBackend` adds the operations."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
import time
import weakref
from collections.abc import Callable
from typing import Final

from vshare.backend import _gfapi
from vshare.backend._cache import BLOCK, CacheStats
from vshare.backend._common import (
    CheckedBackend,
    decode,
    err,
    name_bytes,
    owned,
)
from vshare.backend.base import Attr, DirEntry, Listing, Node, OpenFile
from vshare.backend.gluster import _volumes
from vshare.backend.gluster._fields import attr_of, qid_of_gfid
from vshare.backend.gluster._handles import GlusterNode, GlusterOpenFile, Ref
from vshare.terms import CacheMode

__all__ = ["GlusterCore"]


_CLOSE_WAIT: Final = 60.0
_OPENDIR_RETRY: Final = (0.0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02)
_LOOKUP_RETRY: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02)


#: Listings of at most this many entries are cached whole (modes meta and all).
_LISTING_MAX: Final = 4096
#: Bytes charged per cached listing entry (the DirEntry, its slot and cookie index), and
#: for its attributes (as the cache charges an Attr): estimates, as the cache's own.
_LISTED_ENTRY: Final = 320
_ATTR: Final = 450


class GlusterCore(CheckedBackend[GlusterNode, GlusterOpenFile]):
    """What every operation of :class:`~vshare.backend.gluster.GlusterBackend` stands on:
    the volume, the handles given out, lookups (through the cache), opens, the data
    cache's reads and the cached listings. Abstract: the operations themselves are the
    subclass's."""

    cheap_metadata = False  # every metadata call may wait on the network
    nowait_metadata = True  # but the volume's cache answers getattrs it holds (shares in meta, all)

    def __init__(
        self,
        uri: str,
        *,
        log_file: str | None = None,
        log_level: int = 4,
        cache_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        host, port, volume, subdir = _volumes.parse_uri(uri)
        self._uri = f"gluster://{host}:{port}/{volume}" + (f"/{subdir}" if subdir else "")
        self._vol = _volumes.acquire(host, port, volume, log_file, log_level, cache_bytes)
        self._fs = self._vol.fs
        self._cache = self._vol.cache
        self._handles: weakref.WeakSet[Ref] = weakref.WeakSet()
        self._files: weakref.WeakSet[GlusterOpenFile] = weakref.WeakSet()
        # Regular files this backend unlinked while open: GlusterFS still counts one link
        # (the brick keeps them under .glusterfs/unlink), POSIX says 0.
        self._orphans: set[int] = set()
        self._handles_lock = threading.Lock()
        self._closed = False
        try:
            top = GlusterNode(self, *_gfapi.h_lookupat_root(self._fs))
            self._root = top
            self._root = self._walk(subdir)  # trusted configuration, resolved like a share
            if self._root is not top:
                top.close()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"GlusterBackend({self._uri!r})"

    @property
    def uri(self) -> str:
        return self._uri

    # -- helpers -------------------------------------------------------------------------------

    def _track(self, ptr: int, release: Callable[[int], None]) -> Ref:
        ref = Ref(ptr, release)
        with self._handles_lock:
            if self._closed:
                ref.close()
                raise err(errno.EBADF)
            self._handles.add(ref)
        return ref

    def _node(self, node: Node) -> GlusterNode:
        return owned(self, node, GlusterNode)

    def _parent(self, node: Node) -> GlusterNode:
        """A node that must be a directory: the parent of a name operation (note point 4)."""
        n = self._node(node)
        if n.file_type != stat.S_IFDIR:
            raise err(errno.ENOTDIR)
        return n

    def _file(self, file: OpenFile) -> GlusterOpenFile:
        return owned(self, file, GlusterOpenFile)

    def _adopt(self, made: tuple[int, _gfapi.Stat], cache: CacheMode = "none") -> GlusterNode:
        """A node owning the object ``made`` returned (released here if that fails)."""
        return GlusterNode(self, made[0], made[1], cache)

    def _changed(self, qid: int, *, name: bytes | None = None) -> int:
        """This process changed object ``qid`` (or, with ``name``, that entry of directory
        ``qid``): drop what the cache knows of it. Made whatever the node's cache mode: a
        share's mode can change while it is attached, and GlusterFS sends no upcall to the
        client that made a change. Returns the invalidation's token (see :meth:`_made`)."""
        seq = self._cache.invalidate(qid, "local", names=False)
        if name is not None:
            self._cache.forget_name(qid, name)
        return seq

    def _remember(
        self, token: int, parent: GlusterNode, raw: bytes, node: GlusterNode, st: _gfapi.Stat
    ) -> None:
        """Cache ``parent/raw`` → ``node`` and its attributes ``st``, unless something they
        concern was invalidated after ``token`` (taken before the call that returned them)."""
        qid = node.qid_path
        self._cache.put_attr(token, attr_of(st, qid))
        with contextlib.suppress(OSError), node._ref as held:
            copy = _gfapi.object_copy(held)
            self._put_name(token, parent.qid_path, raw, copy, node.file_type, qid)

    def _put_name(
        self, token: int, parent: int, raw: bytes, obj: int, ftype: int, qid: int | None = None
    ) -> None:
        """Hand ``obj`` (an object of ``parent/raw``, of type ``ftype``; its qid if the
        caller knows it, else read from its handle) to the cache as that name's entry: it
        owns the object from now on, kept or closed."""
        keep = Ref(obj, _gfapi.h_close)
        if qid is None:
            try:
                qid = qid_of_gfid(_gfapi.h_extract_handle(obj))
            except OSError:
                keep.close()
                return
        self._cache.put_name(token, parent, raw, qid, (keep, ftype, qid), keep.close)

    def _note_moved(self, new_dir: GlusterNode, raw: bytes) -> None:
        """While the change feed watches the volume: the object now named ``new_dir/raw``
        is only there (:class:`~._volumes.Ancestry`; no upcall tells this process of its
        own renames). One lookup per rename then; none else."""
        if not self._vol.ancestry.active:
            return
        with contextlib.suppress(OSError):
            with new_dir._ref as pobj:
                obj, _ = _gfapi.h_lookupat(self._fs, pobj, raw, follow=False)
            try:
                qid = qid_of_gfid(_gfapi.h_extract_handle(obj))
            finally:
                _gfapi.h_close(obj)
            self._vol.ancestry.note(new_dir.qid_path, qid, moved=True)

    def _cached_child_qid(self, parent: GlusterNode, raw: bytes) -> int | None:
        """The qid the cache has for ``parent/raw`` (no gfapi call), if any."""
        cached = self._cache.name(parent.qid_path, raw)
        return None if cached is None else int(cached[2])

    def _lookup(self, parent: GlusterNode, raw: bytes) -> GlusterNode:
        """The one place that resolves a name: one component of a directory, not followed.

        With a cache mode, from the volume's cache when it knows the name: a copy of the
        object a lookup of this same name in this same directory found (package note, point
        2), which stays there until that directory or that object changes. A lookup that
        reaches gfapi fills the cache with the name and the child's attributes."""
        node = self._lookup_node(parent, raw)
        self._vol.ancestry.note(parent.qid_path, node.qid_path)  # for the change feed
        return node

    def _lookup_node(self, parent: GlusterNode, raw: bytes) -> GlusterNode:
        mode = parent._cache
        if mode == "none":
            return self._adopt(self._lookup_object(parent, raw))
        held = self._cached_node(parent, raw)
        if held is not None:
            return held
        if self._listed_absent(parent.qid_path, raw):
            raise err(errno.ENOENT)
        token = self._cache.token()
        obj, st = self._lookup_object(parent, raw)
        node = self._adopt((obj, st), mode)
        self._remember(token, parent, raw, node, st)
        return node

    def _remember_listed(
        self,
        token: int,
        directory: GlusterNode,
        out: list[tuple[DirEntry, Attr | None]],
        objects: list[tuple[int, int]],
    ) -> None:
        """Cache the names a listing of ``directory`` found, with their objects (``objects``:
        by index in ``out``; taken from the list: the cache owns them now) and attributes,
        as :meth:`_remember` does for a lookup (``token``: taken before the listing)."""
        while objects:
            i, obj = objects.pop()
            entry, attr = out[i]
            if entry.name in (".", ".."):  # never looked up by name (walks resolve them)
                _gfapi.h_close(obj)
                continue
            if attr is not None:
                self._cache.put_attr(token, attr)
            self._put_name(token, directory.qid_path, name_bytes(entry.name), obj, entry.file_type)

    def _cached_node(self, parent: GlusterNode, raw: bytes) -> GlusterNode | None:
        """A node on ``parent/raw`` from the volume's cache (no network: a copy of the object
        a lookup of this name in this directory found), or None if it does not hold it."""
        cached = self._cache.name(parent.qid_path, raw)
        if cached is None:
            return None
        ref, ftype, _ = cached
        try:
            with ref as obj:
                copy = _gfapi.object_copy(obj)
        except OSError:
            return None  # evicted meanwhile
        st = _gfapi.Stat()
        st.st_mode = ftype
        return GlusterNode(self, copy, st, parent._cache)

    def _lookup_object(self, parent: GlusterNode, raw: bytes) -> tuple[int, _gfapi.Stat]:
        """``glfs_h_lookupat`` of one name, not followed: (object, stat).

        ENOENT is asked again (package note: directories renamed by another client): once at
        once, then while the parent itself cannot be opened, for at most ~40 ms."""
        first: OSError | None = None
        for delay in (None, *_LOOKUP_RETRY):
            try:
                with parent._ref as pobj:
                    return _gfapi.h_lookupat(self._fs, pobj, raw, follow=False)
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ESTALE):
                    raise
                if delay is None:
                    first = e
                    continue  # asked again at once
            if self._reachable(parent):
                break
            time.sleep(delay)
        assert first is not None  # the first round failed, or it returned or raised
        raise first

    def _reachable(self, n: GlusterNode) -> bool:
        """Whether the brick can open directory ``n`` by its gfid right now."""
        try:
            with n._ref as obj:
                fd = _gfapi.h_opendir(self._fs, obj)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ESTALE):
                return False
            raise
        with contextlib.suppress(OSError):
            _gfapi.closedir(fd)
        return True

    def _walk(self, path: str, cache: CacheMode = "none") -> GlusterNode:
        names = [name_bytes(part) for part in path.split("/")] if path else []
        node = self._clone(self._root, cache)
        try:
            for raw in names:
                child = self._lookup(node, raw)
                node.close()
                node = child
                if node.file_type != stat.S_IFDIR:
                    raise err(errno.ENOTDIR)
        except BaseException:
            node.close()
            raise
        return node

    def _clone(self, n: GlusterNode, cache: CacheMode | None = None) -> GlusterNode:
        """A copy of ``n``, in its cache mode unless ``cache`` says another."""
        with n._ref as obj:
            copy = _gfapi.object_copy(obj)
        st = _gfapi.Stat()
        st.st_mode = n.file_type
        return GlusterNode(self, copy, st, n._cache if cache is None else cache)

    def _fetch_attr(self, n: GlusterNode) -> tuple[Attr, bool]:
        """(the attributes from gfapi, whether they are the object's: not those of an open
        file of it after it was unlinked, which the cache must not keep)."""
        try:
            with n._ref as obj:
                st = _gfapi.h_stat(self._fs, obj)
        except OSError as e:
            # Unlinked while open: the object is gone by gfid, an open file still sees it.
            if e.errno not in (errno.ENOENT, errno.ESTALE):
                raise
            file = self._open_file_of(n.qid_path)
            if file is None:
                # Gone (another client removed it before its upcall reached us): what the
                # cache says of it, the name that led here included, is stale now.
                self._cache.invalidate(n.qid_path, "stale")
                raise
            with file._ref as fd:
                return attr_of(_gfapi.fstat(fd), n.qid_path), False
        return attr_of(st, n.qid_path), True

    def _open_deferred(self, qid: int) -> None:
        """Make the ``glfs_fd`` of every deferred open of ``qid`` now (before the file can
        go: a gfid no longer opens once its last name is gone)."""
        with self._handles_lock:
            files = [f for f in self._files if f._qid == qid and f._fd is None]
        for file in files:
            with contextlib.suppress(OSError):
                _ = file._ref

    def _open_file_of(self, qid: int) -> GlusterOpenFile | None:
        """An open file of this backend on the object ``qid``, if there is one."""
        with self._handles_lock:
            files = list(self._files)
        for file in files:
            if file._qid == qid and not file.closed:
                return file
        return None

    def _opendir(self, n: GlusterNode) -> int:
        """``glfs_h_opendir``, retried on ENOENT for a moment: the brick reaches a directory by
        gfid through a handle naming its parent and name, which another client's rename of
        that directory leaves dangling for a few microseconds (the directory is there)."""
        for delay in _OPENDIR_RETRY:
            try:
                with n._ref as obj:
                    return _gfapi.h_opendir(self._fs, obj)
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ESTALE):
                    raise
                time.sleep(delay)
        with n._ref as obj:
            return _gfapi.h_opendir(self._fs, obj)

    def _wrap_deferred(
        self, n: GlusterNode, flags: int, *, is_dir: bool = False
    ) -> GlusterOpenFile:
        """A read-only open made when first needed (a file's first read that the data
        cache does not answer, a directory's listing that misses the cached one)."""
        node = self._clone(n)
        file = GlusterOpenFile(
            self,
            None,
            n.qid_path,
            is_dir=is_dir,
            accmode=os.O_RDONLY,
            cache_data=n._cache == "all" and not is_dir,
            deferred=(node, flags),
            listings=is_dir,
        )
        with self._handles_lock:
            self._files.add(file)
        return file

    def _wrap_fd(
        self, fd: int, node: GlusterNode, *, is_dir: bool, accmode: int
    ) -> GlusterOpenFile:
        cache_data = node._cache == "all" and not is_dir
        file = GlusterOpenFile(
            self,
            fd,
            node.qid_path,
            is_dir=is_dir,
            accmode=accmode,
            cache_data=cache_data,
            listings=is_dir and node._cache != "none",
        )
        with self._handles_lock:
            self._files.add(file)
        return file

    def _from_cache(self, qid: int, offset: int, buf: memoryview) -> tuple[int, bool]:
        """Copy what the cache holds of ``qid`` from ``offset`` on into ``buf``: (bytes
        copied, whether that answers the read: ``buf`` full or the end of file reached)."""
        want = buf.nbytes
        done = 0
        while done < want:
            pos = offset + done
            index, skip = divmod(pos, BLOCK)
            block = self._cache.block(qid, index)
            if block is None:
                return done, False
            n = max(0, min(len(block) - skip, want - done))
            buf[done : done + n] = block[skip : skip + n]
            done += n
            if len(block) < BLOCK and skip + n >= len(block):
                return done, True  # a short block ends the file
        return done, True

    def _pread(self, f: GlusterOpenFile, buf: memoryview, offset: int) -> int:
        """Read ``f`` into ``buf`` from ``offset``. An open put off reads through an
        anonymous fd (one READ at the brick; no OPEN, nor FLUSH and RELEASE at its close)
        while each read reaches the end of the file: a small file read whole (``cat``,
        ``tar c``, a compiler's headers). The first read that stops short has the next one
        open the file, so that a reader going on holds it open, as GlusterFS's open-behind
        does (read-after-open)."""
        node = f.unopened()
        if node is not None:
            try:
                with node._ref as obj:
                    n = _gfapi.h_anonymous_read(self._fs, obj, buf, offset)
            except OSError as e:
                if e.errno != errno.EBADF or f.closed:
                    raise
                # Opened meanwhile (this gateway unlinked it: _open_deferred): read it so.
            else:
                if n == buf.nbytes:
                    f.read_left_more()
                return n
        with f._ref as fd:
            return _gfapi.pread(fd, buf, offset)

    def _read_through(self, f: GlusterOpenFile, offset: int, buf: memoryview) -> int:
        """Read the whole blocks under ``buf`` with one ``glfs_pread``, cache them, copy."""
        start = offset - offset % BLOCK
        end = -(-(offset + buf.nbytes) // BLOCK) * BLOCK
        span = bytearray(end - start)
        token = self._cache.token()
        got = self._pread(f, memoryview(span), start)
        view = memoryview(span)
        for at in range(start, start + got + 1, BLOCK):
            chunk = bytes(view[at - start : min(at - start + BLOCK, got)])
            if at >= start + got and got == len(span):
                break  # every block full: the end of file is not known
            self._cache.put_block(token, f._qid, at // BLOCK, chunk)
        n = max(0, min(got - (offset - start), buf.nbytes))
        buf[:n] = view[offset - start : offset - start + n]
        return n

    def _kind(self, parent: GlusterNode, raw: bytes) -> int | None:
        """The S_IFMT of ``parent/raw``, None if it cannot be looked up."""
        try:
            child = self._lookup(parent, raw)
        except OSError:
            return None
        child.close()
        return child.file_type

    # -- volume --------------------------------------------------------------------------------

    def watch_changes(
        self, root: Node, callback: Callable[[list[int]], None]
    ) -> Callable[[], None] | None:
        # Upcalls name objects by gfid, volume-wide: _volumes.Ancestry tells which are
        # below ``root`` from where this process found them.
        return _volumes.watch(self._vol, self._node(root).qid_path, callback)

    def _listed(
        self, directory: int, cookie: int, max_entries: int
    ) -> Listing[tuple[DirEntry, Attr | None]] | None:
        """The entries after ``cookie`` from the cached listing of ``directory``; None when
        none is cached, or the cookie is none of its entries', or is the last of a head
        (the rest is the brick's to list)."""
        held = self._cache.listing(directory)
        if held is None:
            return None
        (entries, after, _), whole = held
        start = 0 if cookie == 0 else after.get(cookie)
        if start is None or (not whole and start >= len(entries)):
            return None
        out: list[tuple[DirEntry, Attr | None]] = list(entries[start : start + max_entries])
        if self._vol.ancestry.active:  # as _readdirplus notes them (the change feed)
            for entry, _ in out:
                if entry.name not in (".", ".."):
                    self._vol.ancestry.note(directory, entry.qid_path)
        return Listing(out, whole and start + len(out) >= len(entries))

    def _keep_listing(
        self,
        token: int,
        directory: int,
        out: list[tuple[DirEntry, Attr | None]],
        *,
        whole: bool,
    ) -> None:
        """Cache ``out``, read from the start of ``directory`` (token: taken before): all of
        it (``whole``), unless it is longer than :data:`_LISTING_MAX`, or its head. A head
        answers a listing's first batches; the brick lists from its last cookie on, with no
        entry read twice (a directory's open reads one ahead: _backend._list_ahead)."""
        if len(out) > _LISTING_MAX:
            return
        entries = tuple(out)
        after = {entry.cookie: i + 1 for i, (entry, _) in enumerate(entries)}
        names = frozenset(e.name for e, _ in entries)
        children = tuple({e.qid_path for e, _ in entries if e.name not in (".", "..")})
        size = sum(_LISTED_ENTRY + 2 * len(e.name) + (_ATTR if a else 0) for e, a in entries)
        listing = (entries, after, names)
        self._cache.put_listing(token, directory, listing, children, size, whole=whole)

    def _listed_absent(self, directory: int, raw: bytes) -> bool:
        """Whether a whole listing of ``directory`` is cached and names no ``raw``: then a
        lookup of it finds nothing, with no call (``stat`` of a file that is not there,
        a compiler's or Python's search along a path). As coherent as the listing, which
        goes when a name is added to or removed from the directory, here or by another
        client (its upcall names the directory)."""
        held = self._cache.whole_listing(directory)
        return held is not None and decode(raw) not in held[2]

    def cache_stats(self) -> CacheStats:
        """The volume's cache counters (shared by every backend of the volume here)."""
        return self._cache.stats()

    def backend_calls(self) -> dict[str, int]:
        """Calls this process made that reached GlusterFS, by fop (``_gfapi.calls``)."""
        return _gfapi.calls()

    def close(self) -> None:
        """Close every node and open file this backend gave out (later use: EBADF), then
        release the volume's ``glfs`` (finalised when no other backend uses it, unless
        :func:`keep_connections` is on). Idempotent."""
        with self._handles_lock:
            if self._closed:
                return
            self._closed = True
            handles = list(self._handles)
        for ref in handles:
            ref.close()
        # Calls still using a handle release it when they end; finalising the glfs under
        # them would free memory they use, so wait for them (a stuck call leaks the glfs).
        if all(ref.wait_freed(_CLOSE_WAIT) for ref in handles):
            _volumes.release(self._vol)
