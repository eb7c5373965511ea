"""The backend interface: a small, handle-based surface in the shape of 9P2000.L.

A backend serves one *volume* (a POSIX directory, a GlusterFS volume). Shares are
subdirectories of it; :meth:`Backend.open_root` gives the handle of a share's root, and every
other operation is relative to a handle the caller already holds, never to a path string.
That is what confines a request to its share: see the security note in each implementation.

Concurrency contract: every method may block and is called from worker threads, several at
a time, on different or on the same handles. Implementations are thread-safe; a handle is
never used after :meth:`Node.close`.

Errors: every failure is an :class:`OSError` whose ``errno`` the gateway hands to the guest
unchanged. Implementations raise nothing else for conditions the guest can cause.
"""

from __future__ import annotations

import abc
import errno
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, NamedTuple, TypeVar

from vshare.backend._handle import FileSpan
from vshare.terms import CACHE_MODES, CacheMode

__all__ = [
    "CACHE_MODES",
    "TIME_NOW",
    "Attr",
    "Backend",
    "CacheMode",
    "CacheStats",
    "DirEntry",
    "HostDirectory",
    "Listing",
    "Node",
    "OpenFile",
    "StatFs",
    "check_name",
]

#: For :meth:`Backend.setattr`: set this time to the current time of the server.
TIME_NOW: Final = -1

# ``CacheMode``/``CACHE_MODES`` are the shared vocabulary's (:mod:`vshare.terms`), kept
# importable from here. What each mode means to a backend: ``none`` asks the storage every
# time (strict coherence across hosts), ``meta`` caches attributes and name lookups, ``all``
# also file data. Caches are invalidated when the storage says an object changed; a backend
# without such a cache (POSIX: the host's page and dentry caches already do it, coherently)
# treats every mode as ``none``.


def check_name(name: str) -> None:
    """Refuse anything that is not exactly one path component.

    The one definition of a safe name, used by the gateway before any backend sees a name
    and again by each backend (defence in depth).

    Raises:
        OSError(EINVAL): ``name`` is empty, ``.`` or ``..``, or contains ``/`` or NUL.
    """
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise OSError(errno.EINVAL, f"not a single path component: {name!r}")


class Attr(NamedTuple):
    """What :meth:`Backend.getattr` reports; the fields of 9P2000.L's Rgetattr."""

    qid_path: int  # unique across the volume, stable for the file's life
    mode: int  # st_mode, file type bits included
    uid: int
    gid: int
    nlink: int
    rdev: int
    size: int
    blksize: int
    blocks: int  # in 512-byte units
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    btime_ns: int = 0  # 0 when the backend does not know the birth time
    generation: int = 0
    data_version: int = 0


class DirEntry(NamedTuple):
    """One directory entry. ``cookie`` resumes the listing *after* this entry."""

    name: str
    qid_path: int
    file_type: int  # S_IFMT bits (stat.S_IFDIR, ...); 0 when unknown
    cookie: int


_E = TypeVar("_E")


class Listing(NamedTuple, Generic[_E]):
    """Entries of an open directory from a cookie on, and whether they reach its end.

    ``end`` True: the backend saw that no entry follows the last one (the next listing
    from its cookie would be empty); the gateway then tells its client so (Rreaddirplus'
    end) and asks the backend nothing more. False: there may be more; ask again from the
    last cookie. An empty listing is the end."""

    entries: Sequence[_E]
    end: bool


@dataclass(frozen=True, slots=True)
class StatFs:
    """File system statistics, as Rstatfs carries them."""

    fs_type: int
    bsize: int
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    fsid: int
    namelen: int


#: The kinds of entry a backend's cache keeps (:class:`CacheStats`).
CACHE_KINDS: Final = ("attr", "name", "data", "listing")


@dataclass
class CacheStats:
    """What a backend's cache did since it was made (a snapshot): lookups by kind of entry
    (:data:`CACHE_KINDS`) that hit or missed, invalidations by source (``upcall``: the
    storage said another client changed an object; ``local``: this process changed it),
    entries evicted for room or expired, and the bytes charged against the bound."""

    hits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CACHE_KINDS, 0))
    misses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CACHE_KINDS, 0))
    invalidations: dict[str, int] = field(default_factory=dict)  # by source
    evictions: int = 0
    expirations: int = 0
    bytes: int = 0
    limit: int = 0
    entries: int = 0


class Node(abc.ABC):
    """A handle on one file system object (an ``O_PATH`` fd, a ``glfs_object``).

    A node names an inode, not a path: renaming or replacing the path it was found at
    does not change what it refers to.
    """

    __slots__ = ()

    @property
    @abc.abstractmethod
    def qid_path(self) -> int:
        """Unique across the volume and stable for the object's life."""

    @property
    @abc.abstractmethod
    def file_type(self) -> int:
        """The S_IFMT bits of the object, fixed when the node was made."""

    @property
    def is_dir(self) -> bool:
        return self.file_type == stat.S_IFDIR

    @property
    def is_symlink(self) -> bool:
        return self.file_type == stat.S_IFLNK

    @abc.abstractmethod
    def close(self) -> None:
        """Release the handle. Idempotent."""


class OpenFile(abc.ABC):
    """An object opened for I/O (a regular file or a directory). Distinct from its Node."""

    __slots__ = ()

    @abc.abstractmethod
    def close(self) -> None:
        """Release the open file. Idempotent."""


class HostDirectory(NamedTuple):
    """What :meth:`Backend.host_directory` gives a watcher on this host."""

    fd: int  # an O_PATH fd of the directory, the caller's to close
    qid_path: Callable[[int, int], int]  # (st_dev, st_ino) → the backend's qid path


class Backend(abc.ABC):
    """One volume. Names passed in are single path components, already checked by the
    gateway (no ``/``, NUL, ``.``, ``..``, not empty); implementations check them again
    (defence in depth) and fail with EINVAL."""

    #: Whether metadata calls (lookup, getattr, open, create, rename, ...) finish in
    #: microseconds, as on a local disk filesystem whose metadata is cached: the gateway may
    #: then make them on its event loop instead of paying a worker-thread hand-off. False for
    #: anything that can wait on a network (NFS, FUSE, CephFS, GlusterFS).
    cheap_metadata: bool = False
    #: Whether the ``*_nowait`` methods may answer (a backend with a cache of attributes,
    #: names and listings): where metadata is not cheap, the gateway then tries them on its
    #: event loop before it hands a walk, a getattr, an open or a listing to a thread.
    nowait_metadata: bool = False

    @abc.abstractmethod
    def open_root(self, path: str, *, cache: CacheMode = "none") -> Node:
        """The directory at ``path`` (relative to the volume root, ``/``-separated, no
        ``..``), resolved without following any symlink and without leaving the volume.
        ENOENT if it does not exist, ENOTDIR if it is not a directory.

        ``cache`` applies to every request made through this node and the nodes and open
        files that come from it (lookups, creates, clones): see :data:`CacheMode`."""

    @abc.abstractmethod
    def clone(self, node: Node) -> Node:
        """A second, independently closable handle on the same object. Made in memory,
        with no call that may wait: the gateway clones fids on its event loop."""

    @abc.abstractmethod
    def lookup(self, parent: Node, name: str) -> Node:
        """The child ``name`` of directory ``parent``; a symlink is returned as itself."""

    @abc.abstractmethod
    def getattr(self, node: Node) -> Attr: ...

    @abc.abstractmethod
    def setattr(
        self,
        node: Node,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
    ) -> None:
        """Change what is not None. ``mode`` holds permission bits only. A time of
        :data:`TIME_NOW` means the server's current time."""

    @abc.abstractmethod
    def open(self, node: Node, flags: int) -> OpenFile:
        """Open for I/O with ``os.O_*`` flags (O_CREAT and O_EXCL are ignored). Only
        regular files and directories can be opened; a symlink fails with ELOOP and other
        types with EPERM-like errors."""

    @abc.abstractmethod
    def create(self, parent: Node, name: str, flags: int, mode: int) -> tuple[Node, OpenFile]:
        """Create a regular file exclusively (EEXIST if ``name`` exists) and open it."""

    @abc.abstractmethod
    def read(self, file: OpenFile, offset: int, buf: memoryview) -> int:
        """Read into ``buf`` at ``offset``; return the number of bytes read (0 at EOF)."""

    def getattr_at(self, parent: Node, name: str) -> Attr:
        """:meth:`getattr` of :meth:`lookup` of ``name`` in ``parent``, with no node kept.
        This default does just that; a backend with a cheaper way overrides it."""
        node = self.lookup(parent, name)
        try:
            return self.getattr(node)
        finally:
            node.close()

    def lookup_nowait(self, parent: Node, name: str) -> Node | None:
        """:meth:`lookup` from memory, as :meth:`getattr_nowait` (ENOENT too, where memory
        says the name is absent); None otherwise."""
        return None

    def getattr_nowait(self, node: Node) -> Attr | None:
        """:meth:`getattr` if the backend can answer from what it holds in memory (its
        cache), with no call that may wait; None otherwise, having changed nothing. The
        gateway tries it on its event loop where metadata is not cheap
        (:attr:`nowait_metadata`). None always (this default)."""
        return None

    def getattr_at_nowait(self, parent: Node, name: str) -> Attr | None:
        """:meth:`getattr_at` from memory, as :meth:`getattr_nowait` (ENOENT too, where
        memory says the name is absent); None otherwise."""
        return None

    def open_nowait(self, node: Node, flags: int) -> OpenFile | None:
        """:meth:`open` if it needs no call that may wait (a directory whose listing is in
        memory, opened when a listing misses it; a read-only open put off until its first
        read), as :meth:`getattr_nowait`; None otherwise, having done nothing."""
        return None

    def close_is_quick(self, file: OpenFile) -> bool:
        """Whether closing ``file`` cannot wait (an open put off and never made). False
        (this default) where the backend cannot tell."""
        return False

    def readdir_attrs_nowait(
        self, directory: Node, file: OpenFile, cookie: int, max_entries: int
    ) -> Listing[tuple[DirEntry, Attr | None]] | None:
        """:meth:`readdir_attrs` from memory (a cached listing), as :meth:`getattr_nowait`;
        None otherwise."""
        return None

    def unlink_is_quick(self, parent: Node, name: str, *, rmdir: bool) -> bool:
        """Whether :meth:`unlink` of ``name`` would finish in microseconds (an empty
        directory, a small file, another link of a file): the gateway then makes it on
        its event loop. A guess, never a promise: nothing relies on it but the wait. False
        (this default) where the backend cannot tell cheaply."""
        return False

    def read_nowait(self, file: OpenFile, offset: int, buf: memoryview) -> int | None:
        """Like :meth:`read`, but only if it can be answered without waiting for a device or
        a network (the data is cached); None otherwise, having changed nothing that matters
        (``buf`` may hold garbage). The gateway answers such reads on its event loop.
        Backends that cannot tell return None always (this default)."""
        return None

    def span_nowait(
        self, file: OpenFile, offset: int, count: int, least: int = 1
    ) -> FileSpan | None:
        """Up to ``count`` bytes of ``file`` from ``offset`` as a :class:`FileSpan`, to be
        sent with ``sendfile``, if all of them are in the page cache (sending never waits
        for a disk) and the file holds at least ``least`` of them; else None. The gateway
        takes this path for large reads over sockets that can send files. Backends whose
        files are not kernel files return None always (this default)."""
        return None

    @abc.abstractmethod
    def write(self, file: OpenFile, offset: int, data: memoryview) -> int:
        """Write ``data`` at ``offset`` (or at the end if opened with O_APPEND)."""

    @abc.abstractmethod
    def readdir(self, file: OpenFile, cookie: int, max_entries: int) -> Listing[DirEntry]:
        """Up to ``max_entries`` entries of an open directory, starting after ``cookie``
        (0: from the start), and whether they reach its end. ``.`` and ``..`` are
        included. Cookies stay valid while the directory changes."""

    def readdir_attrs(
        self, directory: Node, file: OpenFile, cookie: int, max_entries: int
    ) -> Listing[tuple[DirEntry, Attr | None]]:
        """:meth:`readdir` of ``file`` (an open handle on ``directory``) with each entry's
        attributes, as :meth:`getattr` of a :meth:`lookup` of its name would give them:
        None for ``.`` and ``..``, and for a name gone since it was listed.

        This default looks each name up; a backend with a cheaper way overrides it. The
        names come from the directory itself and are looked up in it like any other
        name, so what can be reached is what :meth:`lookup` allows."""
        out: list[tuple[DirEntry, Attr | None]] = []
        listed = self.readdir(file, cookie, max_entries)
        for entry in listed.entries:
            attr = None
            if entry.name not in (".", ".."):
                try:
                    node = self.lookup(directory, entry.name)
                except OSError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ESTALE):
                        raise
                else:
                    try:
                        attr = self.getattr(node)
                    finally:
                        node.close()
            out.append((entry, attr))
        return Listing(out, listed.end)

    @abc.abstractmethod
    def mkdir(self, parent: Node, name: str, mode: int) -> Node: ...

    @abc.abstractmethod
    def symlink(self, parent: Node, name: str, target: str) -> Node:
        """Create a symlink; ``target`` is stored as data and never resolved."""

    @abc.abstractmethod
    def mknod(self, parent: Node, name: str, mode: int, rdev: int) -> Node:
        """Create a FIFO or socket (``mode`` includes the type bits). Device nodes are
        refused with EPERM."""

    @abc.abstractmethod
    def readlink(self, node: Node) -> str: ...

    @abc.abstractmethod
    def link(self, parent: Node, name: str, target: Node) -> None:
        """Make ``parent/name`` a hard link to ``target`` (not to a directory)."""

    @abc.abstractmethod
    def rename(self, old_parent: Node, old_name: str, new_parent: Node, new_name: str) -> None: ...

    @abc.abstractmethod
    def unlink(self, parent: Node, name: str, *, rmdir: bool) -> None:
        """Remove a non-directory, or with ``rmdir`` an empty directory."""

    @abc.abstractmethod
    def statfs(self, node: Node) -> StatFs: ...

    @abc.abstractmethod
    def getxattr(self, node: Node, name: str) -> bytes: ...

    @abc.abstractmethod
    def listxattr(self, node: Node) -> list[str]: ...

    @abc.abstractmethod
    def setxattr(self, node: Node, name: str, value: bytes, flags: int) -> None:
        """``flags``: 0, ``os.XATTR_CREATE`` or ``os.XATTR_REPLACE``."""

    @abc.abstractmethod
    def removexattr(self, node: Node, name: str) -> None: ...

    @abc.abstractmethod
    def fsync(self, file: OpenFile, *, datasync: bool) -> None: ...

    def fallocate(
        self,
        file: OpenFile,
        offset: int,
        length: int,
        *,
        keep_size: bool = False,
        punch_hole: bool = False,
        zero_range: bool = False,
    ) -> None:
        """fallocate(2) of an open regular file, ``length`` bytes from ``offset``: allocate
        them (the size grows to cover them unless ``keep_size``), punch a hole there
        (``punch_hole``, only with ``keep_size``) or zero them (``zero_range``). EOPNOTSUPP
        where the backend or its filesystem cannot (this default)."""
        raise OSError(errno.EOPNOTSUPP, "fallocate is not supported by this backend")

    # -- change sources (the gateway's change feed, docs/changes-feed.md) ---------------------

    def host_directory(self, node: Node) -> HostDirectory | None:
        """For a volume that is a directory of this host, which this host can watch itself
        (inotify): an fd of directory ``node`` and the qid paths of what is found under it.
        None (this default) for a volume this host cannot watch."""
        return None

    def watch_changes(
        self, root: Node, callback: Callable[[list[int]], None]
    ) -> Callable[[], None] | None:
        """Have ``callback`` told of the objects below directory ``root`` that other clients
        of the volume change (another gateway, a native client; not this backend): their
        qid paths, each an object whose attributes or contents changed or, a directory,
        whose entries did. An object is only reported when the backend knows it to be below
        ``root``: a change of another share's object is never told. Called on any thread;
        it must not block. Returns the function that stops it; None (this default) when
        the volume tells of no change."""
        return None

    def cache_stats(self) -> CacheStats | None:
        """The backend's own cache counters; None if it keeps no cache (this default)."""
        return None

    def backend_calls(self) -> dict[str, int]:
        """Calls made to the storage by this process, by operation, when the backend counts
        them (GlusterFS fops); empty otherwise (this default)."""
        return {}

    @abc.abstractmethod
    def close(self) -> None:
        """Release the volume. Idempotent."""
