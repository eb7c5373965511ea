"""The pyfuse3 file system: FUSE requests → :class:`~vshare.client.AsyncShare` calls.

Inodes: the root is FUSE inode 1; every other file gets a FUSE inode the first time its
qid.path is seen (qid paths are the gateway's stable file identities, so hard links share
an inode) and keeps it while the kernel holds lookups on it: each entry we return (lookup,
create, mkdir, readdir...) counts one, ``forget`` takes them back, and at zero the mapping
is dropped. Each inode remembers the path it was last seen at; operations walk that path
from the share root, so they are stateless on the server and replayable after a reconnect
(the client does the reconnecting). A rename moves the paths of the inode and everything
below it.

Cache modes (``--cache``):

- ``none``: direct I/O and zero entry/attribute timeouts: every read, write and stat
  reaches the gateway, so several VMs see each other's changes at once.
- ``auto``: 1 s timeouts; the page cache is kept on open only when mtime and size are
  what they were at the last open (close-to-open consistency).
- ``always``: one-hour timeouts and the page cache always kept: read-mostly data.

POSIX locks: pyfuse3 has no getlk/setlk/flock handlers, so the kernel keeps fcntl and
flock locks locally: they work between processes of this mount, not across mounts.
"""

from __future__ import annotations

import errno
import functools
import os
import stat as stat_mod
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from vshare.client import AsyncFile, AsyncShare, StatResult, setattr_msg
from vshare.protocol import (
    SETATTR_ATIME,
    SETATTR_ATIME_SET,
    SETATTR_CTIME,
    SETATTR_GID,
    SETATTR_MODE,
    SETATTR_MTIME,
    SETATTR_MTIME_SET,
    SETATTR_SIZE,
    SETATTR_UID,
)

P = ParamSpec("P")
R = TypeVar("R")

TIMEOUTS = {"none": 0.0, "auto": 1.0, "always": 3600.0}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def fuse_errors(
    fn: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Every ``OSError`` (the gateway's errno) becomes the ``FUSEError`` FUSE answers."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except ValueError:
            raise pyfuse3.FUSEError(errno.EINVAL) from None

    return wrapper


@dataclass(slots=True)
class _Inode:
    parts: list[str]
    qid_path: int
    lookups: int = 0
    #: (mtime_ns, size) at the last open: ``auto`` keeps the page cache while unchanged.
    seen: tuple[int, int] | None = None


class VshareOperations(pyfuse3.Operations):
    """See the module note. ``readonly`` refuses every change with EROFS here, before
    the gateway is asked (the mount is also ``ro``)."""

    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, share: AsyncShare, *, cache: str = "auto", readonly: bool = False) -> None:
        super().__init__()
        if cache not in TIMEOUTS:
            raise ValueError(f"cache must be none, auto or always, not {cache!r}")
        self.share = share
        self.cache = cache
        self.readonly = readonly
        self.timeout = TIMEOUTS[cache]
        self._inodes: dict[int, _Inode] = {pyfuse3.ROOT_INODE: _Inode([], -1, 1)}
        self._by_qid: dict[int, int] = {}
        self._next_inode = pyfuse3.ROOT_INODE + 1
        self._files: dict[int, AsyncFile] = {}
        self._dirs: dict[int, tuple[list[str], list[Any] | None]] = {}
        self._next_fh = 1

    # --- inodes -------------------------------------------------------------------------

    def _node(self, inode: int) -> _Inode:
        try:
            return self._inodes[inode]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ESTALE) from None

    def _path(self, inode: int) -> str:
        return "/" + "/".join(self._node(inode).parts)

    def _child(self, parent: int, name: bytes) -> list[str]:
        decoded = os.fsdecode(name)
        if "/" in decoded or decoded in ("", ".", ".."):
            raise pyfuse3.FUSEError(errno.EINVAL)
        return [*self._node(parent).parts, decoded]

    def _remember(self, parts: list[str], st: StatResult) -> int:
        """The inode for ``st`` (seen at ``parts``), with one more lookup."""
        if not parts:
            return pyfuse3.ROOT_INODE
        inode = self._by_qid.get(st.qid.path)
        if inode is None:
            inode = self._next_inode
            self._next_inode += 1
            self._by_qid[st.qid.path] = inode
            self._inodes[inode] = _Inode(parts, st.qid.path)
        node = self._inodes[inode]
        node.parts = parts
        node.lookups += 1
        return inode

    def _entry(self, inode: int, st: StatResult) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = inode
        e.generation = 0
        e.entry_timeout = self.timeout
        e.attr_timeout = self.timeout
        e.st_mode = st.st_mode
        e.st_nlink = st.st_nlink
        e.st_uid = st.st_uid
        e.st_gid = st.st_gid
        e.st_rdev = st.st_rdev
        e.st_size = st.st_size
        e.st_blksize = st.st_blksize or 4096
        e.st_blocks = st.st_blocks
        e.st_atime_ns = st.st_atime_ns
        e.st_mtime_ns = st.st_mtime_ns
        e.st_ctime_ns = st.st_ctime_ns
        return e

    def _writable(self) -> None:
        if self.readonly:
            raise pyfuse3.FUSEError(errno.EROFS)

    async def _lookup_parts(self, parts: list[str]) -> pyfuse3.EntryAttributes:
        st = await self.share.stat("/".join(parts))
        return self._entry(self._remember(parts, st), st)

    def _moved(self, old: list[str], new: list[str]) -> None:
        n = len(old)
        for node in self._inodes.values():
            if node.parts[:n] == old:
                node.parts = new + node.parts[n:]

    # --- metadata -----------------------------------------------------------------------

    @fuse_errors
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return await self._lookup_parts(self._child(parent_inode, name))

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, nlookup in inode_list:
            node = self._inodes.get(inode)
            if node is None or inode == pyfuse3.ROOT_INODE:
                continue
            node.lookups -= nlookup
            if node.lookups <= 0:
                del self._inodes[inode]
                if self._by_qid.get(node.qid_path) == inode:
                    del self._by_qid[node.qid_path]

    @property
    def inode_count(self) -> int:
        return len(self._inodes)

    @fuse_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._entry(inode, await self.share.stat(self._path(inode)))

    @fuse_errors
    async def setattr(
        self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
        fh: int | None, ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:  # fmt: skip
        self._writable()
        valid = 0
        if fields.update_mode:
            valid |= SETATTR_MODE
        if fields.update_uid:
            valid |= SETATTR_UID
        if fields.update_gid:
            valid |= SETATTR_GID
        if fields.update_size:
            valid |= SETATTR_SIZE
        if fields.update_atime:
            valid |= SETATTR_ATIME | SETATTR_ATIME_SET
        if fields.update_mtime:
            valid |= SETATTR_MTIME | SETATTR_MTIME_SET
        if fields.update_ctime:
            valid |= SETATTR_CTIME
        msg = setattr_msg(
            valid, mode=stat_mod.S_IMODE(attr.st_mode), uid=attr.st_uid, gid=attr.st_gid,
            size=attr.st_size, atime_ns=attr.st_atime_ns, mtime_ns=attr.st_mtime_ns,
        )  # fmt: skip
        f = self._files.get(fh) if fh is not None else None
        if valid:
            if f is not None:
                await f.setattr(msg)  # works on open files whose name is gone
            else:
                path = self._path(inode)

                async def apply(s: Any, fid: int, _: bool) -> None:
                    await s.client.rpc(msg._replace(fid=fid))

                await self.share._with_fid(path, apply)
        st = await f.stat() if f is not None else await self.share.stat(self._path(inode))
        return self._entry(inode, st)

    @fuse_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return os.fsencode(await self.share.readlink(self._path(inode)))

    @fuse_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        st = await self.share.statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize = st.f_bsize
        out.f_frsize = st.f_frsize
        out.f_blocks = st.f_blocks
        out.f_bfree = st.f_bfree
        out.f_bavail = st.f_bavail
        out.f_files = st.f_files
        out.f_ffree = st.f_ffree
        out.f_favail = st.f_favail
        out.f_namemax = st.f_namemax
        return out

    # --- names --------------------------------------------------------------------------

    @fuse_errors
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        self._writable()
        parts = self._child(parent_inode, name)
        st = await self.share.mkdir("/".join(parts), stat_mod.S_IMODE(mode))
        return self._entry(self._remember(parts, st), st)

    @fuse_errors
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        self._writable()
        parts = self._child(parent_inode, name)
        if stat_mod.S_ISREG(mode):
            f = await self.share.open_flags(
                "/".join(parts), os.O_CREAT | os.O_EXCL | os.O_WRONLY, stat_mod.S_IMODE(mode)
            )
            await f.close()
        else:
            await self.share.mknod("/".join(parts), mode, rdev)
        return await self._lookup_parts(parts)

    @fuse_errors
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        self._writable()
        parts = self._child(parent_inode, name)
        await self.share.symlink(os.fsdecode(target), "/".join(parts))
        return await self._lookup_parts(parts)

    @fuse_errors
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        self._writable()
        parts = self._child(new_parent_inode, new_name)
        old = self._node(inode).parts
        await self.share.link("/".join(old), "/".join(parts))
        st = await self.share.stat("/".join(parts))
        self._node(inode).lookups += 1
        return self._entry(inode, st)

    @fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._writable()
        await self.share.unlink("/".join(self._child(parent_inode, name)))

    @fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._writable()
        await self.share.rmdir("/".join(self._child(parent_inode, name)))

    @fuse_errors
    async def rename(
        self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
        flags: int, ctx: pyfuse3.RequestContext,
    ) -> None:  # fmt: skip
        self._writable()
        old = self._child(parent_inode_old, name_old)
        new = self._child(parent_inode_new, name_new)
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)  # 9P has no atomic exchange
        if flags & pyfuse3.RENAME_NOREPLACE and await self.share.exists("/".join(new)):
            raise pyfuse3.FUSEError(errno.EEXIST)
        await self.share.rename("/".join(old), "/".join(new))
        self._moved(old, new)

    # --- directories --------------------------------------------------------------------

    @fuse_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        parts = list(self._node(inode).parts)
        if not await self.share.isdir("/".join(parts)):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        fh = self._next_fh
        self._next_fh += 1
        self._dirs[fh] = (parts, None)
        return fh

    @fuse_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        parts, entries = self._dirs[fh]
        if entries is None:
            # One listing per opendir, so that offsets stay stable while the kernel pages
            # through it; attributes come with it (readdirplus).
            entries = [e for e in await self.share.scandir("/".join(parts)) if e.stat]
            self._dirs[fh] = (parts, entries)
        for i in range(start_id, len(entries)):
            e = entries[i]
            child = [*parts, e.name]
            st = e.stat
            assert st is not None  # filtered above
            inode = self._by_qid.get(st.qid.path) or self._next_inode
            if not pyfuse3.readdir_reply(token, os.fsencode(e.name), self._entry(inode, st), i + 1):
                return
            self._remember(child, st)  # the kernel took a lookup on it

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        pass

    # --- files --------------------------------------------------------------------------

    def _file_info(self, fh: int, inode: int, st: StatResult | None) -> pyfuse3.FileInfo:
        info = pyfuse3.FileInfo(fh=fh)
        if self.cache == "none":
            info.direct_io = True
            info.keep_cache = False
        elif self.cache == "always":
            info.keep_cache = True
        else:
            node = self._inodes.get(inode)
            now = None if st is None else (st.st_mtime_ns, st.st_size)
            info.keep_cache = node is not None and now is not None and node.seen == now
            if node is not None:
                node.seen = now
        return info

    def _add_file(self, f: AsyncFile) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._files[fh] = f
        return fh

    @fuse_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & _WRITE_FLAGS:
            self._writable()
        f = await self.share.open_flags(self._path(inode), flags & ~(os.O_CREAT | os.O_EXCL))
        st = None if self.cache != "auto" else await f.stat()
        return self._file_info(self._add_file(f), inode, st)

    @fuse_errors
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        self._writable()
        parts = self._child(parent_inode, name)
        f = await self.share.open_flags("/".join(parts), flags | os.O_CREAT, stat_mod.S_IMODE(mode))
        st = await f.stat()
        inode = self._remember(parts, st)
        return self._file_info(self._add_file(f), inode, st), self._entry(inode, st)

    @fuse_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self._files[fh].pread(size, off)

    @fuse_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self._files[fh].pwrite(buf, off)

    async def flush(self, fh: int) -> None:
        pass  # writes go straight to the gateway: nothing is buffered here

    @fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self._files[fh].fsync(datasync)

    async def release(self, fh: int) -> None:
        f = self._files.pop(fh, None)
        if f is not None:
            try:
                await f.close()
            except OSError:
                pass  # the fid is gone either way

    # --- extended attributes ------------------------------------------------------------

    @fuse_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if name == b"security.capability":
            # The kernel asks before every write, to drop a file capability: a round trip
            # per write. The mount is nosuid, so capabilities never apply through it, and
            # the gateway's own write on the host drops them there.
            raise pyfuse3.FUSEError(errno.ENODATA)
        return await self.share.getxattr(self._path(inode), os.fsdecode(name))

    @fuse_errors
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        self._writable()
        await self.share.setxattr(self._path(inode), os.fsdecode(name), value)

    @fuse_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        return [os.fsencode(n) for n in await self.share.listxattr(self._path(inode))]

    @fuse_errors
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._writable()
        await self.share.removexattr(self._path(inode), os.fsdecode(name))
