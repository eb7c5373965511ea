"""An open file of a share (:class:`AsyncFile`) and ``open()``'s mode letters
(:func:`mode_to_flags`).

An :class:`AsyncFile` remembers its path, its open flags and the locks it took; a file whose
fid belongs to an older epoch is re-walked, re-opened (without O_CREAT/O_EXCL/O_TRUNC) and
has its locks re-taken before the request is retried. If a lock cannot be re-taken (another
owner took it while we had no gateway), the file's locks are forgotten and that request and
every later one on the file fail with EIO (``AsyncFile.lock_lost``): the application learns
it lost the lock, never two holders believing they have it. Reads and writes carry their
offset, so a retry does exactly what the first try did.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import anyio.abc

from vshare.client._session import Session, SessionKeeper, T, io_limit
from vshare.client._stat import StatResult, setattr_sec_nsec
from vshare.protocol import (
    DOTL_APPEND,
    DOTL_CREATE,
    DOTL_EXCL,
    DOTL_TRUNC,
    GETATTR_ALL,
    LOCK_BLOCKED,
    LOCK_FLAGS_BLOCK,
    LOCK_SUCCESS,
    LOCK_TYPE_RDLCK,
    LOCK_TYPE_UNLCK,
    LOCK_TYPE_WRLCK,
    SETATTR_SIZE,
    Rgetattr,
    Rgetlock,
    Rlock,
    Rlopen,
    Rread,
    Rwrite,
    Tfsync,
    Tgetattr,
    Tgetlock,
    Tlock,
    Tlopen,
    Tread,
    Tsetattr,
    Twrite,
)


def mode_to_flags(mode: str) -> int:
    """``open()``'s mode letters → ``os.O_*`` flags. Binary only: ``t`` is refused.

    Raises:
        ValueError: an unknown or contradictory mode.
    """
    letters = set(mode)
    if not letters <= set("rwaxb+") or len(mode) != len(letters):
        raise ValueError(f"invalid mode {mode!r} (binary modes only: r w a x, b, +)")
    kinds = letters & set("rwax")
    if len(kinds) != 1:
        raise ValueError(f"invalid mode {mode!r}: exactly one of r, w, a, x")
    kind = kinds.pop()
    plus = "+" in letters
    base = {
        "r": 0,
        "w": os.O_CREAT | os.O_TRUNC,
        "a": os.O_CREAT | os.O_APPEND,
        "x": os.O_CREAT | os.O_EXCL,
    }[kind]
    if plus:
        return base | os.O_RDWR
    return base | (os.O_RDONLY if kind == "r" else os.O_WRONLY)


_LOCK_TYPES = {"r": LOCK_TYPE_RDLCK, "w": LOCK_TYPE_WRLCK, "u": LOCK_TYPE_UNLCK}


@dataclass(eq=False)
class AsyncFile:
    """An open file of an :class:`AsyncShare`: ``read``/``write`` at a position that
    ``seek`` moves, ``pread``/``pwrite`` at explicit offsets (each Tread/Twrite carries
    its offset, so a retry after a reconnect repeats exactly), POSIX byte-range locks
    that are re-taken after a reconnect. Not for concurrent use of ``read``/``write``
    from several tasks (the position is shared); ``pread``/``pwrite`` are."""

    share: SessionKeeper
    parts: list[str]
    flags: int  # P9_DOTL flags it was opened with
    pos: int = 0
    fid: int = -1
    epoch: int = -1
    iounit: int = 0
    closed: bool = False
    #: Lock requests granted, in order, replayed on a new session.
    locks: list[tuple[int, int, int]] = field(default_factory=list)
    #: A lock could not be re-taken after a reconnect (another owner took it in the gap):
    #: every later operation on this file fails with EIO; only close() works.
    lock_lost: bool = False
    lock_owner: int = field(default_factory=os.getpid)
    client_id: str = "vshare"

    @property
    def path(self) -> str:
        return "/" + "/".join(self.parts)

    def _bind(self, s: Session, fid: int, iounit: int) -> None:
        self.fid, self.epoch = fid, s.epoch
        self.iounit = min(iounit or s.client.msize, io_limit(s.client.msize))

    async def _open_on(self, s: Session, flags: int) -> None:
        fid = await self.share._walk(s, self.parts)
        try:
            r = await s.client.call(Tlopen(fid, flags), Rlopen)
        except BaseException:
            await self.share._clunk(s, fid)
            raise
        self._bind(s, fid, r.iounit)

    async def _fid(self, s: Session) -> int:
        """The fid on session ``s``: rebuilt from the path if it belongs to an older one."""
        if self.closed:
            raise OSError(errno.EBADF, "file is closed")
        if self.lock_lost:
            raise OSError(errno.EIO, "a lock on this file was lost across a reconnect", self.path)
        if self.epoch != s.epoch:
            await self._open_on(s, self.flags & ~(DOTL_CREATE | DOTL_EXCL | DOTL_TRUNC))
            for ltype, start, length in self.locks:
                r = await s.client.call(
                    Tlock(self.fid, ltype, 0, start, length, self.lock_owner, self.client_id),
                    Rlock,
                )
                if r.status != LOCK_SUCCESS:
                    await self._lose_locks(s)
                    raise OSError(
                        errno.EIO, "a lock on this file was lost across a reconnect", self.path
                    )
        return self.fid

    async def _lose_locks(self, s: Session) -> None:
        """Another owner took a lock of ours while we had no gateway: forget our locks,
        drop the fid (and with it any lock re-taken before this one), and fail every later
        operation with EIO — as NFS does — rather than let two owners both believe they
        hold the lock."""
        self.lock_lost = True
        self.locks.clear()
        await self._release(s)
        self.epoch = -1

    async def _release(self, s: Session) -> None:
        """Unlock the whole file, then clunk its fid, waiting for both answers. A gateway
        keeps locks until they are unlocked or the session ends (a Tclunk does not drop
        them), so this is what the Linux client does on close: F_UNLCK over the file."""
        try:
            await s.client.call(
                Tlock(self.fid, LOCK_TYPE_UNLCK, 0, 0, 0, self.lock_owner, self.client_id), Rlock
            )
        except OSError:
            pass
        try:
            await s.client.clunk(self.fid)
        except OSError:
            pass

    async def _io(self, fn: Callable[[Session, int], Awaitable[T]]) -> T:
        async def op(s: Session, _: bool) -> T:
            return await fn(s, await self._fid(s))

        return await self.share._retry(op)

    async def _read_at(self, offset: int, count: int) -> bytes:
        async def one(s: Session, fid: int) -> bytes:
            r = await s.client.call(Tread(fid, offset, min(count, self.iounit)), Rread)
            return bytes(r.data)

        return await self._io(one)

    async def _write_at(self, offset: int, chunk: memoryview) -> int:
        async def one(s: Session, fid: int) -> int:
            r = await s.client.call(Twrite(fid, offset, chunk[: self.iounit]), Rwrite)
            return int(r.count)

        return await self._io(one)

    async def pread(self, size: int, offset: int) -> bytes:
        """Up to ``size`` bytes at ``offset``; fewer only at the end of the file."""
        out = bytearray()
        while len(out) < size:
            data = await self._read_at(offset + len(out), min(size - len(out), self.iounit))
            if not data:
                break
            out += data
        return bytes(out)

    async def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> int:
        """Write all of ``data`` at ``offset`` (with O_APPEND: at the end); returns its
        length."""
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            n = await self._write_at(offset + done, view[done : done + self.iounit])
            if n <= 0:
                raise OSError(errno.EIO, "the server wrote nothing")
            done += n
        return done

    async def read(self, size: int = -1) -> bytes:
        if size < 0:
            chunks = []
            while True:
                data = await self.pread(max(self.iounit, 1) * 4, self.pos)
                if not data:
                    break
                self.pos += len(data)
                chunks.append(data)
            return b"".join(chunks)
        data = await self.pread(size, self.pos)
        self.pos += len(data)
        return data

    async def write(self, data: bytes | bytearray | memoryview) -> int:
        n = await self.pwrite(data, self.pos)
        if self.flags & DOTL_APPEND:
            self.pos = (await self.stat()).st_size
        else:
            self.pos += n
        return n

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self.pos + offset
        elif whence == os.SEEK_END:
            pos = (await self.stat()).st_size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self.pos = pos
        return pos

    def tell(self) -> int:
        return self.pos

    async def stat(self) -> StatResult:
        async def one(s: Session, fid: int) -> StatResult:
            r = await s.client.call(Tgetattr(fid, GETATTR_ALL), Rgetattr)
            return StatResult.from_rgetattr(r)

        return await self._io(one)

    async def setattr(self, msg: Tsetattr) -> None:
        async def one(s: Session, fid: int) -> None:
            await s.client.rpc(msg._replace(fid=fid))

        await self._io(one)

    async def truncate(self, length: int | None = None) -> None:
        size = self.pos if length is None else length
        await self.setattr(setattr_sec_nsec(SETATTR_SIZE, size=size))

    async def fsync(self, datasync: bool = False) -> None:
        async def one(s: Session, fid: int) -> None:
            await s.client.rpc(Tfsync(fid, int(datasync)))

        await self._io(one)

    async def lock(
        self,
        kind: str,
        start: int = 0,
        length: int = 0,
        *,
        blocking: bool = False,
        owner: int | None = None,
    ) -> None:
        """POSIX byte-range lock: ``kind`` "r", "w" or "u" (unlock); ``length`` 0 is to
        the end. Not ``blocking``: EAGAIN when held elsewhere; ``blocking``: polls with
        backoff (the gateway answers "blocked" at once rather than holding the request).
        Granted locks are remembered and re-taken after a reconnect."""
        ltype = _LOCK_TYPES[kind]
        proc = self.lock_owner if owner is None else owner
        delay = 0.005
        while True:

            async def one(s: Session, fid: int) -> int:
                flags = LOCK_FLAGS_BLOCK if blocking else 0
                msg = Tlock(fid, ltype, flags, start, length, proc, self.client_id)
                return int((await s.client.call(msg, Rlock)).status)

            status = await self._io(one)
            if status == LOCK_SUCCESS:
                if ltype == LOCK_TYPE_UNLCK and start == 0 and length == 0:
                    self.locks.clear()
                else:
                    self.locks.append((ltype, start, length))
                return
            if status != LOCK_BLOCKED:
                raise OSError(errno.ENOLCK, f"lock failed (status {status})")
            if not blocking:
                raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), self.path)
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def getlock(self, kind: str = "w", start: int = 0, length: int = 0) -> Rgetlock:
        """The first lock that would conflict with ``kind`` on the range, or a reply whose
        ``type`` is UNLCK when none would."""

        async def one(s: Session, fid: int) -> Rgetlock:
            msg = Tgetlock(fid, _LOCK_TYPES[kind], start, length, self.lock_owner, self.client_id)
            return await s.client.call(msg, Rgetlock)

        return await self._io(one)

    async def close(self) -> None:
        """Release the file's locks and clunk the fid. Idempotent."""
        if self.closed:
            return
        self.closed = True
        s = self.share._session
        if s is not None and s.epoch == self.epoch:
            if self.locks and s.client.alive:
                # Wait for both: the caller may count on the locks being free once close
                # returns (another opener taking them next).
                await self._release(s)
            else:
                await self.share._clunk(s, self.fid)

    async def __aenter__(self) -> AsyncFile:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
