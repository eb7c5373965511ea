"""The attached session under :class:`~._share.AsyncShare`: keeping it alive, and the fid
work every operation shares.

- :class:`SessionKeeper` owns one task group. A supervisor task in it keeps one session (a
  :class:`~._client.Client`, its attached root fid, an epoch number) alive: when the
  connection dies it reconnects with backoff, to the same URI first and then the next in
  the list, and attaches again. Every operation runs through :meth:`SessionKeeper._retry`,
  which waits for a live session (at most ``reconnect_timeout`` seconds after the loss;
  then EIO) and re-runs the operation when the connection died under it.
- Fid helpers on a given session: walks from the root (≤ 16 names per Twalk, 9P's limit)
  or from a fid, clunks that do not wait, unlink/rename in a directory fid (with the
  Tremove/Trename fallback for servers without the ``*at`` requests), xattr reads and
  writes. The FUSE client, which keeps fids of its own, uses these directly.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.abc

from vshare.client._client import Client, ConnectionLost
from vshare.client._paths import components
from vshare.protocol import (
    IOHDRSZ,
    MAXWELEM,
    NOFID,
    Dirent,
    Message,
    Rread,
    Rreaddir,
    Rwalk,
    Rwrite,
    Rxattrwalk,
    Tattach,
    Tread,
    Treaddir,
    Tremove,
    Trename,
    Trenameat,
    Tunlinkat,
    Twalk,
    Twrite,
    Txattrcreate,
    Txattrwalk,
    unpack_dirents,
)
from vshare.transport import TlsSettings, connect

T = TypeVar("T")
_R = TypeVar("_R", bound=Message)
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
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOSYS)


@dataclass(slots=True)
class Session:
    client: Client
    root: int
    epoch: int
    uri: str


class SessionKeeper:
    """One share's session, kept alive across connection losses (see the module note);
    the path operations are :class:`~._share.AsyncShare`'s, which adds them to this."""

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
            log.warning(
                "share %r: re-attached at %s after %.3f s without a gateway",
                self.share,
                session.uri,
                pause,
            )
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
            return await _walk_new(s, s.root, ())
        return await self._walk(s, parts)

    async def walk_from(self, s: Session, fid: int, names: tuple[str, ...]) -> int:
        """A new fid on session ``s`` for ``names`` (≤ 16) below the fid ``fid``; ENOENT
        when a name is missing."""
        new, r = await _with_new_fid(s, lambda n: Twalk(fid, n, names), Rwalk)
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
        if await self._sent_at(s, Tunlinkat(dfid, name, flags)):
            return
        fid = await _walk_new(s, dfid, (name,))
        try:
            await s.client.rpc(Tremove(fid))  # clunks the fid whatever the answer
        finally:
            s.client.release_fid(fid)

    async def rename_in(self, s: Session, sfid: int, sname: str, dfid: int, dname: str) -> None:
        """Trenameat; on a server without it, Trename of a walked fid (see :meth:`unlink_in`)."""
        if await self._sent_at(s, Trenameat(sfid, sname, dfid, dname)):
            return
        fid = await _walk_new(s, sfid, (sname,))
        try:
            await s.client.rpc(Trename(fid, dfid, dname))
        finally:
            await self._clunk(s, fid)

    async def _sent_at(self, s: Session, msg: Tunlinkat | Trenameat) -> bool:
        """Send ``msg`` and say True; False, without sending, once the server has shown
        it lacks the ``*at`` requests (EOPNOTSUPP or ENOSYS, remembered)."""
        if self._no_at:
            return False
        try:
            await s.client.rpc(msg)
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
            self._no_at = True
            return False
        return True

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

    # --- extended attributes, on a fid ------------------------------------------------

    async def xattr_read(self, s: Session, fid: int, name: str) -> bytes:
        xfid, r = await _with_new_fid(s, lambda n: Txattrwalk(fid, n, name), Rxattrwalk)
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


async def xattr_write(s: Session, fid: int, name: str, value: bytes, flags: int) -> None:
    client = s.client
    xfid = await _walk_new(s, fid, ())
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


async def read_dirents(s: Session, fid: int) -> list[Dirent]:
    """Every entry but ``.`` and ``..`` of the directory open at ``fid`` (Treaddir until
    an empty reply), in the server's order."""
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


async def _walk_new(s: Session, fid: int, names: tuple[()] | tuple[str]) -> int:
    """A new fid for ``fid`` itself (no names) or one name in it; the number is given back
    when the walk fails (a walk of one name either succeeds or fails whole)."""
    new, _ = await _with_new_fid(s, lambda n: Twalk(fid, n, names), Rwalk)
    return new


async def _with_new_fid(
    s: Session, request: Callable[[int], Message], reply: type[_R]
) -> tuple[int, _R]:
    """A new fid number, the reply to ``request(it)``, which makes that fid; the number is
    given back when the request fails (it then made nothing)."""
    new = s.client.new_fid()
    try:
        return new, await s.client.call(request(new), reply)
    except OSError:
        s.client.release_fid(new)
        raise


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
