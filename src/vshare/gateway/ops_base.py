"""What every 9P2000.L handler of a session stands on: its state, and the plumbing.

:class:`OperationsBase` holds a session's fid table, budgets and attachments, and the
helpers the handlers share: finding a fid, entering and dropping one, running backend work
(in a worker thread bounded per share, or right there when the session answers on its event
loop: see :meth:`Operations.inline` in ops.py), and the few backend steps more than one
handler takes (ownership of what is created, unlinking with the quota, applying an xattr
write, checking a fid's remembered name). The handlers themselves are in ops_fids.py,
ops_io.py, ops_names.py and ops_xattrs.py; ops.py puts them together.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, TypeVar

import anyio

from vshare.backend.base import Attr, Node, check_name
from vshare.gateway.context import GatewayContext
from vshare.gateway.fids import (
    INLINE,
    Attachment,
    Fid,
    Link,
    OnLoop,
    XattrWrite,
    qid_of,
    release,
    releasing_in_steps,
)
from vshare.protocol import GETATTR_BASIC, GETATTR_BTIME, NOFID, Rgetattr
from vshare.transport import PeerIdentity

T = TypeVar("T")

#: ``n_uname`` and gid meaning "none given" ((uid_t)-1).
NO_ID: Final = 0xFFFFFFFF
MAX_OFFSET: Final = (1 << 63) - 1
XATTR_SIZE_MAX: Final = 64 * 1024  # Linux's limit for one value
#: The fids ``close_all`` lets go or closes between two of its pauses (~2 µs a fid to let
#: go, ~10 µs to close: within a turn's slice).
CLOSE_STEP: Final = 16


def _close(fids: list[Fid]) -> int:
    """Close the backend handles of ``fids`` (clunked) and let go of them (they are
    freed here, not all together later); the links freed."""
    freed = 0
    for fid in fids:
        try:
            freed += fid.close()
        except OSError:
            pass
    fids.clear()
    return freed


def _close_roots(roots: Iterable[Attachment]) -> None:
    """Close each attachment's root that no fid holds any more."""
    for att in roots:
        if att.refs == 0:
            att.root.close()


class WouldBlock(Exception):
    """Raised by a handler answering on the event loop that would have to wait after all:
    it has changed nothing, and the session answers the request again in a task."""


def os_error(code: int) -> OSError:
    """The ``OSError`` for errno ``code``, with its message, as the session answers it."""
    return OSError(code, os.strerror(code))


class OperationsBase:
    """State and plumbing of one session's handlers."""

    def __init__(
        self, ctx: GatewayContext, identity: PeerIdentity, session_id: int, key: str = ""
    ) -> None:
        """``key``: whom budgets charge (default: ``ctx.identity_key(identity)``)."""
        self.ctx = ctx
        self.backend = ctx.backend
        self.identity = identity
        self.session_id = session_id
        key = key or ctx.identity_key(identity)
        #: Fids held: EMFILE past the session's or identity's share (see context.py).
        self.fid_budget = ctx.budgets.fids.account(key, session_id, str(identity))
        #: Byte-range locks held: ENOLCK past the session's or identity's share.
        self.lock_budget = ctx.budgets.locks.account(key, session_id, str(identity))
        self.msize = ctx.config.msize
        self.fids: dict[int, Fid] = {}
        #: Links a request answered on the event loop stopped letting go of (a chain too
        #: deep for one step: ``fids.RELEASE_STEP``), each with one reference to drop; the
        #: session lets go of them after the reply (:meth:`let_go_of_put_off`). Still
        #: charged to the fid budget until then.
        self.put_off: list[Link] = []
        self.on_loop = OnLoop(self.put_off)  # what INLINE is set to on the loop
        self._attachments: set[Attachment] = set()
        self.squash = ctx.config.ownership == "squash"
        #: Whether metadata requests answered on the event loop make their backend calls
        #: there (set by :class:`~vshare.gateway.ops.Operations`); if not, only what the
        #: backend answers from memory is (:meth:`_run_nowait`).
        self.metadata_inline = False

    # --- plumbing --------------------------------------------------------------------

    async def _run(self, att: Attachment, fn: Callable[..., T], *args: Any) -> T:
        if INLINE.get():
            return fn(*args)
        return await att.limiter.run(fn, *args)

    async def _run_nowait(
        self, att: Attachment, nowait: Callable[..., T | None], fn: Callable[..., T], *args: Any
    ) -> T:
        """``fn(*args)`` as :meth:`_run`; but where the backend's metadata is not cheap,
        what ``nowait(*args)`` answers from memory first, with no worker thread. On the
        event loop, only that: else :class:`WouldBlock` (the session asks again in a task)."""
        if not self.metadata_inline:
            out = nowait(*args)
            if out is not None:
                return out
            if INLINE.get():
                raise WouldBlock
        return await self._run(att, fn, *args)

    def _fid(self, fid: int) -> Fid:
        try:
            return self.fids[fid]
        except KeyError:
            raise os_error(errno.EBADF) from None

    def _new_fid_allowed(self, newfid: int) -> None:
        if newfid == NOFID:
            raise os_error(errno.EINVAL)
        if newfid in self.fids:
            raise os_error(errno.EBADF)
        if not self.fid_budget.fits():
            raise os_error(errno.EMFILE)

    def _add_fid(self, number: int, fid: Fid) -> None:
        """Enter ``fid`` under ``number``, which must be free. The session runs requests
        naming one fid in order, so the handler's check at its start still holds here; a
        number in use is refused rather than leak the fid it holds (the caller closes)."""
        if number in self.fids:
            raise os_error(errno.EBADF)
        if not self.fid_budget.take():  # checked at the start too; others ran meanwhile
            raise os_error(errno.EMFILE)
        fid.att.refs += 1
        self.fids[number] = fid
        self.ctx.metrics.fids.inc()
        self._hold(fid.att, fid.node)

    def _drop_fid(self, number: int) -> Fid:
        try:
            fid = self.fids.pop(number)
        except KeyError:
            raise os_error(errno.EBADF) from None
        self.ctx.metrics.fids.dec()
        self.fid_budget.give()
        fid.att.refs -= 1
        self._let_go(fid.att, fid.node)
        return fid

    @staticmethod
    def _hold(att: Attachment, node: Node) -> None:
        """Count a fid holding a regular file: unlinked, its bytes stay in the share's
        usage until the last such fid is gone (quota.py)."""
        if node.file_type == stat.S_IFREG:
            att.usage.hold(node.qid_path)

    @staticmethod
    def _let_go(att: Attachment, node: Node) -> None:
        if node.file_type == stat.S_IFREG:
            att.usage.let_go(node.qid_path)

    @staticmethod
    def _writable(fid: Fid) -> None:
        if not fid.att.writable:
            raise os_error(errno.EROFS)

    def _dir(self, fid: Fid) -> Node:
        if fid.is_open:
            raise os_error(errno.EBUSY)
        if not fid.node.is_dir:
            raise os_error(errno.ENOTDIR)
        return fid.node

    def _dir_to_change(self, dfid: int, *names: str) -> tuple[Fid, Node]:
        """The directory fid a name-changing request works in, its node, after the checks
        they all need: an unopened directory, single-component names, a writable share."""
        fid = self._fid(dfid)
        parent = self._dir(fid)
        for name in names:
            check_name(name)
        self._writable(fid)
        return fid, parent

    async def _run_shielded(self, att: Attachment, fn: Callable[..., T], *args: Any) -> T:
        """:meth:`_run`, carried out even if the request is cancelled meanwhile (no cancel
        scope on the event loop: nothing there awaits)."""
        if INLINE.get():
            return fn(*args)
        with anyio.CancelScope(shield=True):  # the wait for the share's bound too
            result = await att.limiter.run(fn, *args)
        return result  # noqa: RET504 (mypy: a cancel scope could swallow the return)

    async def _close_shielded(self, att: Attachment, *nodes: Node) -> None:
        """Close nodes no fid holds any more, even if the request is being cancelled."""

        def close() -> None:
            for node in nodes:
                node.close()

        await self._run_shielded(att, close)

    async def _leave_shielded(self, att: Attachment, node: Node, *links: Link | None) -> None:
        """Close a node no fid holds any more and drop references to links (a fid's old
        place, or a place never entered), even if the request is being cancelled; the
        links freed go back to the budget."""

        def close() -> int:
            node.close()
            return sum([release(link) for link in links])

        self.fid_budget.give(await self._run_shielded(att, close))

    async def let_go_of_put_off(self, pause: Callable[[], Awaitable[None]] | None) -> None:
        """Let go of the links put off (:attr:`put_off`), ``RELEASE_STEP`` at a time with
        ``pause`` awaited between steps; with no ``pause``, all at once."""
        put_off = self.put_off
        while put_off:
            link = put_off.pop()
            if pause is None:
                self.fid_budget.give(release(link))
                continue
            with releasing_in_steps(self.on_loop):
                self.fid_budget.give(release(link))
            await pause()

    async def close_all(self, pause: Callable[[], Awaitable[None]] | None = None) -> None:
        """Clunk every fid (session end, Tversion, a session whose access was revoked).

        The work goes ``CLOSE_STEP`` fids at a time with ``pause`` awaited between steps
        (the session's turn: the others go first when its slice is over). In one step,
        16,000 fids held every tenant for 11 ms to be let go, and 10 ms more to be freed
        at the end; and a worker thread closing them took the GIL from the loop 5 ms at a
        time (the interpreter's switch interval). So on a backend whose metadata calls are
        cheap (``metadata_inline``) the closing is done here too, and each step's fids are
        freed with it; on another backend, or with no ``pause``, in a worker thread."""
        fids = list(self.fids.values())
        self.fids.clear()
        count = len(fids)
        steps = [fids[i : i + CLOSE_STEP] for i in range(0, count, CLOSE_STEP)]
        del fids  # each fid is freed with its step
        self.ctx.metrics.fids.dec(count)
        self.fid_budget.give(count)
        roots: dict[int, Attachment] = {}
        for step in steps:
            for fid in step:
                fid.att.refs -= 1
                self._let_go(fid.att, fid.node)
                roots[id(fid.att)] = fid.att
            if pause is not None:
                await pause()
        if self.metadata_inline and (pause is not None or len(steps) <= 1):
            freed = 0
            for step in steps:  # a fid's chain of links is let go of in steps too
                with releasing_in_steps(self.on_loop):
                    freed += _close(step)
                if pause is not None:
                    await pause()
            await self.let_go_of_put_off(pause)
            _close_roots(roots.values())
        else:

            def close() -> int:
                closed = 0
                for step in steps:
                    closed += _close(step)
                    time.sleep(0)  # the GIL to the loop if it waits, not after 5 ms
                _close_roots(roots.values())
                return closed

            await self.let_go_of_put_off(pause)  # what a request on the loop put off
            freed = await self.ctx.workers.run(close)
        self.fid_budget.give(freed)
        self.ctx.locks.release_session(self.session_id)
        self.lock_budget.close()

    # --- backend steps more than one handler takes --------------------------------------

    def _own(self, att: Attachment, node: Node, gid: int, mode: int) -> None:
        """In ``passthrough`` ownership, give a new object its owners in one call: the
        attachment's uid (Tattach's n_uname) and the request's gid, each when given. A chown
        clears set-id bits: they are applied again after it (``setattr`` does owner, then
        mode). In ``squash`` ownership, what guests create belongs to the gateway's user."""
        if self.squash:
            return
        owners: dict[str, int] = {}
        if att.uid is not None:
            owners["uid"] = att.uid
        if gid != NO_ID:
            owners["gid"] = gid
        if not owners:
            return
        if mode & 0o6000 and not node.is_symlink:
            owners["mode"] = mode & 0o7777
        self.backend.setattr(node, **owners)

    def _unlink(self, att: Attachment, parent: Node, name: str, *, rmdir: bool) -> None:
        """Unlink, and give the quota back the bytes of a file's last link."""
        freed = qid_path = 0
        if not rmdir and att.share.size_gib is not None:
            try:
                probe = self.backend.lookup(parent, name)
                try:
                    attr = self.backend.getattr(probe)
                finally:
                    probe.close()
                if stat.S_ISREG(attr.mode) and attr.nlink == 1:
                    freed, qid_path = attr.size, attr.qid_path
            except OSError:
                pass  # the unlink below reports what is wrong
        self.backend.unlink(parent, name, rmdir=rmdir)
        if freed:
            att.usage.unlinked(qid_path, freed)  # now, or when the last fid on it goes

    def _apply_xattr(self, fid: Fid, pending: XattrWrite) -> None:
        if len(pending.data) != pending.size:
            raise os_error(errno.EINVAL)  # the client wrote less than it announced
        if pending.size == 0:
            # How Linux says removexattr (size 0, XATTR_REPLACE), as QEMU's 9p reads it.
            self.backend.removexattr(fid.node, pending.name)
        else:
            self.backend.setxattr(fid.node, pending.name, bytes(pending.data), pending.flags)

    def _check_still_named(self, fid: Fid) -> tuple[Node, str]:
        """The directory and name the fid was walked by, after checking that the name
        still names the fid's file: someone may have renamed or replaced it meanwhile, and
        then the name is stale (ESTALE). Runs in the worker thread, as the change it
        guards does."""
        assert fid.up is not None and fid.name is not None
        parent, name = fid.up.node, fid.name
        probe = self.backend.lookup(parent, name)
        same = probe.qid_path == fid.node.qid_path
        probe.close()
        if not same:
            raise os_error(errno.ESTALE)
        return parent, name

    def _rgetattr(self, fid: Fid, a: Attr) -> Rgetattr:
        uid, gid = (fid.att.share.uid, fid.att.share.gid) if self.squash else (a.uid, a.gid)
        valid = GETATTR_BASIC | (GETATTR_BTIME if a.btime_ns else 0)
        return Rgetattr(
            valid, qid_of(stat.S_IFMT(a.mode), a.qid_path), a.mode, uid, gid, a.nlink, a.rdev,
            a.size, a.blksize, a.blocks, a.atime_ns // 1_000_000_000, a.atime_ns % 1_000_000_000,
            a.mtime_ns // 1_000_000_000, a.mtime_ns % 1_000_000_000,
            a.ctime_ns // 1_000_000_000, a.ctime_ns % 1_000_000_000,
            a.btime_ns // 1_000_000_000, a.btime_ns % 1_000_000_000, a.generation,
            a.data_version,
        )  # fmt: skip
