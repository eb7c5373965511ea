"""A blocking facade over :class:`~._share.AsyncShare`, for scripts.

An anyio event loop runs in a background thread (``start_blocking_portal``); every call
is handed to it and waited for, so the async client, its reader task and its reconnect
supervisor keep running between calls. One :class:`Share` may be used from several
threads: the calls are multiplexed on the one connection.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from vshare.client._file import AsyncFile
from vshare.client._session import DEFAULT_MSIZE
from vshare.client._share import AsyncShare, open_share
from vshare.client._stat import DirEntry, StatResult
from vshare.protocol import Rgetlock

T = TypeVar("T")


class File:
    """A blocking open file (see :class:`~._file.AsyncFile` for the semantics)."""

    def __init__(self, portal: BlockingPortal, f: AsyncFile) -> None:
        self._portal = portal
        self._f = f

    @property
    def aio(self) -> AsyncFile:
        return self._f

    def _call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return self._portal.call(fn, *args)

    @property
    def path(self) -> str:
        return self._f.path

    @property
    def closed(self) -> bool:
        return self._f.closed

    def read(self, size: int = -1) -> bytes:
        return self._call(self._f.read, size)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return self._call(self._f.write, data)

    def pread(self, size: int, offset: int) -> bytes:
        return self._call(self._f.pread, size, offset)

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> int:
        return self._call(self._f.pwrite, data, offset)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._call(self._f.seek, offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def stat(self) -> StatResult:
        return self._call(self._f.stat)

    def truncate(self, length: int | None = None) -> None:
        self._call(self._f.truncate, length)

    def fsync(self) -> None:
        self._call(self._f.fsync)

    def lock(self, kind: str, start: int = 0, length: int = 0, *, blocking: bool = False) -> None:
        self._portal.call(lambda: self._f.lock(kind, start, length, blocking=blocking))

    def getlock(self, kind: str = "w", start: int = 0, length: int = 0) -> Rgetlock:
        return self._call(self._f.getlock, kind, start, length)

    def close(self) -> None:
        self._call(self._f.close)

    def __enter__(self) -> File:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Share:
    """A blocking, attached share: ``with Share("unix:///run/vshare.sock", "data") as s:
    s.read_bytes("a.txt")``. Methods and errors as :class:`~._share.AsyncShare`."""

    def __init__(
        self,
        uris: str | Sequence[str],
        share: str,
        *,
        msize: int = DEFAULT_MSIZE,
        reconnect_timeout: float = 30.0,
    ) -> None:
        self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        try:
            self._share_cm = self._portal.wrap_async_context_manager(
                open_share(uris, share, msize=msize, reconnect_timeout=reconnect_timeout)
            )
            self.aio: AsyncShare = self._share_cm.__enter__()
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise
        self._open = True

    def _call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return self._portal.call(fn, *args)

    def close(self) -> None:
        """Close the connection and stop the loop thread. Idempotent."""
        if self._open:
            self._open = False
            try:
                self._share_cm.__exit__(None, None, None)
            finally:
                self._portal_cm.__exit__(None, None, None)

    def __enter__(self) -> Share:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self, path: str, mode: str = "rb", *, perm: int = 0o666) -> File:
        f = self._portal.call(lambda: self.aio.open(path, mode, perm=perm))
        return File(self._portal, f)

    def read_bytes(self, path: str) -> bytes:
        return self._call(self.aio.read_bytes, path)

    def write_bytes(self, path: str, data: bytes | bytearray | memoryview) -> int:
        return self._call(self.aio.write_bytes, path, data)

    def stat(self, path: str = "/") -> StatResult:
        return self._call(self.aio.stat, path)

    lstat = stat

    def exists(self, path: str) -> bool:
        return self._call(self.aio.exists, path)

    def isdir(self, path: str) -> bool:
        return self._call(self.aio.isdir, path)

    def listdir(self, path: str = "/") -> list[str]:
        return self._call(self.aio.listdir, path)

    def scandir(self, path: str = "/", *, attrs: bool = True) -> list[DirEntry]:
        return self._portal.call(lambda: self.aio.scandir(path, attrs=attrs))

    def mkdir(self, path: str, mode: int = 0o777) -> StatResult:
        return self._call(self.aio.mkdir, path, mode)

    def makedirs(self, path: str, mode: int = 0o777, exist_ok: bool = False) -> None:
        self._call(self.aio.makedirs, path, mode, exist_ok)

    def unlink(self, path: str) -> None:
        self._call(self.aio.unlink, path)

    remove = unlink

    def rmdir(self, path: str) -> None:
        self._call(self.aio.rmdir, path)

    def rename(self, src: str, dst: str) -> None:
        self._call(self.aio.rename, src, dst)

    def symlink(self, target: str, path: str) -> None:
        self._call(self.aio.symlink, target, path)

    def readlink(self, path: str) -> str:
        return self._call(self.aio.readlink, path)

    def link(self, src: str, dst: str) -> None:
        self._call(self.aio.link, src, dst)

    def mknod(self, path: str, mode: int, device: int = 0) -> None:
        self._call(self.aio.mknod, path, mode, device)

    def chmod(self, path: str, mode: int) -> None:
        self._call(self.aio.chmod, path, mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self._call(self.aio.chown, path, uid, gid)

    def truncate(self, path: str, length: int) -> None:
        self._call(self.aio.truncate, path, length)

    def utime(
        self,
        path: str,
        times: tuple[float, float] | None = None,
        *,
        ns: tuple[int, int] | None = None,
    ) -> None:
        self._portal.call(lambda: self.aio.utime(path, times, ns=ns))

    def getxattr(self, path: str, name: str) -> bytes:
        return self._call(self.aio.getxattr, path, name)

    def setxattr(self, path: str, name: str, value: bytes, flags: int = 0) -> None:
        self._call(self.aio.setxattr, path, name, value, flags)

    def listxattr(self, path: str) -> list[str]:
        return self._call(self.aio.listxattr, path)

    def removexattr(self, path: str, name: str) -> None:
        self._call(self.aio.removexattr, path, name)

    def statfs(self, path: str = "/") -> os.statvfs_result:
        return self._call(self.aio.statfs, path)
