"""An attached share with an os-like async API, that survives gateway restarts.

Design:

- :class:`AsyncShare` adds the path operations to :class:`~._session.SessionKeeper`, which
  keeps one session alive (reconnecting with backoff, failing over to the next URI) and
  re-runs an operation when the connection died under it.
- Path operations are stateless on the server: each walks from the root (≤ 16 names per
  Twalk, 9P's limit), does its request and clunks, so re-running one is safe. Operations
  whose fate is unknown when the connection died (mkdir, create, symlink, link, rename,
  unlink, rmdir) are re-run with ``retried=True`` and read the tell-tale error (EEXIST,
  ENOENT) as "the first attempt happened" after checking the result is the one expected.
- Open files are :class:`~._file.AsyncFile` (rebuilt lazily on a new session).
- Symlinks are data: the gateway never follows them, so :meth:`AsyncShare.stat` is
  ``lstat``, and a path through a symlink fails (ELOOP/ENOTDIR from the server).
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import anyio
import anyio.abc

from vshare.client._file import AsyncFile, mode_to_flags
from vshare.client._paths import components, split_parent
from vshare.client._session import (
    DEFAULT_MSIZE,
    NONUNAME,
    Session,
    SessionKeeper,
    T,
    _single,
    read_dirents,
    xattr_write,
)
from vshare.client._stat import DirEntry, StatResult, setattr_sec_nsec, utime_msg
from vshare.protocol import (
    AT_REMOVEDIR,
    DOTL_CREATE,
    DOTL_DIRECTORY,
    DOTL_EXCL,
    DOTL_RDONLY,
    DOTL_TRUNC,
    GETATTR_ALL,
    SETATTR_GID,
    SETATTR_MODE,
    SETATTR_SIZE,
    SETATTR_UID,
    Dirent,
    Rgetattr,
    Rlcreate,
    Rlopen,
    Rmkdir,
    Rmknod,
    Rreadlink,
    Rstatfs,
    Rsymlink,
    Tgetattr,
    Tlcreate,
    Tlink,
    Tlopen,
    Tmkdir,
    Tmknod,
    Treadlink,
    Tsetattr,
    Tstatfs,
    Tsymlink,
    os_to_dotl_flags,
)
from vshare.transport import TlsSettings

#: Concurrent getattrs of one scandir.
_SCAN_PARALLEL = 32


class AsyncShare(SessionKeeper):
    """An attached share (see the module note). Make one with :func:`open_share`.

    Every method raises ``OSError`` with the gateway's errno; EIO when no gateway could
    be reached for ``reconnect_timeout`` seconds. Paths are relative to the share root
    (a leading ``/`` is the same); ``..`` above the root is EINVAL (see ``_paths.py``).
    Safe to use from many tasks at once: requests are multiplexed by tag.
    """

    async def stat(self, path: str = "/") -> StatResult:
        """``lstat(path)``: symlinks are never followed."""

        async def fn(s: Session, fid: int, _: bool) -> StatResult:
            r = await s.client.call(Tgetattr(fid, GETATTR_ALL), Rgetattr)
            return StatResult.from_rgetattr(r)

        return await self._with_fid(path, fn)

    lstat = stat

    async def exists(self, path: str) -> bool:
        try:
            await self.stat(path)
        except FileNotFoundError:
            return False
        return True

    async def isdir(self, path: str) -> bool:
        try:
            return stat_mod.S_ISDIR((await self.stat(path)).st_mode)
        except FileNotFoundError:
            return False

    async def _setattr(self, path: str, msg: Tsetattr) -> None:
        async def fn(s: Session, fid: int, _: bool) -> None:
            await s.client.rpc(msg._replace(fid=fid))

        await self._with_fid(path, fn)

    async def chmod(self, path: str, mode: int) -> None:
        await self._setattr(path, setattr_sec_nsec(SETATTR_MODE, mode=mode))

    async def chown(self, path: str, uid: int, gid: int) -> None:
        """``-1`` leaves that id unchanged (as ``os.chown``)."""
        valid = (SETATTR_UID if uid != -1 else 0) | (SETATTR_GID if gid != -1 else 0)
        await self._setattr(path, setattr_sec_nsec(valid, uid=max(uid, 0), gid=max(gid, 0)))

    async def truncate(self, path: str, length: int) -> None:
        await self._setattr(path, setattr_sec_nsec(SETATTR_SIZE, size=length))

    async def utime(
        self,
        path: str,
        times: tuple[float, float] | None = None,
        *,
        ns: tuple[int, int] | None = None,
    ) -> None:
        """As ``os.utime``: neither ``times`` nor ``ns``: both to the server's now."""
        await self._setattr(path, utime_msg(times, ns))

    async def statfs(self, path: str = "/") -> os.statvfs_result:
        async def fn(s: Session, fid: int, _: bool) -> os.statvfs_result:
            r = await s.client.call(Tstatfs(fid), Rstatfs)
            return os.statvfs_result(
                (
                    r.bsize,
                    r.bsize,
                    r.blocks,
                    r.bfree,
                    r.bavail,
                    r.files,
                    r.ffree,
                    r.ffree,
                    0,
                    r.namelen,
                )
            )

        return await self._with_fid(path, fn)

    # --- directories --------------------------------------------------------------------

    async def _readdir(self, s: Session, fid: int) -> list[Dirent]:
        await s.client.call(Tlopen(fid, DOTL_RDONLY | DOTL_DIRECTORY), Rlopen)
        return await read_dirents(s, fid)

    async def listdir(self, path: str = "/") -> list[str]:
        """Names in the directory, without ``.`` and ``..``, in the server's order."""

        async def fn(s: Session, fid: int, _: bool) -> list[str]:
            return [e.name for e in await self._readdir(s, fid)]

        return await self._with_fid(path, fn)

    async def scandir(self, path: str = "/", *, attrs: bool = True) -> list[DirEntry]:
        """Entries with their type and qid and, with ``attrs``, their attributes
        (getattrs run concurrently, up to 32 in flight)."""
        parts = components(path)
        base = "/" + "/".join(parts)

        async def fn(s: Session, fid: int, _: bool) -> list[DirEntry]:
            entries = await self._readdir(s, fid)
            stats: list[StatResult | None] = [None] * len(entries)
            if attrs and entries:
                limiter = anyio.CapacityLimiter(_SCAN_PARALLEL)

                async def one(i: int, name: str) -> None:
                    async with limiter:
                        try:
                            stats[i] = await self._stat_in(s, [*parts, name])
                        except FileNotFoundError:
                            pass  # removed since the listing

                try:
                    async with anyio.create_task_group() as tg:
                        for i, e in enumerate(entries):
                            tg.start_soon(one, i, e.name)
                except BaseExceptionGroup as group:
                    raise _single(group) from None
            return [
                DirEntry(e.name, base.rstrip("/") + "/" + e.name, e.type, e.qid, stats[i])
                for i, e in enumerate(entries)
            ]

        return await self._with_fid(path, fn)

    async def _stat_in(self, s: Session, parts: list[str]) -> StatResult:
        fid = await self._walk(s, parts)
        try:
            r = await s.client.call(Tgetattr(fid, GETATTR_ALL), Rgetattr)
        finally:
            await self._clunk(s, fid)
        return StatResult.from_rgetattr(r)

    async def _in_parent(
        self, path: str, fn: Callable[[Session, int, str, bool], Awaitable[T]]
    ) -> T:
        parent, name = split_parent(path)

        async def op(s: Session, retried: bool) -> T:
            dfid = await self._walk(s, parent)
            try:
                return await fn(s, dfid, name, retried)
            finally:
                await self._clunk(s, dfid)

        return await self._retry(op)

    async def mkdir(self, path: str, mode: int = 0o777) -> StatResult:
        async def fn(s: Session, dfid: int, name: str, retried: bool) -> StatResult:
            try:
                await s.client.call(Tmkdir(dfid, name, mode, os.getgid()), Rmkdir)
            except FileExistsError:
                # The first attempt may have made it before the connection died.
                if not retried or not stat_mod.S_ISDIR((st := await self.stat(path)).st_mode):
                    raise
                return st
            return await self.stat(path)

        return await self._in_parent(path, fn)

    async def makedirs(self, path: str, mode: int = 0o777, exist_ok: bool = False) -> None:
        parts = components(path)
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            try:
                await self.mkdir(sub, mode)
            except FileExistsError:
                if i == len(parts) and not exist_ok:
                    raise
                if not await self.isdir(sub):
                    raise

    async def _unlinkat(self, path: str, flags: int) -> None:
        async def fn(s: Session, dfid: int, name: str, retried: bool) -> None:
            try:
                await self.unlink_in(s, dfid, name, flags)
            except FileNotFoundError:
                if not retried:  # else: the first attempt removed it
                    raise

        await self._in_parent(path, fn)

    async def unlink(self, path: str) -> None:
        await self._unlinkat(path, 0)

    remove = unlink

    async def rmdir(self, path: str) -> None:
        await self._unlinkat(path, AT_REMOVEDIR)

    async def rename(self, src: str, dst: str) -> None:
        """Atomic rename within the share (replaces ``dst`` as ``rename(2)`` does)."""
        sparent, sname = split_parent(src)
        dparent, dname = split_parent(dst)

        async def op(s: Session, retried: bool) -> None:
            sfid = await self._walk(s, sparent)
            try:
                dfid = await self._walk(s, dparent)
                try:
                    await self.rename_in(s, sfid, sname, dfid, dname)
                except FileNotFoundError:
                    # Done by the first attempt if the source is gone and the target is there.
                    if not (retried and await self.exists(dst) and not await self.exists(src)):
                        raise
                finally:
                    await self._clunk(s, dfid)
            finally:
                await self._clunk(s, sfid)

        await self._retry(op)

    async def symlink(self, target: str, path: str) -> None:
        """Make ``path`` a symlink holding ``target`` (``os.symlink``'s order)."""

        async def fn(s: Session, dfid: int, name: str, retried: bool) -> None:
            try:
                await s.client.call(Tsymlink(dfid, name, target, os.getgid()), Rsymlink)
            except FileExistsError:
                if not retried or await self.readlink(path) != target:
                    raise

        await self._in_parent(path, fn)

    async def readlink(self, path: str) -> str:
        async def fn(s: Session, fid: int, _: bool) -> str:
            return (await s.client.call(Treadlink(fid), Rreadlink)).target

        return await self._with_fid(path, fn)

    async def link(self, src: str, dst: str) -> None:
        """A hard link ``dst`` to the existing file ``src``."""
        src_parts = components(src)

        async def fn(s: Session, dfid: int, name: str, retried: bool) -> None:
            fid = await self._walk(s, src_parts)
            try:
                await s.client.rpc(Tlink(dfid, fid, name))
            except FileExistsError:
                if not retried or (await self.stat(src)).st_ino != (await self.stat(dst)).st_ino:
                    raise
            finally:
                await self._clunk(s, fid)

        await self._in_parent(dst, fn)

    async def mknod(self, path: str, mode: int = 0o600 | stat_mod.S_IFIFO, device: int = 0) -> None:
        """A FIFO, socket or (where the share allows) device node."""

        async def fn(s: Session, dfid: int, name: str, retried: bool) -> None:
            msg = Tmknod(dfid, name, mode, os.major(device), os.minor(device), os.getgid())
            try:
                await s.client.call(msg, Rmknod)
            except FileExistsError:
                if not retried:
                    raise

        await self._in_parent(path, fn)

    # --- extended attributes ------------------------------------------------------------
    async def getxattr(self, path: str, name: str) -> bytes:
        async def fn(s: Session, fid: int, _: bool) -> bytes:
            return await self.xattr_read(s, fid, name)

        return await self._with_fid(path, fn)

    async def listxattr(self, path: str) -> list[str]:
        async def fn(s: Session, fid: int, _: bool) -> list[str]:
            raw = await self.xattr_read(s, fid, "")
            return [n.decode() for n in raw.split(b"\0") if n]

        return await self._with_fid(path, fn)

    async def setxattr(self, path: str, name: str, value: bytes, flags: int = 0) -> None:
        """``flags``: 0, ``os.XATTR_CREATE`` or ``os.XATTR_REPLACE``. The value is
        committed by the Tclunk that ends the Txattrcreate fid, so its error is ours."""

        async def fn(s: Session, fid: int, _: bool) -> None:
            await xattr_write(s, fid, name, value, flags)

        await self._with_fid(path, fn)

    async def removexattr(self, path: str, name: str) -> None:
        # Linux's way, which the gateway and QEMU read as removal: size 0, XATTR_REPLACE.
        await self.setxattr(path, name, b"", os.XATTR_REPLACE)

    # --- files --------------------------------------------------------------------------

    async def open(
        self, path: str, mode: str = "rb", *, perm: int = 0o666, flags: int | None = None
    ) -> AsyncFile:
        """Open a file; ``mode`` as ``open()`` (binary only), or raw ``os.O_*`` ``flags``.
        ``perm`` is the new file's mode when one is created."""
        oflags = mode_to_flags(mode) if flags is None else flags
        return await self.open_flags(path, oflags, perm)

    async def open_flags(self, path: str, flags: int, perm: int = 0o666) -> AsyncFile:
        parts = components(path)
        if not parts and flags & os.O_CREAT:
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        dotl = os_to_dotl_flags(flags)
        f = AsyncFile(self, parts, dotl)

        async def op(s: Session, retried: bool) -> AsyncFile:
            if not dotl & DOTL_CREATE:
                await f._open_on(s, dotl)
                return f
            if not dotl & DOTL_EXCL:
                try:
                    await f._open_on(s, dotl & ~DOTL_CREATE)
                    return f
                except FileNotFoundError:
                    pass
            dfid = await self._walk(s, parts[:-1])
            try:
                r = await s.client.call(
                    Tlcreate(dfid, parts[-1], dotl & ~DOTL_TRUNC, perm, os.getgid()), Rlcreate
                )
            except FileExistsError:
                await self._clunk(s, dfid)
                if not (retried or not dotl & DOTL_EXCL):
                    raise
                # Our own earlier create (retried), or a concurrent one (not O_EXCL).
                await f._open_on(s, dotl & ~(DOTL_CREATE | DOTL_EXCL))
                return f
            except BaseException:
                await self._clunk(s, dfid)
                raise
            f._bind(s, dfid, r.iounit)
            return f

        return await self._retry(op)

    async def read_bytes(self, path: str) -> bytes:
        f = await self.open(path, "rb")
        try:
            return await f.read()
        finally:
            await f.close()

    async def write_bytes(self, path: str, data: bytes | bytearray | memoryview) -> int:
        f = await self.open(path, "wb")
        try:
            return await f.write(data)
        finally:
            await f.close()


@asynccontextmanager
async def open_share(
    uris: str | Sequence[str],
    share: str,
    *,
    msize: int = DEFAULT_MSIZE,
    reconnect_timeout: float = 30.0,
    uname: str = "",
    n_uname: int = NONUNAME,
    tls: TlsSettings | None = None,
) -> AsyncIterator[AsyncShare]:
    """Connect to the first gateway of ``uris`` that attaches ``share`` and yield an
    :class:`AsyncShare`; the connection (and any reconnection) lives until the block ends.

    Raises:
        OSError: no gateway could be reached or attached (the errno of the last attempt:
            ECONNREFUSED, ENOENT for a missing socket or share, EACCES...).
    """
    shared = AsyncShare(
        [uris] if isinstance(uris, str) else list(uris),
        share,
        msize=msize,
        reconnect_timeout=reconnect_timeout,
        uname=uname,
        n_uname=n_uname,
        tls=tls,
    )
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(shared._supervise)
            try:
                yield shared
            finally:
                shared._closed = True
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise _single(group) from None
