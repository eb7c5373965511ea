"""Handlers for a session's fids and their attributes: attach, walk, clunk, remove,
getattr, setattr, statfs (see ops.py for how they are put together)."""

from __future__ import annotations

import errno

from vshare.backend.base import TIME_NOW, Node, check_name
from vshare.gateway.context import audit_log
from vshare.gateway.fids import INLINE, Attachment, Fid, node_qid, walk_from_memory
from vshare.gateway.fids import walk as walk_names
from vshare.gateway.ops_base import (
    MAX_OFFSET,
    NO_ID,
    OperationsBase,
    WouldBlock,
    os_error,
)
from vshare.policy import decide, squash_mode
from vshare.protocol import (
    NOFID,
    SETATTR_ATIME,
    SETATTR_ATIME_SET,
    SETATTR_GID,
    SETATTR_MODE,
    SETATTR_MTIME,
    SETATTR_MTIME_SET,
    SETATTR_SIZE,
    SETATTR_UID,
    Message,
    Rattach,
    Rclunk,
    Rgetattrat,
    Rremove,
    Rsetattr,
    Rstatfs,
    Rwalk,
    Tattach,
    Tauth,
    Tclunk,
    Tgetattr,
    Tgetattrat,
    Tremove,
    Tsetattr,
    Tstatfs,
    Twalk,
)


def _parse_aname(aname: str) -> str:
    """``NAME;key=value;...`` (as WSL sends) → NAME. Options are accepted and ignored."""
    return aname.split(";", 1)[0].strip().strip("/")


class FidOps(OperationsBase):
    """Tauth, Tattach, Twalk, Tclunk, Tremove, Tgetattr, Tsetattr, Tstatfs."""

    async def auth(self, msg: Tauth) -> Message:
        # Identity comes from the transport, never from 9P auth. ENOENT is how diod says
        # "no authentication needed", and its clients (diodls, diodcat) go on to attach.
        raise os_error(errno.ENOENT)

    async def attach(self, msg: Tattach) -> Message:
        self._new_fid_allowed(msg.fid)
        if msg.afid != NOFID:
            raise os_error(errno.EINVAL)
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
        audit_log.info(
            "attach %s: share %r for %s", decision, aname, self.identity, extra={"fields": fields}
        )
        if share is None or level is None:
            # The same answer for "no such share" and "not yours": no probing of names.
            raise os_error(errno.EACCES)
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
        # The shares may have changed while the root was opened: set_shares reevaluated
        # only the attachments that existed. Decide again on what is served now.
        served = self.ctx.shares.get(share.key)
        now = decide(self.ctx.resolve(self.identity), served.access) if served else None
        if served is None or now is None:
            await self._close_shielded(att, node, root)
            raise os_error(errno.EACCES)
        att.share, att.level = served, now
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
            raise os_error(errno.EBUSY)
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
            raise os_error(errno.EMFILE)
        qids, walked, links_made, freed = await self._run_nowait(
            fid.att, walk_from_memory, walk_names, self.backend, fid, msg.wnames
        )
        self.fid_budget.force(links_made)
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
        if INLINE.get() and not self.metadata_inline:
            # Closing nodes never waits (handles released in memory); closing an open file
            # may (GlusterFS flushes) unless it was never made, and so may an xattr write:
            # those go to a thread.
            held = self._fid(msg.fid)
            file = held.file
            if held.xattr_write is not None or (
                file is not None and not self.backend.close_is_quick(file)
            ):
                raise WouldBlock
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
            raise os_error(errno.EROFS)
        return Rclunk()

    async def remove(self, msg: Tremove) -> Message:
        fid = self._fid(msg.fid)
        try:
            self._writable(fid)
            if fid.at_root:
                raise os_error(errno.EBUSY)  # the share root itself
            await self._run(fid.att, self._remove, fid)
        finally:
            await self.clunk(Tclunk(msg.fid))  # Tremove clunks the fid even when it fails
        return Rremove()

    def _remove(self, fid: Fid) -> None:
        # The name the fid was walked by may be stale (renamed by someone else): only
        # remove the name if it still names the fid's file.
        parent, name = self._check_still_named(fid)
        self._unlink(fid.att, parent, name, rmdir=fid.node.is_dir)

    # --- attributes ---------------------------------------------------------------------

    async def getattr(self, msg: Tgetattr) -> Message:
        fid = self._fid(msg.fid)
        b = self.backend
        attr = await self._run_nowait(fid.att, b.getattr_nowait, b.getattr, fid.node)
        return self._rgetattr(fid, attr)

    async def getattrat(self, msg: Tgetattrat) -> Message:
        """vshare's extension (``VERSION_VSHARE_2``): a Twalk of one name and its Tgetattr,
        without the fid. The name is checked and looked up in the directory as a walk's."""
        fid = self._fid(msg.dfid)
        if not fid.node.is_dir:
            raise os_error(errno.ENOTDIR)
        check_name(msg.name)
        b = self.backend
        attr = await self._run_nowait(
            fid.att, b.getattr_at_nowait, b.getattr_at, fid.node, msg.name
        )
        return Rgetattrat(*self._rgetattr(fid, attr))

    async def setattr(self, msg: Tsetattr) -> Message:
        fid = self._fid(msg.fid)
        self._writable(fid)
        valid = msg.valid
        changes: dict[str, int] = {}
        if valid & SETATTR_MODE:
            changes["mode"] = squash_mode(msg.mode) if self.squash else msg.mode & 0o7777
        if not self.squash:  # in squash mode ownership changes are accepted and ignored
            if valid & SETATTR_UID:
                changes["uid"] = msg.uid
            if valid & SETATTR_GID:
                changes["gid"] = msg.gid
        if valid & SETATTR_SIZE:
            if msg.size > MAX_OFFSET:
                raise os_error(errno.EFBIG)
            changes["size"] = msg.size
        if valid & SETATTR_ATIME:
            changes["atime_ns"] = (
                msg.atime_sec * 1_000_000_000 + msg.atime_nsec
                if valid & SETATTR_ATIME_SET
                else TIME_NOW
            )
        if valid & SETATTR_MTIME:
            changes["mtime_ns"] = (
                msg.mtime_sec * 1_000_000_000 + msg.mtime_nsec
                if valid & SETATTR_MTIME_SET
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
        fs = await self._run(fid.att, self.backend.statfs, fid.node)
        limit = fid.att.share.size_bytes
        if limit is None:
            blocks, bfree, bavail = fs.blocks, fs.bfree, fs.bavail
        else:  # the guest's df shows the share: its size, and what is left of it
            blocks = limit // fs.bsize
            free = max(0, blocks - -(-fid.att.usage.used // fs.bsize))
            bfree = bavail = min(free, fs.bavail)  # never more than the volume has
        return Rstatfs(
            fs.fs_type, fs.bsize, blocks, bfree, bavail, fs.files, fs.ffree, fs.fsid, fs.namelen
        )
