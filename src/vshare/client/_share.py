"""An attached share with an os-like async API, that survives gateway restarts.

Design:

- :class:`AsyncShare` owns one task group. A supervisor task in it keeps one session (a
  :class:`~._client.Client`, its attached root fid, an epoch number) alive: when the
  connection dies it reconnects with backoff, to the same URI first and then the next in
  the list, and attaches again. Every operation runs through :meth:`AsyncShare._retry`,
  which waits for a live session (at most ``reconnect_timeout`` seconds after the loss;
  then EIO) and re-runs the operation when the connection died under it.
- Path operations are stateless on the server: each walks from the root (≤ 16 names per
  Twalk, 9P's limit), does its request and clunks, so re-running one is safe. Operations
  whose fate is unknown when the connection died (mkdir, create, symlink, link, rename,
  unlink, rmdir) are re-run with ``retried=True`` and read the tell-tale error (EEXIST,
  ENOENT) as "the first attempt happened" after checking the result is the one expected.
- Open files (:class:`AsyncFile`) remember their path, their open flags and the locks
  they took; a file whose fid belongs to an older epoch is re-walked, re-opened (without
  O_CREAT/O_EXCL/O_TRUNC) and has its locks re-taken before the request is retried.
  If a lock cannot be re-taken (another owner took it while we had no gateway), the
  file's locks are forgotten and that request and every later one on the file fail with
  EIO (``AsyncFile.lock_lost``): the application learns it lost the lock, never two
  holders believing they have it.
  Reads and writes carry their offset, so a retry does exactly what the first try did.
- Symlinks are data: the gateway never follows them, so :meth:`AsyncShare.stat` is
  ``lstat``, and a path through a symlink fails (ELOOP/ENOTDIR from the server).
"""

from __future__ import annotations

import errno
import logging
import os
import stat as stat_mod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.abc

from vshare.client._client import Client, ConnectionLost
from vshare.client._paths import components, split_parent
from vshare.protocol import (
    AT_REMOVEDIR,
    DOTL_APPEND,
    DOTL_CREATE,
    DOTL_DIRECTORY,
    DOTL_EXCL,
    DOTL_RDONLY,
    DOTL_TRUNC,
    GETATTR_ALL,
    GETATTR_BTIME,
    IOHDRSZ,
    LOCK_BLOCKED,
    LOCK_FLAGS_BLOCK,
    LOCK_SUCCESS,
    LOCK_TYPE_RDLCK,
    LOCK_TYPE_UNLCK,
    LOCK_TYPE_WRLCK,
    MAXWELEM,
    NOFID,
    SETATTR_ATIME,
    SETATTR_ATIME_SET,
    SETATTR_GID,
    SETATTR_MODE,
    SETATTR_MTIME,
    SETATTR_MTIME_SET,
    SETATTR_SIZE,
    SETATTR_UID,
    Dirent,
    Qid,
    Rgetattr,
    Rgetlock,
    Rlcreate,
    Rlock,
    Rlopen,
    Rmkdir,
    Rmknod,
    Rread,
    Rreaddir,
    Rreadlink,
    Rstatfs,
    Rsymlink,
    Rwalk,
    Rwrite,
    Rxattrwalk,
    Tattach,
    Tfsync,
    Tgetattr,
    Tgetlock,
    Tlcreate,
    Tlink,
    Tlock,
    Tlopen,
    Tmkdir,
    Tmknod,
    Tread,
    Treaddir,
    Treadlink,
    Tremove,
    Trename,
    Trenameat,
    Tsetattr,
    Tstatfs,
    Tsymlink,
    Tunlinkat,
    Twalk,
    Twrite,
    Txattrcreate,
    Txattrwalk,
    os_to_dotl_flags,
    unpack_dirents,
)
from vshare.transport import TlsSettings, connect

T = TypeVar("T")
log = logging.getLogger("vshare.client")


def io_limit(msize: int) -> int:
    """The payload of one Tread/Twrite: what ``msize`` leaves after the I/O header, rounded
    down to whole 4 KiB pages, so that a large transfer reaches the server as page-aligned
    pieces (no read-modify-write of a partial page at every boundary)."""
    room = msize - IOHDRSZ
    return room - room % 4096 if room >= 8192 else room


#: Linux's "no uid given" in Tattach.
NONUNAME = 0xFFFFFFFF
DEFAULT_MSIZE = 1024 * 1024 + IOHDRSZ
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0
#: Concurrent getattrs of one scandir.
_SCAN_PARALLEL = 32
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOSYS)


@dataclass(frozen=True, slots=True)
class StatResult:
    """What Tgetattr says about a file, in ``os.stat_result``'s names."""

    st_mode: int
    st_ino: int
    st_nlink: int
    st_uid: int
    st_gid: int
    st_size: int
    st_atime_ns: int
    st_mtime_ns: int
    st_ctime_ns: int
    st_blksize: int
    st_blocks: int
    st_rdev: int
    qid: Qid
    st_dev: int = 0
    #: The birth time, when the server reports one (GETATTR_BTIME); None otherwise.
    st_birthtime_ns: int | None = None

    @property
    def st_atime(self) -> float:
        return self.st_atime_ns / 1e9

    @property
    def st_mtime(self) -> float:
        return self.st_mtime_ns / 1e9

    @property
    def st_ctime(self) -> float:
        return self.st_ctime_ns / 1e9

    @classmethod
    def from_rgetattr(cls, r: Rgetattr) -> StatResult:
        return cls(
            st_mode=r.mode, st_ino=r.qid.path, st_nlink=r.nlink, st_uid=r.uid, st_gid=r.gid,
            st_size=r.size, st_atime_ns=r.atime_sec * 10**9 + r.atime_nsec,
            st_mtime_ns=r.mtime_sec * 10**9 + r.mtime_nsec,
            st_ctime_ns=r.ctime_sec * 10**9 + r.ctime_nsec, st_blksize=r.blksize,
            st_blocks=r.blocks, st_rdev=r.rdev, qid=r.qid,
            st_birthtime_ns=(r.btime_sec * 10**9 + r.btime_nsec
                             if r.valid & GETATTR_BTIME else None),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One entry of :meth:`AsyncShare.scandir`; ``stat`` is None when not asked for or
    when the entry vanished between the listing and its getattr."""

    name: str
    path: str
    d_type: int
    qid: Qid
    stat: StatResult | None = None

    def is_dir(self) -> bool:
        return self.d_type == 4  # DT_DIR

    def is_file(self) -> bool:
        return self.d_type == 8  # DT_REG

    def is_symlink(self) -> bool:
        return self.d_type == 10  # DT_LNK


@dataclass(slots=True)
class Session:
    client: Client
    root: int
    epoch: int
    uri: str


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
    base = {"r": 0, "w": os.O_CREAT | os.O_TRUNC, "a": os.O_CREAT | os.O_APPEND,
            "x": os.O_CREAT | os.O_EXCL}[kind]  # fmt: skip
    if plus:
        return base | os.O_RDWR
    return base | (os.O_RDONLY if kind == "r" else os.O_WRONLY)


class AsyncShare:
    """An attached share (see the module note). Make one with :func:`open_share`.

    Every method raises ``OSError`` with the gateway's errno; EIO when no gateway could
    be reached for ``reconnect_timeout`` seconds. Paths are relative to the share root
    (a leading ``/`` is the same); ``..`` above the root is EINVAL (see ``_paths.py``).
    Safe to use from many tasks at once: requests are multiplexed by tag.
    """

    def __init__(
        self,
        uris: Sequence[str],
        share: str,
        *,
        msize: int = DEFAULT_MSIZE,
        reconnect_timeout: float = 30.0,
        uname: str = "",
        n_uname: int = NONUNAME,
        tls: TlsSettings | None = None,
    ) -> None:
        if not uris:
            raise ValueError("at least one gateway URI is needed")
        self.uris = list(uris)
        self.share = share
        self.reconnect_timeout = reconnect_timeout
        self._msize = msize
        self._uname = uname
        self._n_uname = n_uname
        self._tls = tls
        self._session: Session | None = None
        self._ready = anyio.Event()
        self._lost_since = 0.0
        self._last_error: BaseException | None = None
        self._epoch = 0
        self._closed = False
        self._uri_index = 0
        #: The server lacks Tunlinkat/Trenameat: use Tremove/Trename (as Linux does).
        self._no_at = False
        #: How many times a session was re-established (for tests and metrics).
        self.reconnects = 0
        #: The longest time between a loss and the next session, in seconds.
        self.longest_pause = 0.0

    # --- sessions -----------------------------------------------------------------------

    @property
    def msize(self) -> int:
        s = self._session
        return s.client.msize if s is not None else self._msize

    @property
    def iounit(self) -> int:
        """The most payload one Tread/Twrite carries."""
        return io_limit(self.msize)

    async def _run_session(self, uri: str, on_ready: Callable[[Session], None]) -> None:
        """Connect, negotiate, attach, call ``on_ready``, and return when the connection
        dies. Raises what connecting or attaching raised."""
        conn = await connect(uri, tls=self._tls)
        client = Client(conn, self._msize)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client._reader)
                tg.start_soon(client._resend_clunks)
                await client.version(self._msize)
                root = client.new_fid()
                await client.rpc(Tattach(root, NOFID, self._uname, self.share, self._n_uname))
                self._epoch += 1
                on_ready(Session(client, root, self._epoch, uri))
        except BaseExceptionGroup as group:
            raise _single(group) from None
        finally:
            with anyio.CancelScope(shield=True):
                await conn.aclose()

    def _on_ready(self, session: Session) -> None:
        if self._session is None and self._epoch > 1:
            self.reconnects += 1
            pause = anyio.current_time() - self._lost_since
            self.longest_pause = max(self.longest_pause, pause)
            log.warning("share %r: re-attached at %s after %.3f s without a gateway",
                        self.share, session.uri, pause)  # fmt: skip
        self._session = session
        self._ready.set()

    def _mark_lost(self, session: Session | None) -> None:
        if session is not None and self._session is session:
            self._session = None
            self._lost_since = anyio.current_time()
            self._ready = anyio.Event()

    async def _supervise(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        started = False
        delay = _BACKOFF_FIRST
        failures = 0
        while not self._closed:
            uri = self.uris[self._uri_index]
            was_ready = False

            def ready(session: Session) -> None:
                nonlocal was_ready, started
                was_ready = True
                self._on_ready(session)
                if not started:
                    started = True
                    task_status.started()

            try:
                await self._run_session(uri, ready)
            except (OSError, ValueError) as exc:
                self._last_error = exc
                if not started:
                    failures += 1
                    if failures >= len(self.uris):
                        raise _first_error(exc, self.uris, self.share) from None
            self._mark_lost(self._session)
            if was_ready:
                delay = _BACKOFF_FIRST  # retry the same gateway at once, it may be back
                failures = 0
                continue
            if not started:
                self._uri_index = (self._uri_index + 1) % len(self.uris)
                continue
            # Same URI first, then the next: a restarted gateway keeps its socket path.
            self._uri_index = (self._uri_index + 1) % len(self.uris)
            await anyio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)

    async def _current(self) -> Session:
        while True:
            if self._closed:
                raise OSError(errno.EBADF, "the share is closed")
            s = self._session
            if s is not None:
                if s.client.alive:
                    return s
                self._mark_lost(s)
            remaining = self._lost_since + self.reconnect_timeout - anyio.current_time()
            if remaining <= 0:
                raise OSError(
                    errno.EIO,
                    f"no gateway reachable for {self.reconnect_timeout:g} s"
                    f" (last error: {self._last_error})",
                )
            with anyio.move_on_after(remaining):
                await self._ready.wait()

    async def _retry(self, op: Callable[[Session, bool], Awaitable[T]]) -> T:
        """Run ``op(session, retried)`` until it finishes on a live connection."""
        retried = False
        while True:
            s = await self._current()
            try:
                return await op(s, retried)
            except ConnectionLost:
                self._mark_lost(s)
                retried = True

    async def aclose(self) -> None:
        self._closed = True

    # --- fids, for clients that keep their own (the FUSE client) -------------------------

    @property
    def session(self) -> Session | None:
        """The live session, if there is one now."""
        s = self._session
        return s if s is not None and s.client.alive else None

    async def on_session(self, op: Callable[[Session, bool], Awaitable[T]]) -> T:
        """Run ``op(session, retried)`` on a live session, again on the next one when the
        connection dies under it (``retried`` is then True). Fids belong to one session:
        a caller that keeps fids across calls ties each to ``session.epoch``."""
        return await self._retry(op)

    async def walk_from_root(self, s: Session, parts: Sequence[str]) -> int:
        """A new fid on session ``s`` for ``parts`` below the share root."""
        if not parts:
            fid = s.client.new_fid()
            try:
                await s.client.call(Twalk(s.root, fid, ()), Rwalk)
            except OSError:
                s.client.release_fid(fid)
                raise
            return fid
        return await self._walk(s, parts)

    async def walk_from(self, s: Session, fid: int, names: tuple[str, ...]) -> int:
        """A new fid on session ``s`` for ``names`` (≤ 16) below the fid ``fid``; ENOENT
        when a name is missing."""
        new = s.client.new_fid()
        try:
            r = await s.client.call(Twalk(fid, new, names), Rwalk)
        except OSError:
            s.client.release_fid(new)
            raise
        if len(r.qids) < len(names):
            s.client.release_fid(new)  # a partial walk creates no fid
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), "/".join(names))
        return new

    async def forget_fid(self, s: Session, fid: int) -> None:
        """Clunk ``fid`` without waiting for the answer (nothing to learn from it)."""
        await self._clunk(s, fid)

    async def unlink_in(self, s: Session, dfid: int, name: str, flags: int) -> None:
        """Tunlinkat of ``name`` in the directory ``dfid``; on a server without it (diod
        1.0 answers EOPNOTSUPP) Tremove of a walked fid, as Linux does, and from then on."""
        if not self._no_at:
            try:
                await s.client.rpc(Tunlinkat(dfid, name, flags))
                return
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                self._no_at = True
        fid = s.client.new_fid()
        try:
            await s.client.call(Twalk(dfid, fid, (name,)), Rwalk)
        except OSError:
            s.client.release_fid(fid)
            raise
        try:
            await s.client.rpc(Tremove(fid))  # clunks the fid whatever the answer
        finally:
            s.client.release_fid(fid)

    async def rename_in(self, s: Session, sfid: int, sname: str, dfid: int, dname: str) -> None:
        """Trenameat; on a server without it, Trename of a walked fid (see :meth:`unlink_in`)."""
        if not self._no_at:
            try:
                await s.client.rpc(Trenameat(sfid, sname, dfid, dname))
                return
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                self._no_at = True
        fid = s.client.new_fid()
        try:
            await s.client.call(Twalk(sfid, fid, (sname,)), Rwalk)
        except OSError:
            s.client.release_fid(fid)
            raise
        try:
            await s.client.rpc(Trename(fid, dfid, dname))
        finally:
            await self._clunk(s, fid)

    # --- walking ------------------------------------------------------------------------

    async def _walk(self, s: Session, parts: Sequence[str]) -> int:
        """A new fid for ``parts`` (from the root), in batches of ≤ 16 names."""
        client = s.client
        fid = client.new_fid()
        try:
            first = list(parts[:MAXWELEM])
            r = await client.call(Twalk(s.root, fid, tuple(first)), Rwalk)
        except OSError:
            client.release_fid(fid)
            raise
        if len(r.qids) < len(first):
            client.release_fid(fid)  # a partial walk creates no fid
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), "/".join(parts))
        done = len(first)
        try:
            while done < len(parts):
                batch = tuple(parts[done : done + MAXWELEM])
                r = await client.call(Twalk(fid, fid, batch), Rwalk)
                if len(r.qids) < len(batch):
                    raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), "/".join(parts))
                done += len(batch)
        except ConnectionLost:
            raise
        except OSError:
            await self._clunk(s, fid)
            raise
        return fid

    async def _clunk(self, s: Session, fid: int) -> None:
        if s.client.alive:
            try:
                await s.client.clunk_nowait(fid)
            except OSError:
                pass  # a fid is gone after Tclunk whatever the answer

    async def _with_fid(self, path: str, fn: Callable[[Session, int, bool], Awaitable[T]]) -> T:
        parts = components(path)

        async def op(s: Session, retried: bool) -> T:
            fid = await self._walk(s, parts)
            try:
                return await fn(s, fid, retried)
            finally:
                await self._clunk(s, fid)

        return await self._retry(op)

    # --- metadata -----------------------------------------------------------------------

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
        await self._setattr(path, _setattr_msg(SETATTR_MODE, mode=mode))

    async def chown(self, path: str, uid: int, gid: int) -> None:
        """``-1`` leaves that id unchanged (as ``os.chown``)."""
        valid = (SETATTR_UID if uid != -1 else 0) | (SETATTR_GID if gid != -1 else 0)
        await self._setattr(path, _setattr_msg(valid, uid=max(uid, 0), gid=max(gid, 0)))

    async def truncate(self, path: str, length: int) -> None:
        await self._setattr(path, _setattr_msg(SETATTR_SIZE, size=length))

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
                (r.bsize, r.bsize, r.blocks, r.bfree, r.bavail, r.files, r.ffree, r.ffree,
                 0, r.namelen)
            )  # fmt: skip

        return await self._with_fid(path, fn)

    # --- directories --------------------------------------------------------------------

    async def _readdir(self, s: Session, fid: int) -> list[Dirent]:
        await s.client.call(Tlopen(fid, DOTL_RDONLY | DOTL_DIRECTORY), Rlopen)
        out: list[Dirent] = []
        offset = 0
        count = s.client.msize - IOHDRSZ
        while True:
            r = await s.client.call(Treaddir(fid, offset, count), Rreaddir)
            entries = unpack_dirents(r.data)
            if not entries:
                return out
            out.extend(e for e in entries if e.name not in (".", ".."))
            offset = entries[-1].offset

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

    async def xattr_read(self, s: Session, fid: int, name: str) -> bytes:
        xfid = s.client.new_fid()
        try:
            r = await s.client.call(Txattrwalk(fid, xfid, name), Rxattrwalk)
        except OSError:
            s.client.release_fid(xfid)
            raise
        try:
            out = bytearray()
            while len(out) < r.size:
                want = min(r.size - len(out), s.client.msize - IOHDRSZ)
                data = (await s.client.call(Tread(xfid, len(out), want), Rread)).data
                if not data:
                    break
                out += data
            return bytes(out)
        finally:
            await self._clunk(s, xfid)

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


async def xattr_write(s: Session, fid: int, name: str, value: bytes, flags: int) -> None:
    client = s.client
    xfid = client.new_fid()
    try:
        await client.call(Twalk(fid, xfid, ()), Rwalk)
    except OSError:
        client.release_fid(xfid)
        raise
    try:
        await client.rpc(Txattrcreate(xfid, name, len(value), flags))
        done = 0
        while done < len(value):
            chunk = value[done : done + client.msize - IOHDRSZ]
            done += (await client.call(Twrite(xfid, done, chunk), Rwrite)).count
    except BaseException:
        try:
            await client.clunk(xfid)
        except OSError:
            pass
        raise
    await client.clunk(xfid)  # commits the value: its error is the setxattr's


def _setattr_msg(
    valid: int, *, mode: int = 0, uid: int = 0, gid: int = 0, size: int = 0,
    atime: tuple[int, int] = (0, 0), mtime: tuple[int, int] = (0, 0),
) -> Tsetattr:  # fmt: skip
    return Tsetattr(0, valid, mode, uid, gid, size, atime[0], atime[1], mtime[0], mtime[1])


def utime_msg(times: tuple[float, float] | None, ns: tuple[int, int] | None) -> Tsetattr:
    """The Tsetattr (fid 0, to be replaced) of ``os.utime(path, times, ns=ns)``."""
    if times is not None and ns is not None:
        raise ValueError("give times or ns, not both")
    if times is not None:
        ns = (int(times[0] * 1e9), int(times[1] * 1e9))
    if ns is None:
        return _setattr_msg(SETATTR_ATIME | SETATTR_MTIME)
    return _setattr_msg(
        SETATTR_ATIME | SETATTR_MTIME | SETATTR_ATIME_SET | SETATTR_MTIME_SET,
        atime=divmod(ns[0], 10**9), mtime=divmod(ns[1], 10**9),
    )  # fmt: skip


def setattr_msg(
    valid: int, *, mode: int = 0, uid: int = 0, gid: int = 0, size: int = 0,
    atime_ns: int = 0, mtime_ns: int = 0,
) -> Tsetattr:  # fmt: skip
    """A Tsetattr (fid 0, to be replaced) from SETATTR_* bits and values."""
    return _setattr_msg(valid, mode=mode, uid=uid, gid=gid, size=size,
                        atime=divmod(atime_ns, 10**9), mtime=divmod(mtime_ns, 10**9))  # fmt: skip


_LOCK_TYPES = {"r": LOCK_TYPE_RDLCK, "w": LOCK_TYPE_WRLCK, "u": LOCK_TYPE_UNLCK}


@dataclass(eq=False)
class AsyncFile:
    """An open file of an :class:`AsyncShare`: ``read``/``write`` at a position that
    ``seek`` moves, ``pread``/``pwrite`` at explicit offsets (each Tread/Twrite carries
    its offset, so a retry after a reconnect repeats exactly), POSIX byte-range locks
    that are re-taken after a reconnect. Not for concurrent use of ``read``/``write``
    from several tasks (the position is shared); ``pread``/``pwrite`` are."""

    share: AsyncShare
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
        await self.setattr(_setattr_msg(SETATTR_SIZE, size=self.pos if length is None else length))

    async def fsync(self, datasync: bool = False) -> None:
        async def one(s: Session, fid: int) -> None:
            await s.client.rpc(Tfsync(fid, int(datasync)))

        await self._io(one)

    async def lock(
        self, kind: str, start: int = 0, length: int = 0, *, blocking: bool = False,
        owner: int | None = None,
    ) -> None:  # fmt: skip
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


def _single(group: BaseExceptionGroup[Any]) -> BaseException:
    """The one exception of a group (the usual case), else the group itself."""
    while isinstance(group, BaseExceptionGroup) and len(group.exceptions) == 1:
        group = group.exceptions[0]
    return group


def _first_error(exc: BaseException, uris: Sequence[str], share: str) -> OSError:
    where = ", ".join(uris)
    if isinstance(exc, OSError) and exc.errno is not None:
        why = exc.strerror or str(exc)
        return OSError(exc.errno, f"cannot attach share {share!r} at {where}: {why}")
    return OSError(errno.EIO, f"cannot attach share {share!r} at {where}: {exc}")


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
        [uris] if isinstance(uris, str) else list(uris), share, msize=msize,
        reconnect_timeout=reconnect_timeout, uname=uname, n_uname=n_uname, tls=tls,
    )  # fmt: skip
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
