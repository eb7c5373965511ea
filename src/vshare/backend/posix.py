"""The POSIX backend: a volume is a directory of a local or kernel-mounted file system.

Security argument — why no request can leave its share
======================================================

This is the one place where it is stated; the code below enforces it.

1. **A handle is an inode, never a path.** Every :class:`PosixNode` refers to one
   ``O_PATH | O_NOFOLLOW | O_CLOEXEC`` file descriptor, that of its inode, shared by every
   node on that inode (see Inodes below). Nothing here turns a node back into a path
   relative to the volume, and nothing compares path strings (no prefix checks).
2. **Nodes come only from nodes.** There are four ways to get one:

   - :meth:`PosixBackend.open_root` walks the share path *one component at a time* from the
     volume root fd (itself ``O_PATH | O_DIRECTORY``), each step exactly like ``lookup`` plus
     ``O_DIRECTORY``. The path must be relative and hold no ``.``, ``..`` or empty component.
   - :meth:`~PosixBackend.lookup` resolves *one checked name* in a directory node:
     ``openat2(parent_fd, name, O_PATH|O_NOFOLLOW|O_CLOEXEC,
     RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS)``. Where the kernel has no
     openat2 (before 5.6; probed once), ``openat(parent_fd, name, O_PATH|O_NOFOLLOW|O_CLOEXEC)``,
     which for a single component that is not ``..`` can only name an entry of ``parent``.
   - ``create``/``mkdir``/``symlink``/``mknod`` make the entry with ``*at(parent_fd, name)``;
     ``create`` then derives the node from the new fd through ``/proc/self/fd/N`` (no second
     lookup by name, so nothing can be swapped in between); the others look the new name up
     as in ``lookup`` (whatever they find there is still an entry of ``parent``).
   - :meth:`~PosixBackend.clone` takes one more reference on the node's inode.

   Each of these fds is then entered in the inode map, or closed when the map holds the
   same inode already: the node gets the fd that the map holds, which was itself made in
   one of these ways. Sharing it changes nothing of the argument: an fd is used as the
   directory of a lookup only if it is a directory, which has one name (an fd found
   through another mount, a bind mount inside the volume, is another entry: the key holds
   the mount id), and every other use goes through the inode alone (``/proc/self/fd/N``,
   ``AT_EMPTY_PATH``), whichever of its names was looked up first.
3. **Names are checked again here** (``base.check_name``): not empty, no ``/``, no NUL, not
   ``.`` or ``..`` → EINVAL. Every operation that takes a name (lookup, create, mkdir, symlink,
   mknod, link, rename, unlink) acts on that one entry of a directory the caller already holds.
4. **Symlinks are data.** ``O_NOFOLLOW``/``RESOLVE_NO_SYMLINKS`` return a symlink as itself;
   :meth:`~PosixBackend.open` refuses it (ELOOP); a symlink node used as a parent is not a
   directory fd (ENOTDIR); ``readlink`` returns the target string only.
5. **Path-taking syscalls go through the node's own fd.** Reopening for I/O, chmod, truncate,
   xattrs and the source of ``link`` use ``/proc/self/fd/N``: the kernel resolves that magic
   link to exactly the object the fd holds, without looking any name up again; for an fd on
   a symlink it yields the symlink itself, not its target (chmod → EOPNOTSUPP, open → ELOOP;
   the conformance suite checks that the target is untouched). Reopening is done only for
   regular files and directories (virtiofsd's ``is_safe_inode``); FIFOs, sockets and device
   nodes found on the volume are refused with EPERM (a FIFO would block a worker thread).
   Owner and times use ``fchownat``/``utimensat`` with ``AT_EMPTY_PATH|AT_SYMLINK_NOFOLLOW``.
6. **An fd number is never used after its close.** Each fd sits in a ``UseCounted``
   (``_handle.py``) that counts the calls using it; ``close()`` marks it closed (later calls
   fail with EBADF) and the real ``close(2)`` waits until the last such call is done. A
   node's ``close()`` marks that node closed (its later calls fail with EBADF even while
   other nodes hold the inode) and, with the inode's last node, closes the inode's fd so.
   Without this, a use-after-close bug above us could reach ``/proc/self/fd/N`` with N
   reused by a node of another share.
7. **Nodes must come from this backend**: a node of another ``PosixBackend`` (another
   volume) is refused with TypeError, so a gateway bug cannot link or rename across volumes.

Not covered, by design (the host, not a guest, does these): a directory moved out of the
share by the host is still reachable through nodes that already refer to it (a node follows
its inode); a hard link the host planted in the share to a file outside is the same file, and
reading it reads that file (the backend cannot create such a link: ``link`` takes a node);
mount points inside the volume are crossed (no ``RESOLVE_NO_XDEV``): the operator made them.

Other rules
===========

- **qid paths**: ``qid_path = index << 56 | (ino & (2**56 - 1))`` where ``index`` (8 bits)
  names the pair ``(st_dev, ino >> 56)``. The volume root's device with ``ino < 2**56`` is
  index 0, so on a single-device volume ``qid_path == st_ino`` — stable across gateway
  restarts and across gateways on different hosts. Other pairs (mounts inside the volume,
  inode numbers >= 2**56) get indexes 1..254 in discovery order (first choice derived from a
  hash of the pair), which is stable for the life of the backend only. Past 254 such pairs,
  index 255 holds a 56-bit hash of ``(dev, ino)``: unique only with high probability.
  Directory entries use the same rule with ``d_ino`` and the directory's ``st_dev``; for a
  mount point inside the volume ``d_ino`` is the *covered* inode, so its entry's qid differs
  from the qid ``lookup`` gives (the same is true of ``..`` at the root of a mount, and ``..``
  of a share root names a directory outside the share: the gateway substitutes what it shows).
- **Opening**: ``O_ACCMODE``, ``O_APPEND``, ``O_TRUNC``, ``O_DSYNC`` and ``O_SYNC`` are kept;
  everything else is dropped (``O_DIRECT``: our buffers are not aligned; ``O_NOATIME``: would
  fail with EPERM where the guest expects success; ``O_CREAT``/``O_EXCL``/``O_NOFOLLOW``/
  ``O_PATH``/``O_TMPFILE``/``O_NONBLOCK``...), ``O_CLOEXEC`` is always added, and
  ``O_DIRECTORY`` on a non-directory fails with ENOTDIR. An access mode of 3 is EINVAL.
- **Modes** of ``create``/``mkdir``/``mknod`` arrive verbatim, whatever the process umask:
  a guest's kernel has already applied the guest's umask, and the gateway's (inherited from
  whoever started it, and process-wide: it cannot be changed per call without racing other
  threads) must not be applied again. The new object is stat-ed anyway to make its node;
  when the kernel left out bits that were asked for (the umask; a default ACL of the parent,
  which then gets the group bits as its mask), one ``chmod`` through ``/proc/self/fd/N`` puts
  them back. Bits the kernel added are kept (a directory inherits its parent's set-gid bit).
  Comparing with what was made, rather than with a umask read at start, is exact even when
  the umask changes later, and costs nothing when nothing was left out (umask 0).
  ``setattr`` applies owner, then mode (so a chown cannot clear
  requested set-id bits), then size, then times; it is not atomic: when a step fails, the
  earlier ones stay done. Set-id bits are applied as asked (squashing is gateway policy).
- **Inodes** (virtiofsd's inode map): the backend keeps one ``O_PATH`` fd per object that
  nodes refer to, in a map keyed by ``(st_dev, st_ino, mnt_id)`` with a count of the nodes on
  it. A lookup still opens and stats the name (that is how it learns which inode it names);
  when the map holds that inode, the new fd is closed and the node shares the held one.
  ``clone`` is a count increment and ``close`` a decrement, without a system call; the fd
  is closed with the last node. The key cannot be reused while in the map: the held fd
  keeps the inode alive. ``mnt_id`` is statx's (Linux >= 5.8; 0 before, where a bind mount
  inside the volume then shares the fd of its first-seen mount).
- **fds**: one per inode that live nodes refer to, one per open file, one for the volume
  root: a guest holding many fids on one file holds one fd. A node dropped without
  ``close()`` gives its inode reference back when garbage-collected. ``/proc`` must be
  mounted (checked when the backend starts).
- **Threads**: every method may run in many threads at once, on the same handles too. Reads
  and writes use ``pread``/``pwrite`` (no shared offset); ``readdir`` on one open directory is
  serialised by a lock (it moves the fd's offset); ``close()`` of a handle in use elsewhere
  is deferred as in point 6 above.
- **Errors** (``OSError`` only, for anything a guest can cause; ``ValueError``/
  ``OverflowError`` from out-of-range numbers or odd strings become EINVAL; a foreign handle
  is a bug above us: TypeError). The errnos this module chooses itself:

  ======================================================  ============
  bad name (empty, ``/``, NUL, ``.``, ``..``), bad share   EINVAL
  path (absolute, empty or dot component)
  ``open`` of a symlink                                    ELOOP
  ``open`` of a FIFO, socket or device node                EPERM
  ``mknod`` of a character or block device                 EPERM
  ``mknod`` of any type but FIFO and socket                EINVAL
  ``setattr(mode=)`` on a symlink                          EOPNOTSUPP
  ``setattr(size=)`` on a directory / on a non-file        EISDIR / EINVAL
  ``readlink`` of a non-symlink                            EINVAL
  ``link`` to a directory                                  EPERM
  ``readdir`` on a non-directory                           ENOTDIR
  ``readdir`` with ``max_entries < 1`` or a cookie         EINVAL
  outside 0..2**64-1; negative offsets and sizes
  a handle used after ``close()``                          EBADF
  ======================================================  ============

  Everything else is the kernel's errno, passed through (ENOENT, ENOTDIR, EEXIST, ENOTEMPTY,
  EISDIR, EXDEV, ENAMETOOLONG, ENODATA, EACCES, ...).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import Final

from vshare.backend import _linux
from vshare.backend._common import (
    IO_FLAGS_KEPT,
    NS,
    U64,
    AttrChange,
    CheckedBackend,
    check_offset,
    check_xattr_flags,
    decode,
    einval_on_value_error,
    err,
    name_bytes,
    owned,
    owner_id,
)
from vshare.backend._handle import FileSpan, UseCounted
from vshare.backend._posix_handles import InodeMap, PosixNode, PosixOpenFile, QidMap
from vshare.backend.base import (
    TIME_NOW,
    Attr,
    CacheMode,
    DirEntry,
    HostDirectory,
    Listing,
    Node,
    OpenFile,
    StatFs,
)

__all__ = ["PosixBackend", "PosixNode", "PosixOpenFile"]

_PATH_FLAGS: Final = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_RESOLVE: Final = _linux.RESOLVE_BENEATH | _linux.RESOLVE_NO_SYMLINKS | _linux.RESOLVE_NO_MAGICLINKS
_EMPTY_NOFOLLOW: Final = _linux.AT_EMPTY_PATH | _linux.AT_SYMLINK_NOFOLLOW
_READDIR_MIN_BUFSIZE: Final = 4096
_READDIR_MAX_BUFSIZE: Final = 32 * 1024
#: Bytes of a file opened read-only that the open asks the kernel to start reading
#: (``POSIX_FADV_WILLNEED``): the kernel's own first readahead, the FUSE client's first read.
_READ_AHEAD_AT_OPEN: Final = 128 * 1024
_PAGE: Final = os.sysconf("SC_PAGE_SIZE")

#: Kept importable here (tests): the qid-path map of the module note.
_QidMap = QidMap


def _proc(fd: int) -> bytes:
    return b"/proc/self/fd/%d" % fd


def _io_flags(flags: int) -> int:
    if flags & os.O_ACCMODE == os.O_ACCMODE:
        raise err(errno.EINVAL)
    return (flags & IO_FLAGS_KEPT) | os.O_CLOEXEC


#: statfs f_type of filesystems whose metadata calls never wait on a network: ext2/3/4,
#: XFS, Btrfs, tmpfs, F2FS, ZFS, overlayfs (statfs(2), linux/magic.h). NFS, CIFS, FUSE
#: (including GlusterFS and sshfs mounts), CephFS and 9p are deliberately absent.
_LOCAL_FILESYSTEMS: Final = frozenset({
    0xEF53, 0x58465342, 0x9123683E, 0x01021994, 0xF2F52010, 0x2FC12FC1, 0x794C7630,
})  # fmt: skip


class PosixBackend(CheckedBackend[PosixNode, PosixOpenFile]):
    """A volume that is a directory on this host (local disk, CephFS/NFS/GlusterFS mounts).

    Args:
        root: the volume's directory; trusted operator configuration (it may contain
            symlinks: it is resolved once, here).
        use_openat2: ``None`` probes the kernel; ``False`` forces the one-component
            ``openat(O_PATH|O_NOFOLLOW)`` fallback (tests); ``True`` fails without openat2.

    Raises:
        OSError: ``root`` is not a directory, or ``/proc/self/fd`` does not work here.
    """

    def __init__(self, root: str, *, use_openat2: bool | None = None) -> None:
        fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            st = _linux.stat_fd(fd)
            via_proc = os.stat(_proc(fd))
            if (via_proc.st_dev, via_proc.st_ino) != (st.dev, st.ino):
                raise OSError(errno.ENOENT, "/proc/self/fd does not show this process's fds")
            probe_ok = self._probe_openat2(fd)
            if use_openat2 and not probe_ok:
                raise OSError(errno.ENOSYS, "openat2 with RESOLVE_BENEATH is not available")
        except BaseException:
            os.close(fd)
            raise
        self._root_path = root
        self.cheap_metadata = _linux.fstatfs(fd).fs_type in _LOCAL_FILESYSTEMS
        self._nowait = hasattr(os, "RWF_NOWAIT")
        self._spans = hasattr(os, "sendfile")  # until cachestat says ENOSYS
        self._openat2 = probe_ok if use_openat2 is None else use_openat2
        self._root = UseCounted(fd, os.close)
        self._qids = QidMap(st.dev)
        self._inodes = InodeMap()  # the inodes nodes hold (see Inodes)

    @staticmethod
    def _probe_openat2(dirfd: int) -> bool:
        try:
            fd = _linux.openat2(dirfd, b".", os.O_PATH | os.O_CLOEXEC, _RESOLVE)
        except OSError as e:
            # ENOSYS: no openat2; EINVAL: RESOLVE_* unknown; EPERM: filtered by seccomp.
            if e.errno in (errno.ENOSYS, errno.EINVAL, errno.EPERM, errno.E2BIG):
                return False
            raise
        os.close(fd)
        return True

    @property
    def uses_openat2(self) -> bool:
        """Whether lookups go through openat2 (else the one-component openat fallback)."""
        return self._openat2

    def __repr__(self) -> str:
        return f"PosixBackend({self._root_path!r})"

    # -- helpers -------------------------------------------------------------------------------

    def _node(self, node: Node) -> PosixNode:
        return owned(self, node, PosixNode)

    def _file(self, file: OpenFile) -> PosixOpenFile:
        return owned(self, file, PosixOpenFile)

    def _open_beneath(self, dirfd: int, name: bytes, extra: int = 0) -> int:
        """The one place that resolves a name: one component, no symlink followed."""
        if self._openat2:
            return _linux.openat2(dirfd, name, _PATH_FLAGS | extra, _RESOLVE)
        return os.open(name, _PATH_FLAGS | extra, dir_fd=dirfd)

    def _adopt(self, fd: int, mode: int | None = None) -> PosixNode:
        """A node on the object ``fd`` refers to; ``fd`` is taken over (kept as the inode's
        fd, or closed when the inode is held already, or when this fails). With ``mode``
        (type and permission bits), the object was just created with it: the permission bits
        the kernel left out are put back (see Modes) if it is still of that type (something
        renamed onto the name before the lookup keeps its mode)."""
        try:
            st = _linux.stat_fd(fd)
            if (
                mode is not None
                and mode & 0o7777 & ~st.mode
                and stat.S_IFMT(st.mode) == stat.S_IFMT(mode)
            ):
                os.chmod(_proc(fd), stat.S_IMODE(st.mode) | (mode & 0o7777))
            key = (st.dev, st.ino, st.mnt_id)
            qid_path = self._qids.qid(st.dev, st.ino)
        except BaseException:
            os.close(fd)
            raise
        return PosixNode(self, self._inodes.hold(key, fd, stat.S_IFMT(st.mode), qid_path))

    def _release(self, node: PosixNode) -> None:
        """Close ``node``: one reference fewer on its inode, whose fd is closed with the
        last (once no call uses it any more)."""
        self._inodes.release(node)

    def _lookup(self, parent: PosixNode, raw: bytes, extra: int = 0) -> PosixNode:
        with parent._ref as pfd:
            fd = self._open_beneath(pfd, raw, extra)
        return self._adopt(fd)

    # -- nodes ---------------------------------------------------------------------------------

    @einval_on_value_error
    def open_root(self, path: str, *, cache: CacheMode = "none") -> Node:
        # ``cache`` is ignored: the host's page and dentry caches serve repeats, coherently.
        parts = path.split("/") if path else []
        names = [name_bytes(part) for part in parts]  # "/x", "x//y", "x/" → an empty part: EINVAL
        with self._root as rootfd:
            fd = os.dup(rootfd)
        try:
            for name in names:
                nextfd = self._open_beneath(fd, name, os.O_DIRECTORY)
                os.close(fd)
                fd = nextfd
        except BaseException:
            os.close(fd)
            raise
        return self._adopt(fd)

    def clone(self, node: Node) -> Node:
        return PosixNode(self, self._inodes.share(self._node(node)))

    def getattr(self, node: Node) -> Attr:
        n = self._node(node)
        with n._ref as fd:
            st = _linux.stat_fd(fd)
        return self._attr(st)

    @einval_on_value_error
    def getattr_at(self, parent: Node, name: str) -> Attr:
        # One statx relative to the directory's O_PATH fd, no O_PATH fd of the child:
        # one component, not followed if a symlink, mounts crossed as a lookup crosses
        # them, so what is reached is what _open_beneath would reach.
        p = self._parent(parent)
        raw = name_bytes(name)
        with p._ref as pfd:
            return self._attr(_linux.stat_at(pfd, raw))

    @einval_on_value_error
    def readdir_attrs(
        self, directory: Node, file: OpenFile, cookie: int, max_entries: int
    ) -> Listing[tuple[DirEntry, Attr | None]]:
        # One statx per name relative to the open directory, no lookup: a listed name is
        # one component ("." and ".." are skipped) and the symlink itself is stat'ed, so
        # nothing outside the directory is reached (the confinement above holds).
        listed = self.readdir(file, cookie, max_entries)
        out: list[tuple[DirEntry, Attr | None]] = []
        with self._file(file)._ref as fd:
            for entry in listed.entries:
                attr = None
                if entry.name not in (".", ".."):
                    try:
                        attr = self._attr(_linux.stat_at(fd, name_bytes(entry.name)))
                    except FileNotFoundError:
                        pass  # removed since it was listed
                out.append((entry, attr))
        return Listing(out, listed.end)

    def _attr(self, st: _linux.Stat) -> Attr:
        return Attr(
            qid_path=self._qids.qid(st.dev, st.ino),
            mode=st.mode,
            uid=st.uid,
            gid=st.gid,
            nlink=st.nlink,
            rdev=st.rdev,
            size=st.size,
            blksize=st.blksize,
            blocks=st.blocks,
            atime_ns=st.atime_ns,
            mtime_ns=st.mtime_ns,
            ctime_ns=st.ctime_ns,
            btime_ns=st.btime_ns,
        )

    def _setattr(self, n: PosixNode, change: AttrChange) -> None:
        mode, uid, gid, size, atime_ns, mtime_ns = change
        ftype = n.file_type
        atime = self._utime(atime_ns)
        mtime = self._utime(mtime_ns)
        with n._ref as fd:
            if uid is not None or gid is not None:
                _linux.fchownat(fd, b"", owner_id(uid), owner_id(gid), _EMPTY_NOFOLLOW)
            if mode is not None:
                os.chmod(_proc(fd), mode)
            if size is not None:
                os.truncate(_proc(fd), size)
            if atime_ns is not None or mtime_ns is not None:
                if ftype == stat.S_IFLNK:
                    _linux.utimensat(fd, b"", atime, mtime, _EMPTY_NOFOLLOW)
                else:  # works on kernels older than utimensat's AT_EMPTY_PATH
                    _linux.utimensat(_linux.AT_FDCWD, _proc(fd), atime, mtime, 0)

    @staticmethod
    def _utime(ns: int | None) -> int | tuple[int, int]:
        if ns is None:
            return _linux.UTIME_OMIT
        if ns == TIME_NOW:
            return _linux.UTIME_NOW
        return divmod(ns, NS)

    # -- I/O -----------------------------------------------------------------------------------

    def _open(self, n: PosixNode, flags: int, *, is_dir: bool, accmode: int) -> OpenFile:
        oflags = _io_flags(flags) | (os.O_DIRECTORY if is_dir else 0)
        with n._ref as fd:
            iofd = os.open(_proc(fd), oflags)
        if not is_dir and oflags & os.O_ACCMODE == os.O_RDONLY:
            # Start reading the head now, so that the first Tread, one round trip later,
            # finds it in the page cache and is answered on the event loop (read_nowait)
            # instead of by a worker thread: `tar c` of a tree after drop_caches, 4.85 ->
            # 4.0 s. The I/O is only started here; what a guest opens it mostly reads.
            # Advice: a filesystem that refuses it must not fail the open (nor leak iofd).
            with contextlib.suppress(OSError):
                os.posix_fadvise(iofd, 0, _READ_AHEAD_AT_OPEN, os.POSIX_FADV_WILLNEED)
        return PosixOpenFile(
            self, iofd, is_dir=is_dir, dev=n._dev, append=bool(oflags & os.O_APPEND)
        )

    @einval_on_value_error
    def create(self, parent: Node, name: str, flags: int, mode: int) -> tuple[Node, OpenFile]:
        p = self._node(parent)
        raw = name_bytes(name)
        oflags = _io_flags(flags) | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        with p._ref as pfd:
            iofd = os.open(raw, oflags, mode & 0o7777, dir_fd=pfd)
        try:
            pathfd = os.open(_proc(iofd), os.O_PATH | os.O_CLOEXEC)
            node = self._adopt(pathfd, stat.S_IFREG | (mode & 0o7777))
        except BaseException:
            os.close(iofd)
            raise
        file = PosixOpenFile(
            self, iofd, is_dir=False, dev=node._dev, append=bool(oflags & os.O_APPEND)
        )
        return node, file

    @einval_on_value_error
    def read(self, file: OpenFile, offset: int, buf: memoryview) -> int:
        f = self._file(file)
        check_offset(offset)
        with f._ref as fd:
            return os.preadv(fd, (buf,), offset)

    def read_nowait(self, file: OpenFile, offset: int, buf: memoryview) -> int | None:
        # preadv2(RWF_NOWAIT) reads only what is in the page cache: EAGAIN if nothing is,
        # a short count if part is. A short count is only the answer at end of file.
        if not self._nowait:
            return None
        f = self._file(file)
        check_offset(offset)
        with f._ref as fd:
            try:
                n = os.preadv(fd, (buf,), offset, os.RWF_NOWAIT)
            except BlockingIOError:
                return None
            except OSError as e:
                if e.errno != errno.EOPNOTSUPP:
                    raise
                self._nowait = False  # this filesystem cannot say; always use read()
                return None
            if n < len(buf) and offset + n < os.fstat(fd).st_size:
                return None
            return n

    def span_nowait(
        self, file: OpenFile, offset: int, count: int, least: int = 1
    ) -> FileSpan | None:
        if not self._spans:
            return None
        f = self._file(file)
        check_offset(offset)
        with f._ref as fd:
            size = os.fstat(fd).st_size
            count = min(count, size - offset)
            if count < max(least, 1):
                return None
            first, end = offset // _PAGE, -(-(offset + count) // _PAGE)
            try:
                whole = _linux.cached_pages(fd, offset, count) == end - first
            except OSError as e:
                if e.errno != errno.ENOSYS:
                    raise
                self._spans = False  # before Linux 6.5: reads are copied, as before
                return None
            return FileSpan(f._ref, offset, count) if whole else None

    @einval_on_value_error
    def write(self, file: OpenFile, offset: int, data: memoryview) -> int:
        f = self._file(file)
        check_offset(offset)
        with f._ref as fd:
            if f._append:
                return os.write(fd, data)
            return os.pwrite(fd, data, offset)

    def _readdir(self, f: PosixOpenFile, position: int, max_entries: int) -> Listing[DirEntry]:
        # ``position`` is the kernel's d_off; the end is a getdents that returns nothing
        qids = self._qids
        dev = f._dev
        out: list[DirEntry] = []
        # Sized for the batch (names average far below 64 bytes), at least one page (a record
        # is at most 280 bytes), at most 32 KiB; a fuller batch just takes another getdents.
        buf = _linux.dirent_buffer(
            min(_READDIR_MAX_BUFSIZE, max(_READDIR_MIN_BUFSIZE, max_entries * 64))
        )
        with f._ref as fd, f._dir_lock:
            os.lseek(fd, position, os.SEEK_SET)
            while len(out) < max_entries:
                data = _linux.getdents64(fd, buf)
                if not data:
                    return Listing(out, True)
                for ino, off, dtype, raw in _linux.iter_dirents(data):
                    out.append(DirEntry(decode(raw), qids.qid(dev, ino), dtype << 12, off & U64))
                    if len(out) == max_entries:
                        break
        return Listing(out, False)

    @einval_on_value_error
    def fsync(self, file: OpenFile, *, datasync: bool) -> None:
        f = self._file(file)
        with f._ref as fd:
            (os.fdatasync if datasync else os.fsync)(fd)

    def _fallocate(
        self,
        f: PosixOpenFile,
        offset: int,
        length: int,
        keep_size: bool,
        punch_hole: bool,
        zero_range: bool,
    ) -> None:
        mode = (
            (_linux.FALLOC_FL_KEEP_SIZE if keep_size else 0)
            | (_linux.FALLOC_FL_PUNCH_HOLE if punch_hole else 0)
            | (_linux.FALLOC_FL_ZERO_RANGE if zero_range else 0)
        )
        with f._ref as fd:
            _linux.fallocate(fd, mode, offset, length)

    # -- names ---------------------------------------------------------------------------------

    def _mkdir(self, parent: PosixNode, raw: bytes, perms: int) -> PosixNode:
        with parent._ref as pfd:
            os.mkdir(raw, perms, dir_fd=pfd)
            fd = self._open_beneath(pfd, raw, os.O_DIRECTORY)
        return self._adopt(fd, stat.S_IFDIR | perms)

    def _symlink(self, parent: PosixNode, raw: bytes, target: bytes) -> PosixNode:
        with parent._ref as pfd:
            os.symlink(target, raw, dir_fd=pfd)
            fd = self._open_beneath(pfd, raw)
        return self._adopt(fd)

    def _mknod(self, parent: PosixNode, raw: bytes, mode: int) -> PosixNode:
        with parent._ref as pfd:
            os.mknod(raw, mode, 0, dir_fd=pfd)
            fd = self._open_beneath(pfd, raw)
        return self._adopt(fd, mode)

    def _readlink(self, n: PosixNode) -> str:
        with n._ref as fd:
            return decode(os.readlink(b"", dir_fd=fd))

    def _link(self, parent: PosixNode, raw: bytes, target: PosixNode) -> None:
        with parent._ref as pfd, target._ref as tfd:
            # linkat(AT_FDCWD, "/proc/self/fd/N", pfd, name, AT_SYMLINK_FOLLOW): the magic
            # link resolves to the object itself (a symlink node links the symlink).
            os.link(_proc(tfd), raw, dst_dir_fd=pfd, follow_symlinks=True)

    def _rename(
        self, old_dir: PosixNode, old_raw: bytes, new_dir: PosixNode, new_raw: bytes
    ) -> None:
        with old_dir._ref as ofd, new_dir._ref as nfd:
            os.rename(old_raw, new_raw, src_dir_fd=ofd, dst_dir_fd=nfd)

    def _unlink(self, parent: PosixNode, raw: bytes, *, rmdir: bool) -> None:
        with parent._ref as pfd:
            if rmdir:
                os.rmdir(raw, dir_fd=pfd)
            else:
                os.unlink(raw, dir_fd=pfd)

    #: Bytes of a regular file's last link whose unlink is quick: freeing more blocks than
    #: this may wait on the disk (ext4 frees extents as it goes).
    QUICK_UNLINK_BYTES: Final = 1 << 20

    def unlink_is_quick(self, parent: Node, name: str, *, rmdir: bool) -> bool:
        if not self.cheap_metadata:
            return False
        if rmdir:
            return True  # an empty directory frees nothing
        try:
            with self._node(parent)._ref as pfd:
                st = _linux.stat_at(pfd, name_bytes(name))
        except (OSError, ValueError):
            return True  # the unlink fails at once too
        return (
            not stat.S_ISREG(st.mode) or st.nlink > 1 or st.blocks * 512 <= self.QUICK_UNLINK_BYTES
        )

    def statfs(self, node: Node) -> StatFs:
        n = self._node(node)
        with n._ref as fd:
            st = _linux.fstatfs(fd)
        return StatFs(
            fs_type=st.fs_type,
            bsize=st.frsize,  # the unit of the block counts (statvfs' f_frsize)
            blocks=st.blocks,
            bfree=st.bfree,
            bavail=st.bavail,
            files=st.files,
            ffree=st.ffree,
            fsid=st.fsid,
            namelen=st.namelen,
        )

    # -- xattrs (namespace policy is the gateway's) ----------------------------------------------

    @einval_on_value_error
    def getxattr(self, node: Node, name: str) -> bytes:
        n = self._node(node)
        with n._ref as fd:
            return os.getxattr(_proc(fd), name)

    @einval_on_value_error
    def listxattr(self, node: Node) -> list[str]:
        n = self._node(node)
        with n._ref as fd:
            return os.listxattr(_proc(fd))

    @einval_on_value_error
    def setxattr(self, node: Node, name: str, value: bytes, flags: int) -> None:
        n = self._node(node)
        check_xattr_flags(flags)
        with n._ref as fd:
            os.setxattr(_proc(fd), name, value, flags)

    @einval_on_value_error
    def removexattr(self, node: Node, name: str) -> None:
        n = self._node(node)
        with n._ref as fd:
            os.removexattr(_proc(fd), name)

    def host_directory(self, node: Node) -> HostDirectory | None:
        with self._node(node)._ref as fd:
            own = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
        return HostDirectory(own, self._qids.qid)

    # -- volume --------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the volume root fd (open_root then fails with EBADF). Nodes and open files
        already handed out keep their own fds and stay usable until closed."""
        self._root.close()
