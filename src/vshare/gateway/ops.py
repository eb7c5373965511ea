"""The 9P2000.L operations of one session: one handler per T-message.

Each handler takes the decoded request and returns the reply, or raises ``OSError`` whose
errno the session sends back in Rlerror. Blocking backend work runs in a worker thread,
bounded per share; a handler does all of its backend calls in one trip to that thread.

Confinement rests on three rules kept here and in the backend (see backend/posix.py):
every name from the wire goes through :func:`check_name` before a backend sees it; every
lookup is relative to a node the fid already holds; ``..`` is answered from the fid's
lineage, the directories it was walked through from the share root (and stays at the root
when already there: see fids.py), never by asking the backend for a parent.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Final, TypeVar

import anyio

from vshare.backend.base import TIME_NOW, Attr, Node, check_name
from vshare.gateway.context import GatewayContext, audit_log
from vshare.gateway.fids import Attachment, Fid, Link, XattrWrite, hold, node_qid, qid_of, release
from vshare.gateway.fids import walk as walk_names
from vshare.gateway.locks import Owner, TooManyLocks
from vshare.policy import decide, squash_mode
from vshare.protocol import (
    AT_REMOVEDIR,
    DOTL_TRUNC,
    GETATTR_BASIC,
    GETATTR_BTIME,
    IOHDRSZ,
    LOCK_BLOCKED,
    LOCK_SUCCESS,
    LOCK_TYPE_UNLCK,
    LOCK_TYPE_WRLCK,
    MESSAGE_TYPES,
    NOFID,
    SETATTR_ATIME,
    SETATTR_ATIME_SET,
    SETATTR_GID,
    SETATTR_MODE,
    SETATTR_MTIME,
    SETATTR_MTIME_SET,
    SETATTR_SIZE,
    SETATTR_UID,
    DirentPacker,
    Message,
    Qid,
    Rattach,
    Rclunk,
    Rfsync,
    Rgetattr,
    Rgetlock,
    Rlcreate,
    Rlink,
    Rlock,
    Rlopen,
    Rmkdir,
    Rmknod,
    Rread,
    Rreaddir,
    Rreadlink,
    Rremove,
    Rrename,
    Rrenameat,
    Rsetattr,
    Rstatfs,
    Rsymlink,
    Runlinkat,
    Rwalk,
    Rwrite,
    Rxattrcreate,
    Rxattrwalk,
    Tattach,
    Tauth,
    Tclunk,
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
    dotl_to_os_flags,
)
from vshare.transport import PeerIdentity

log = logging.getLogger("vshare.gateway")
T = TypeVar("T")

#: Set while the session answers a request on its event loop (see :meth:`Operations.inline`):
#: backend calls then run where they are, without a worker thread. A context variable, not
#: an attribute, so a request task that happens to run meanwhile keeps its own setting.
_INLINE: ContextVar[bool] = ContextVar("vshare_inline", default=False)

#: Requests that make no backend call at all (or, for Tread, none that may wait).
_NO_BACKEND: Final = frozenset({Tauth, Tlock, Tgetlock, Txattrcreate, Tread})
#: Requests whose backend calls are metadata only. Not here: data (read, write, readdir,
#: fsync), unlink and remove (freeing a large file's blocks can take long), attach.
_METADATA: Final = frozenset({
    Tgetattr, Twalk, Tclunk, Tstatfs, Treadlink, Tlopen, Tlcreate, Tsetattr, Tmkdir,
    Tsymlink, Tmknod, Tlink, Trename, Trenameat, Txattrwalk,
})  # fmt: skip

#: Of each request, the fields that name a fid creates or changes (beyond using it): a fid
#: it makes (attach, walk, xattrwalk), opens (lopen, lcreate, xattrcreate), moves (walk in
#: place, rename: its remembered path) or ends (clunk, remove); and the fids of what a
#: client may ask about in the same write: a directory it adds a name to (mkdir, symlink,
#: mknod, link: a Twalk to the new name follows), a file whose attributes it sets or links
#: (setattr, link: a Tgetattr follows). The session orders requests on one fid by this
#: table and :data:`FID_FIELDS` (see session.py): the promise of 9P2000.L.vshare. Removals
#: and renames are not here: nothing is pipelined after them, and ordering them would make
#: every walk from a directory wait for the unlinks running in it (create+unlink at 16 in
#: flight: 470 µs of gateway CPU each instead of 260).
FID_CHANGES: Final[dict[type, tuple[str, ...]]] = {
    Tattach: ("fid",), Twalk: ("newfid",), Txattrwalk: ("newfid",), Tlopen: ("fid",),
    Tlcreate: ("fid",), Txattrcreate: ("fid",), Tclunk: ("fid",), Tremove: ("fid",),
    Trename: ("fid",), Tmkdir: ("dfid",), Tsymlink: ("fid",), Tmknod: ("dfid",),
    Tlink: ("dfid", "fid"), Tsetattr: ("fid",),
}  # fmt: skip
#: Of each request, every field that names a fid (an attach's ``afid`` names none: it must
#: be NOFID).
FID_FIELDS: Final[dict[type, tuple[str, ...]]] = {
    t: tuple(f for f in t._fields if f.endswith("fid") and f != "afid")
    for t in MESSAGE_TYPES.values()
    if t.__name__.startswith("T")
}


def fids_of(msg: Message) -> tuple[frozenset[int], frozenset[int]]:
    """The fid numbers ``msg`` only uses, and those it creates or changes (disjoint)."""
    t = type(msg)
    changed = frozenset(getattr(msg, f) for f in FID_CHANGES.get(t, ()))
    used = frozenset(getattr(msg, f) for f in FID_FIELDS.get(t, ())) - changed
    return used, changed


#: ``n_uname`` and gid meaning "none given" ((uid_t)-1).
NO_ID: Final = 0xFFFFFFFF
MAX_OFFSET: Final = (1 << 63) - 1
XATTR_SIZE_MAX: Final = 64 * 1024  # Linux's limit for one value
_WRITE_FLAGS: Final = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT
_DIRENT_MIN: Final = 24  # a packed entry without its name


class WouldBlock(Exception):
    """Raised by a handler answering on the event loop that would have to wait after all:
    it has changed nothing, and the session answers the request again in a task."""


def _err(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _parse_aname(aname: str) -> str:
    """``NAME;key=value;...`` (as WSL sends) → NAME. Options are accepted and ignored."""
    return aname.split(";", 1)[0].strip().strip("/")


class Operations:
    """Handlers and fid table of one session."""

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
        self._attachments: set[Attachment] = set()
        self.squash = ctx.config.ownership == "squash"
        mode = ctx.config.inline_metadata
        cheap = mode == "always" or (mode == "auto" and ctx.backend.cheap_metadata)
        self._inline_types = _NO_BACKEND | _METADATA if cheap else _NO_BACKEND
        self._handlers: dict[type, Callable[[Any], Awaitable[Message]]] = {
            Tauth: self.auth, Tattach: self.attach, Twalk: self.walk, Tlopen: self.lopen,
            Tlcreate: self.lcreate, Tread: self.read, Twrite: self.write, Tclunk: self.clunk,
            Tremove: self.remove, Tgetattr: self.getattr, Tsetattr: self.setattr,
            Treaddir: self.readdir, Tfsync: self.fsync, Tstatfs: self.statfs,
            Treadlink: self.readlink, Tsymlink: self.symlink, Tmknod: self.mknod,
            Tmkdir: self.mkdir, Tlink: self.link, Trename: self.rename,
            Trenameat: self.renameat, Tunlinkat: self.unlinkat, Txattrwalk: self.xattrwalk,
            Txattrcreate: self.xattrcreate, Tlock: self.lock, Tgetlock: self.getlock,
        }  # fmt: skip

    def handler(self, msg_type: type) -> Callable[[Any], Awaitable[Message]] | None:
        return self._handlers.get(msg_type)

    def runs_inline(self, msg: Message) -> bool:
        """Whether ``msg`` may be answered on the event loop, before the next request is
        read: it makes no backend call, or only cheap metadata calls (see
        :attr:`Backend.cheap_metadata`), or it is a read, which is answered there only from
        cached data (:meth:`Backend.read_nowait`; else :class:`WouldBlock`). Truncation may
        free many blocks: never inline."""
        if type(msg) not in self._inline_types:
            return False
        if isinstance(msg, Tlopen):
            return not msg.flags & DOTL_TRUNC
        if isinstance(msg, Tsetattr):
            return not msg.valid & SETATTR_SIZE
        return True

    async def inline(self, msg: Message) -> Message:
        """Answer ``msg`` with its backend calls made here, on the event loop."""
        token = _INLINE.set(True)
        try:
            return await self._handlers[type(msg)](msg)
        finally:
            _INLINE.reset(token)

    # --- plumbing --------------------------------------------------------------------

    async def _run(self, att: Attachment, fn: Callable[..., T], *args: Any) -> T:
        if _INLINE.get():
            return fn(*args)
        return await att.limiter.run(fn, *args)

    def _fid(self, fid: int) -> Fid:
        try:
            return self.fids[fid]
        except KeyError:
            raise _err(errno.EBADF) from None

    def _new_fid_allowed(self, newfid: int) -> None:
        if newfid == NOFID:
            raise _err(errno.EINVAL)
        if newfid in self.fids:
            raise _err(errno.EBADF)
        if not self.fid_budget.fits():
            raise _err(errno.EMFILE)

    def _add_fid(self, number: int, fid: Fid) -> None:
        """Enter ``fid`` under ``number``, which must be free. The session runs requests
        naming one fid in order, so the handler's check at its start still holds here; a
        number in use is refused rather than leak the fid it holds (the caller closes)."""
        if number in self.fids:
            raise _err(errno.EBADF)
        if not self.fid_budget.take():  # checked at the start too; others ran meanwhile
            raise _err(errno.EMFILE)
        fid.att.refs += 1
        self.fids[number] = fid
        self.ctx.metrics.fids.inc()
        self._hold(fid.att, fid.node)

    def _drop_fid(self, number: int) -> Fid:
        try:
            fid = self.fids.pop(number)
        except KeyError:
            raise _err(errno.EBADF) from None
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
            raise _err(errno.EROFS)

    def _dir(self, fid: Fid) -> Node:
        if fid.is_open:
            raise _err(errno.EBUSY)
        if not fid.node.is_dir:
            raise _err(errno.ENOTDIR)
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
        if _INLINE.get():
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

    def _check_xattr_name(self, name: str) -> None:
        if not name.startswith(tuple(self.ctx.config.xattr_namespaces)):
            raise _err(errno.EOPNOTSUPP)

    async def close_all(self) -> None:
        """Clunk every fid (session end or Tversion). The bookkeeping is done in bulk, the
        closing in a worker thread: tens of thousands of fids cost others no wait."""
        fids = list(self.fids.values())
        self.fids.clear()
        self.ctx.metrics.fids.dec(len(fids))
        self.fid_budget.give(len(fids))
        for fid in fids:
            fid.att.refs -= 1
            self._let_go(fid.att, fid.node)
        roots = {id(f.att): f.att for f in fids}

        def close() -> int:
            freed = 0
            for i, fid in enumerate(fids, 1):
                try:
                    freed += fid.close()
                except OSError:
                    pass
                if not i % 64:
                    # Let the event loop have the GIL now, rather than after the interpreter's
                    # switch interval (5 ms) each time it wakes up meanwhile.
                    time.sleep(0)
            for att in roots.values():
                if att.refs == 0:
                    att.root.close()
            return freed

        self.fid_budget.give(await anyio.to_thread.run_sync(close))
        self.ctx.locks.release_session(self.session_id)
        self.lock_budget.close()

    # --- session and fids --------------------------------------------------------------

    async def auth(self, msg: Tauth) -> Message:
        # Identity comes from the transport, never from 9P auth. ENOENT is how diod says
        # "no authentication needed", and its clients (diodls, diodcat) go on to attach.
        raise _err(errno.ENOENT)

    async def attach(self, msg: Tattach) -> Message:
        self._new_fid_allowed(msg.fid)
        if msg.afid != NOFID:
            raise _err(errno.EINVAL)
        aname = _parse_aname(msg.aname)
        share = self.ctx.find_share(aname)
        requester = self.ctx.resolve(self.identity)
        level = decide(requester, share.access) if share is not None else None
        decision = "allow" if level is not None else "deny"
        self.ctx.metrics.attaches.labels(decision=decision).inc()
        fields = {
            "event": "attach", "identity": str(self.identity),
            "instance": requester.instance_id, "tenant": requester.tenant, "share": aname,
            "decision": decision, "access": level.value if level else None,
            "uname": msg.uname, "session": self.session_id,
        }  # fmt: skip
        if share is None:
            fields["reason"] = "no-such-share"
        # uname is recorded, never believed: identity is the transport's.
        audit_log.info("attach %s: share %r for %s", decision, aname, self.identity,
                       extra={"fields": fields})  # fmt: skip
        if share is None or level is None:
            # The same answer for "no such share" and "not yours": no probing of names.
            raise _err(errno.EACCES)
        limiter = self.ctx.limiter(share)
        usage = self.ctx.usage(share)

        def open_root() -> tuple[Node, Node]:
            root = self.backend.open_root(share.path, cache=share.cache)
            try:
                if share.size_gib is not None and usage.stale():
                    usage.scan(self.backend, root)  # the quota needs the usage: see quota.py
                return root, self.backend.clone(root)
            except BaseException:
                root.close()
                raise

        # One trip to a worker thread, whose result comes back even if the request is
        # cancelled meanwhile; from here on no await until the fid holds both nodes.
        root, node = await limiter.run(open_root)
        uid = None if msg.n_uname == NO_ID else msg.n_uname
        att = Attachment(share, level, root, limiter, usage, uid)
        try:
            self._add_fid(msg.fid, Fid(att, node))
        except OSError:
            await self._close_shielded(att, node, root)
            raise
        self._attachments.add(att)
        return Rattach(node_qid(root))

    def reevaluate(self) -> str | None:
        """Apply the gateway's current shares and rules to this session's attachments:
        new levels and sizes take effect at once. Returns why the session lost access, if
        it did (its share is gone or no rule admits it any more)."""
        requester = self.ctx.resolve(self.identity)
        for att in [a for a in self._attachments if a.refs > 0]:
            share = self.ctx.shares.get(att.share.key)
            if share is None:
                return f"share {att.share.name!r} is no longer served"
            level = decide(requester, share.access)
            if level is None:
                return f"access to share {share.name!r} was denied"
            att.share, att.level = share, level
        self._attachments = {a for a in self._attachments if a.refs > 0}
        return None

    async def walk(self, msg: Twalk) -> Message:
        fid = self._fid(msg.fid)
        # walk(5) forbids walking from an opened fid. We refuse to walk one in place and
        # to walk an xattr fid, but let an open file or directory be the *start* of a walk
        # to a new, unopened fid: diod allows it and diodls -l depends on it.
        if fid.is_open and (msg.newfid == msg.fid or fid.file is None):
            raise _err(errno.EBUSY)
        if msg.newfid != msg.fid:
            self._new_fid_allowed(msg.newfid)
        real = sum(name not in (".", "..") for name in msg.wnames)
        for name in msg.wnames:
            if name not in (".", ".."):
                check_name(name)
        # Links the walk may make (fids.py): one per name walked down, but none for the
        # share root's; they may hold fds, so they are charged as fids.
        links = real - (1 if real and fid.at_root else 0)
        if not self.fid_budget.fits(links + (msg.newfid != msg.fid)):
            raise _err(errno.EMFILE)
        qids, walked, made, freed = await self._run(
            fid.att, walk_names, self.backend, fid, msg.wnames
        )
        self.fid_budget.force(made)
        self.fid_budget.give(freed)
        if walked is None:
            return Rwalk(tuple(qids))  # partial walk: newfid is not created
        if msg.newfid == msg.fid:
            old = (fid.node, fid.here, fid.up)
            fid.node, fid.up, fid.name, fid.here = walked.node, walked.up, walked.name, None
            self._hold(fid.att, fid.node)
            self._let_go(fid.att, old[0])
            await self._leave_shielded(fid.att, *old)
        else:
            try:
                self._add_fid(msg.newfid, Fid(fid.att, walked.node, walked.up, walked.name))
            except OSError:
                await self._leave_shielded(fid.att, walked.node, walked.up)
                raise
        return Rwalk(tuple(qids))

    async def clunk(self, msg: Tclunk) -> Message:
        fid = self._drop_fid(msg.fid)
        pending = fid.xattr_write
        # An xattr write takes effect here: the access level is checked now, not only at
        # Txattrcreate (an rw→ro change meanwhile drops it; the client learns EROFS).
        refused = pending is not None and not fid.att.writable
        if refused:
            pending = None

        freed = 0

        def finish() -> None:
            nonlocal freed
            try:
                if pending is not None:
                    self._apply_xattr(fid, pending)
            finally:
                freed = fid.close()
                if fid.att.refs == 0:
                    fid.att.root.close()

        try:
            await self._run_shielded(fid.att, finish)  # the fid is gone: its handles go too
        finally:
            self.fid_budget.give(freed)
        if refused:
            raise _err(errno.EROFS)
        return Rclunk()

    def _apply_xattr(self, fid: Fid, pending: XattrWrite) -> None:
        if len(pending.data) != pending.size:
            raise _err(errno.EINVAL)  # the client wrote less than it announced
        if pending.size == 0:
            # How Linux says removexattr (size 0, XATTR_REPLACE), as QEMU's 9p reads it.
            self.backend.removexattr(fid.node, pending.name)
        else:
            self.backend.setxattr(fid.node, pending.name, bytes(pending.data), pending.flags)

    async def remove(self, msg: Tremove) -> Message:
        fid = self._fid(msg.fid)
        try:
            self._writable(fid)
            if fid.at_root:
                raise _err(errno.EBUSY)  # the share root itself
            await self._run(fid.att, self._remove, fid)
        finally:
            await self.clunk(Tclunk(msg.fid))  # Tremove clunks the fid even when it fails
        return Rremove()

    def _remove(self, fid: Fid) -> None:
        assert fid.up is not None and fid.name is not None
        parent, name = fid.up.node, fid.name
        # The name the fid was walked by may be stale (renamed by someone else): only
        # remove the name if it still names the fid's file.
        probe = self.backend.lookup(parent, name)
        same = probe.qid_path == fid.node.qid_path
        probe.close()
        if not same:
            raise _err(errno.ESTALE)
        self._unlink(fid.att, parent, name, rmdir=fid.node.is_dir)

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

    # --- attributes ---------------------------------------------------------------------

    async def getattr(self, msg: Tgetattr) -> Message:
        fid = self._fid(msg.fid)
        attr = await self._run(fid.att, self.backend.getattr, fid.node)
        return self._rgetattr(fid, attr)

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

    async def setattr(self, msg: Tsetattr) -> Message:
        fid = self._fid(msg.fid)
        self._writable(fid)
        v = msg.valid
        changes: dict[str, int] = {}
        if v & SETATTR_MODE:
            changes["mode"] = squash_mode(msg.mode) if self.squash else msg.mode & 0o7777
        if not self.squash:  # in squash mode ownership changes are accepted and ignored
            if v & SETATTR_UID:
                changes["uid"] = msg.uid
            if v & SETATTR_GID:
                changes["gid"] = msg.gid
        if v & SETATTR_SIZE:
            if msg.size > MAX_OFFSET:
                raise _err(errno.EFBIG)
            changes["size"] = msg.size
        if v & SETATTR_ATIME:
            changes["atime_ns"] = (
                msg.atime_sec * 1_000_000_000 + msg.atime_nsec
                if v & SETATTR_ATIME_SET
                else TIME_NOW
            )
        if v & SETATTR_MTIME:
            changes["mtime_ns"] = (
                msg.mtime_sec * 1_000_000_000 + msg.mtime_nsec
                if v & SETATTR_MTIME_SET
                else TIME_NOW
            )
        if changes:
            await self._run(fid.att, self._setattr, fid, changes)
        return Rsetattr()

    def _setattr(self, fid: Fid, changes: dict[str, int]) -> None:
        if "size" not in changes or fid.att.share.size_bytes is None:
            self.backend.setattr(fid.node, **changes)
            return
        growth = changes["size"] - self.backend.getattr(fid.node).size
        with fid.att.usage.growing(fid.att.share.size_bytes, growth, fid.node.qid_path):
            self.backend.setattr(fid.node, **changes)

    async def statfs(self, msg: Tstatfs) -> Message:
        fid = self._fid(msg.fid)
        s = await self._run(fid.att, self.backend.statfs, fid.node)
        limit = fid.att.share.size_bytes
        if limit is None:
            blocks, bfree, bavail = s.blocks, s.bfree, s.bavail
        else:  # the guest's df shows the share: its size, and what is left of it
            blocks = limit // s.bsize
            free = max(0, blocks - -(-fid.att.usage.used // s.bsize))
            bfree = bavail = min(free, s.bavail)  # never more than the volume has
        return Rstatfs(s.fs_type, s.bsize, blocks, bfree, bavail, s.files, s.ffree,
                       s.fsid, s.namelen)  # fmt: skip

    # --- I/O ----------------------------------------------------------------------------

    async def lopen(self, msg: Tlopen) -> Message:
        fid = self._fid(msg.fid)
        if fid.is_open:
            raise _err(errno.EBUSY)
        flags = dotl_to_os_flags(msg.flags) & ~(os.O_CREAT | os.O_EXCL | os.O_NOCTTY)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
            self._writable(fid)
        fid.file = await self._run(fid.att, self.backend.open, fid.node, flags)
        fid.flags = flags
        return Rlopen(node_qid(fid.node), self.msize - IOHDRSZ)

    async def lcreate(self, msg: Tlcreate) -> Message:
        fid = self._fid(msg.fid)
        self._dir(fid)
        check_name(msg.name)
        self._writable(fid)
        flags = dotl_to_os_flags(msg.flags) & ~(os.O_CREAT | os.O_EXCL | os.O_NOCTTY)
        mode = squash_mode(msg.mode) if self.squash else msg.mode & 0o7777

        def create() -> tuple[Node, int, int]:
            node, file = self.backend.create(fid.node, msg.name, flags, mode)
            try:
                self._own(fid.att, node, msg.gid, mode)
                link, made = fid.link_here(self.backend)  # the directory: the file's up
            except BaseException:
                file.close()
                node.close()
                raise
            old = fid.node
            fid.node, fid.file, fid.flags = node, file, flags
            self._hold(fid.att, node)
            old.close()  # a directory: nothing to let go
            freed = fid.leave()
            fid.up, fid.name = link, msg.name
            return node, made, freed

        node, made, freed = await self._run(fid.att, create)
        self.fid_budget.force(made)
        self.fid_budget.give(freed)
        return Rlcreate(node_qid(node), self.msize - IOHDRSZ)

    async def read(self, msg: Tread) -> Message:
        fid = self._fid(msg.fid)
        if msg.offset > MAX_OFFSET:
            raise _err(errno.EINVAL)
        count = min(msg.count, self.msize - IOHDRSZ)
        if fid.xattr_data is not None:
            data = fid.xattr_data[msg.offset : msg.offset + count]
            return Rread(data)
        file = fid.file
        if file is None or fid.flags & os.O_ACCMODE == os.O_WRONLY:
            raise _err(errno.EBADF)
        if fid.node.is_dir:
            raise _err(errno.EISDIR)
        # A pooled buffer: the session gives it back once the reply is sent. It may hold an
        # earlier read's bytes, so only the n bytes read now are ever sent. A small read
        # gets a buffer of its size: the memory it holds is what it was charged (session.py).
        pool = self.ctx.read_buffers
        buf = pool.take() if count > pool.size // 4 else bytearray(count)
        view = memoryview(buf)[:count]
        try:
            if _INLINE.get():
                n = self.backend.read_nowait(file, msg.offset, view)
                if n is None:
                    raise WouldBlock  # not cached: the session reads it in a worker thread
            else:
                n = await self._run(fid.att, self.backend.read, file, msg.offset, view)
        except BaseException:
            view.release()
            self.ctx.read_buffers.give(buf)
            raise
        self.ctx.metrics.bytes_read.inc(n)
        return Rread(view[:n])

    async def write(self, msg: Twrite) -> Message:
        fid = self._fid(msg.fid)
        if fid.xattr_write is not None:
            pending = fid.xattr_write
            self._writable(fid)  # and again at Tclunk, where it takes effect
            if msg.offset != len(pending.data) or msg.offset + len(msg.data) > pending.size:
                raise _err(errno.EINVAL)
            pending.data += msg.data
            return Rwrite(len(msg.data))
        file = fid.file
        if file is None or fid.flags & os.O_ACCMODE == os.O_RDONLY:
            raise _err(errno.EBADF)
        self._writable(fid)  # checked on every write: an rw→ro change applies at once
        if msg.offset > MAX_OFFSET or msg.offset + len(msg.data) > MAX_OFFSET:
            raise _err(errno.EFBIG)
        data = msg.data if isinstance(msg.data, memoryview) else memoryview(msg.data)
        limit = fid.att.share.size_bytes
        if limit is None:
            n = await self._run(fid.att, self.backend.write, file, msg.offset, data)
        else:
            n = await self._run(fid.att, self._write_within, fid, limit, msg.offset, data)
        self.ctx.metrics.bytes_written.inc(n)
        return Rwrite(n)

    def _write_within(self, fid: Fid, limit: int, offset: int, data: memoryview) -> int:
        """A write that keeps the share within its size (EDQUOT before writing anything)."""
        assert fid.file is not None
        size = self.backend.getattr(fid.node).size
        start = size if fid.flags & os.O_APPEND else offset
        growth = max(0, start + len(data) - size)
        qid_path = fid.node.qid_path
        with fid.att.usage.growing(limit, growth, qid_path):
            n = self.backend.write(fid.file, offset, data)
        if n < len(data):  # a short write grew the file less than reserved
            fid.att.usage.adjust(max(0, start + n - size) - growth, qid_path)
        return n

    async def readdir(self, msg: Treaddir) -> Message:
        fid = self._fid(msg.fid)
        file = fid.file
        if file is None or not fid.node.is_dir:
            raise _err(errno.EBADF if file is None else errno.ENOTDIR)
        if msg.offset > MAX_OFFSET:
            raise _err(errno.EINVAL)
        count = min(msg.count, self.msize - IOHDRSZ)
        at_root = fid.at_root
        root_qid_path = fid.att.root.qid_path

        def fill() -> bytes:
            packer = DirentPacker(count)
            cookie = msg.offset
            while True:
                want = max(1, (count - packer.size) // (_DIRENT_MIN + 8))
                entries = self.backend.readdir(file, cookie, want)
                if not entries:
                    return packer.getvalue()
                for entry in entries:
                    qid_path = entry.qid_path
                    if at_root and entry.name == "..":
                        qid_path = root_qid_path  # never reveal what is above the share
                    # Names are bytes (surrogate-escaped): every name a backend lists packs.
                    fits = packer.add(qid_of(entry.file_type, qid_path), entry.cookie,
                                      entry.file_type >> 12, entry.name)  # fmt: skip
                    if not fits:
                        return packer.getvalue()
                    cookie = entry.cookie

        return Rreaddir(await self._run(fid.att, fill))

    async def fsync(self, msg: Tfsync) -> Message:
        fid = self._fid(msg.fid)
        if fid.file is None:
            raise _err(errno.EBADF)
        file, datasync = fid.file, bool(msg.datasync)
        await self._run(fid.att, lambda: self.backend.fsync(file, datasync=datasync))
        return Rfsync()

    # --- names --------------------------------------------------------------------------

    async def mkdir(self, msg: Tmkdir) -> Message:
        fid, parent = self._dir_to_change(msg.dfid, msg.name)
        mode = squash_mode(msg.mode) if self.squash else msg.mode & 0o7777
        args = (parent, msg.name, mode)
        made = self._made(fid.att, msg.gid, mode, self.backend.mkdir, *args)
        return Rmkdir(await self._run(fid.att, made))

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

    def _made(
        self, att: Attachment, gid: int, mode: int, fn: Callable[..., Node], *args: Any
    ) -> Callable[[], Qid]:
        """Create something with ``fn(*args)``, give it its owners (:meth:`_own`), return its
        qid (runs in a worker thread or, answered on the loop, right there)."""

        def made() -> Qid:
            node = fn(*args)
            try:
                self._own(att, node, gid, mode)
                return node_qid(node)
            finally:
                node.close()

        return made

    async def symlink(self, msg: Tsymlink) -> Message:
        fid, parent = self._dir_to_change(msg.fid, msg.name)
        if not msg.symtgt or "\0" in msg.symtgt:
            raise _err(errno.EINVAL)
        made = self._made(fid.att, msg.gid, 0, self.backend.symlink, parent, msg.name, msg.symtgt)
        return Rsymlink(await self._run(fid.att, made))

    async def mknod(self, msg: Tmknod) -> Message:
        fid, parent = self._dir_to_change(msg.dfid, msg.name)
        kind = stat.S_IFMT(msg.mode)
        if kind not in (stat.S_IFIFO, stat.S_IFSOCK):
            raise _err(errno.EPERM)  # no device nodes, ever; files and dirs have their own ops
        perms = squash_mode(msg.mode) if self.squash else msg.mode & 0o7777
        made = self._made(fid.att, msg.gid, perms, self.backend.mknod, parent, msg.name,
                          kind | perms, 0)  # fmt: skip
        return Rmknod(await self._run(fid.att, made))

    async def readlink(self, msg: Treadlink) -> Message:
        fid = self._fid(msg.fid)
        if not fid.node.is_symlink:
            raise _err(errno.EINVAL)
        return Rreadlink(await self._run(fid.att, self.backend.readlink, fid.node))

    async def link(self, msg: Tlink) -> Message:
        dfid, parent = self._dir_to_change(msg.dfid, msg.name)
        target = self._fid(msg.fid)
        if target.att.share is not dfid.att.share:
            raise _err(errno.EXDEV)
        if target.node.is_dir:
            raise _err(errno.EPERM)
        await self._run(dfid.att, self.backend.link, parent, msg.name, target.node)
        return Rlink()

    async def rename(self, msg: Trename) -> Message:
        dfid, new_parent = self._dir_to_change(msg.dfid, msg.name)
        fid = self._fid(msg.fid)
        self._writable(fid)
        if fid.att.share is not dfid.att.share:
            raise _err(errno.EXDEV)
        if fid.up is None or fid.name is None:
            raise _err(errno.EBUSY)
        old_parent, old_name = fid.up.node, fid.name

        def do() -> tuple[int, int]:
            self.backend.rename(old_parent, old_name, new_parent, msg.name)
            link, made = dfid.link_here(self.backend)
            freed = fid.leave()
            fid.up, fid.name = link, msg.name
            return made, freed

        made, freed = await self._run(fid.att, do)
        self.fid_budget.force(made)
        self.fid_budget.give(freed)
        return Rrename()

    async def renameat(self, msg: Trenameat) -> Message:
        old, old_parent = self._dir_to_change(msg.olddirfid, msg.oldname)
        new, new_parent = self._dir_to_change(msg.newdirfid, msg.newname)
        if old.att.share is not new.att.share:
            raise _err(errno.EXDEV)
        await self._run(old.att, self.backend.rename, old_parent, msg.oldname, new_parent,
                        msg.newname)  # fmt: skip
        return Rrenameat()

    async def unlinkat(self, msg: Tunlinkat) -> Message:
        fid, parent = self._dir_to_change(msg.dirfid, msg.name)
        rmdir = bool(msg.flags & AT_REMOVEDIR)
        await self._run(fid.att, lambda: self._unlink(fid.att, parent, msg.name, rmdir=rmdir))
        return Runlinkat()

    # --- extended attributes ------------------------------------------------------------

    async def xattrwalk(self, msg: Txattrwalk) -> Message:
        fid = self._fid(msg.fid)
        if msg.newfid != msg.fid:
            self._new_fid_allowed(msg.newfid)
        namespaces = tuple(self.ctx.config.xattr_namespaces)

        def fetch() -> tuple[bytes, Node]:
            if msg.name:
                if not msg.name.startswith(namespaces):
                    raise _err(errno.ENODATA)  # invisible, as if absent
                value = self.backend.getxattr(fid.node, msg.name)
            else:
                names = [n for n in self.backend.listxattr(fid.node) if n.startswith(namespaces)]
                value = b"".join(n.encode() + b"\0" for n in names)
            return value, self.backend.clone(fid.node)

        value, node = await self._run(fid.att, fetch)
        if msg.newfid == msg.fid:
            old = fid.node
            fid.node, fid.xattr_data = node, value
            await self._close_shielded(fid.att, old)
        else:
            try:
                self._add_fid(
                    msg.newfid, Fid(fid.att, node, hold(fid.up), fid.name, xattr_data=value)
                )
            except OSError:
                await self._leave_shielded(fid.att, node, fid.up)
                raise
        return Rxattrwalk(len(value))

    async def xattrcreate(self, msg: Txattrcreate) -> Message:
        fid = self._fid(msg.fid)
        if fid.is_open:
            raise _err(errno.EBUSY)
        self._writable(fid)
        self._check_xattr_name(msg.name)
        if msg.attr_size > XATTR_SIZE_MAX:
            raise _err(errno.E2BIG)
        if msg.flags & ~(os.XATTR_CREATE | os.XATTR_REPLACE):
            raise _err(errno.EINVAL)
        fid.xattr_write = XattrWrite(msg.name, msg.attr_size, msg.flags)
        return Rxattrcreate()

    # --- locks --------------------------------------------------------------------------

    def _owner(self, client_id: str, proc_id: int) -> Owner:
        return (self.session_id, client_id, proc_id)

    async def lock(self, msg: Tlock) -> Message:
        fid = self._fid(msg.fid)
        if fid.file is None:
            raise _err(errno.EBADF)
        if msg.type != LOCK_TYPE_UNLCK and msg.start > MAX_OFFSET:
            raise _err(errno.EINVAL)
        try:
            ok = self.ctx.locks.lock(fid.node.qid_path, self._owner(msg.client_id, msg.proc_id),
                                     msg.type, msg.start, msg.length,
                                     self.lock_budget)  # fmt: skip
        except ValueError:
            raise _err(errno.EINVAL) from None
        except TooManyLocks:
            raise _err(errno.ENOLCK) from None
        return Rlock(LOCK_SUCCESS if ok else LOCK_BLOCKED)

    async def getlock(self, msg: Tgetlock) -> Message:
        fid = self._fid(msg.fid)
        if fid.file is None:
            raise _err(errno.EBADF)
        # Linux (6.1) asks every F_GETLK with type UNLCK: read that as "any lock at all?".
        query = LOCK_TYPE_WRLCK if msg.type == LOCK_TYPE_UNLCK else msg.type
        held = self.ctx.locks.conflict(fid.node.qid_path, self._owner(msg.client_id, msg.proc_id),
                                       query, msg.start, msg.length)  # fmt: skip
        if held is None:
            return Rgetlock(LOCK_TYPE_UNLCK, msg.start, msg.length, msg.proc_id, msg.client_id)
        return Rgetlock(held.type, held.start, held.length, held.owner[2], held.owner[1])
