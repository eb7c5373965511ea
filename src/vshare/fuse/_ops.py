"""The file system: FUSE requests → 9P requests on fids the client holds.

As the kernel's v9fs: each inode holds a walked fid and each open file its own opened fid
(``_inodes.py``), so an operation is one request on a fid already held, never a walk from
the share root: a lookup is ``Twalk(parent, [name])`` with its ``Tgetattr`` sent in the
same write (``Client.pipeline``); a stat is one ``Tgetattr``; hard links, unlink-while-open
and renames of open files behave as on a local disk. Paths are kept only to rebuild fids
on a new session (after a reconnect or a failover, which the share does for us).

Requests not sent at all, where the cache mode allows:

- names: entries and "no such name" are cached by the kernel for the mode's timeout; a
  directory we made, or listed whole, answers lookups of names it lacks with no request
  until that timeout runs out (``Inode.children``);
- attributes come with readdir (readdirplus: one pipelined ``Twalk``+``Tgetattr`` per
  entry, or a ``Tgetattr`` of a fid we hold), and after our own changes they are computed
  here (``_attrs.py``);
- changes of attributes made through an open file (futimens, fchown, fchmod) are merged
  into one ``Tsetattr``, sent before the next request on that file or at close;
- the kernel's writeback cache gathers small writes into large ones.

Cache modes (``--cache``):

- ``none``: direct I/O, zero timeouts, nothing deferred or computed: every read, write
  and stat reaches the gateway, so several VMs see each other's changes at once.
- ``auto``: 1 s timeouts; the page cache is kept on open only when mtime and size are
  what they were at the last open (close-to-open consistency).
- ``always``: one-hour timeouts and the page cache always kept: read-mostly data.

POSIX locks: there are no getlk/setlk/flock handlers, so the kernel keeps fcntl and
flock locks locally: they work between processes of this mount, not across mounts.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
import time
from collections.abc import Callable, Sequence

from vshare.client import Session, StatResult, xattr_write
from vshare.fuse import _attrs, device
from vshare.fuse._base import (
    checked_name,
    fuse_errors,
    ok,
)
from vshare.fuse._files import FileOperations
from vshare.fuse._inodes import Inode, OpenFile
from vshare.protocol import (
    AT_REMOVEDIR,
    GETATTR_ALL,
    SETATTR_GID,
    SETATTR_SIZE,
    SETATTR_UID,
    XATTR_NAMESPACES_NAME,
    Message,
    Rreadlink,
    Rstatfs,
    Tgetattr,
    Tlink,
    Tmkdir,
    Tmknod,
    Treadlink,
    Tsetattr,
    Tstatfs,
    Tsymlink,
    Twalk,
)


class VshareOperations(FileOperations):
    """See the module note. ``readonly`` refuses every change with EROFS here, before
    the gateway is asked (the mount is also ``ro``)."""

    def lookup_now(
        self, parent_inode: int, name: bytes, ctx: device.RequestContext
    ) -> device.EntryAttributes | None:
        """The entry when it is known here with nothing asked, else None: a change feed
        replay, or a name absent from a directory whose every name we know."""
        parent = self._node(parent_inode)
        child = checked_name(name)
        replay = self._replay(ctx, parent_inode, child)
        if replay is not None:  # the change feed replaying a name made or removed elsewhere
            if replay.made or replay.node is None or replay.node.attrs is None:
                raise device.FUSEError(errno.ENOENT)  # so that the kernel creates it
            replay.node.lookups += 1  # so that the kernel removes it
            return _attrs.entry(replay.node.number, replay.node.attrs, 0.0)
        if parent.knows_absent(child, time.monotonic()):
            return _attrs.negative_entry(parent.complete_until - time.monotonic())
        node = self.inodes.by_path.get((*parent.parts, child))  # one it forgot, say
        if node is None:
            return None
        node = self._for_kernel(node)
        entry = self._fresh_entry(node)
        if entry is not None:
            node.lookups += 1
        return entry

    @fuse_errors
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: device.RequestContext
    ) -> device.EntryAttributes:
        now = self.lookup_now(parent_inode, name, ctx)
        if now is not None:
            return now
        parent = self._node(parent_inode)
        if await self._relisted(parent):
            now = self.lookup_now(parent_inode, name, ctx)
            if now is not None:
                return now
        child = checked_name(name)

        # A directory we knew whole and whose names we have not seen lately: a name we
        # did not know is most likely absent, and a Tgetattr sent with the Twalk would be
        # a request for nothing.
        likely_absent = parent.children is not None and child not in parent.children

        async def fn(s: Session, fids: list[int], _: bool) -> device.EntryAttributes:
            if s.client.readdirplus:  # its attributes, no fid until something is done to it
                st = await self._stat_at(s, fids[0], child)
                node = self.inodes.for_qid([*parent.parts, child], st.qid.path, st.st_mode)
                parent.name_added(child)
                return self._entry(node, st, lookup=True)
            if likely_absent:
                fid = await self.share.walk_from(s, fids[0], (child,))
                try:
                    st = await self._stat(s, fid)
                except BaseException:
                    await self.share.forget_fid(s, fid)
                    raise
            else:
                fid, st = await self._walk_stat(s, fids[0], child)
            return await self._found_fid(s, parent, child, fid, st)

        try:
            return await self._on([parent], fn)
        except FileNotFoundError:
            parent.name_removed(child)
            if self.timeout:
                return _attrs.negative_entry(self.timeout)
            raise

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        s = self.share.session
        for inode, nlookup in inode_list:
            node = self.inodes.get(inode)
            if node is None or node is self.inodes.root:
                continue
            node.lookups -= nlookup
            await self._cool(s, node)

    def getattr_now(self, inode: int) -> device.EntryAttributes | None:
        """The attributes when ours are as fresh as the mode promises, else None. (The
        kernel drops its copy after each change it makes, a create in a directory, a
        chown; ours has our changes.)"""
        return self._fresh_entry(self._node(inode))

    @fuse_errors
    async def getattr(self, inode: int, ctx: device.RequestContext) -> device.EntryAttributes:
        now = self.getattr_now(inode)
        if now is not None:
            return now
        node = self._node(inode)
        await self._flush_pending(node)
        if node.opens and node is not self.inodes.root:
            # An open file reaches the inode even when no name does any more.
            f = next(iter(node.opens))
            st = await self._file_call(f, self._stat)
            return self._entry(node, st)

        async def fn(s: Session, _fids: list[int], _: bool) -> StatResult:
            return await self._stat_node(s, node)

        return self._entry(node, await self._on([node], fn, walk=False))

    def _setattr_msg(
        self, node: Inode, attr: device.EntryAttributes, fields: device.SetattrFields
    ) -> Tsetattr:
        msg = _attrs.setattr_from_fields(attr, fields)
        if fields.kill_setid and not fields.update_mode:  # a truncation (HANDLE_KILLPRIV_V2)
            drop = self._setid_drop(node)
            if drop is not None:
                msg = _attrs.merge(msg, drop)
        return msg

    def _setattr_file(self, node: Inode, fh: int | None) -> OpenFile | None:
        f = self._files.get(fh) if fh is not None else None
        if f is None and node.opens:
            # The kernel gives no handle for futimens, fchown, fchmod: any open file of
            # the inode will do, and it reaches the inode even once no name does.
            f = next(iter(node.opens))
        return f

    def setattr_now(
        self,
        inode: int,
        attr: device.EntryAttributes,
        fields: device.SetattrFields,
        fh: int | None,
        ctx: device.RequestContext,
    ) -> device.EntryAttributes | None:
        """A setattr answered with nothing sent now, else None: one that changes nothing,
        or one whose effect is known made through an open file (merged into its pending
        changes, sent before its next request or at close). Not a size: errors now."""
        if self.cache == "none" or (self.feed is not None and ctx.pid == self.feed.echo_tid):
            return None
        self._writable()
        node = self._node(inode)
        st = node.attrs
        if st is None:
            return None
        msg = self._setattr_msg(node, attr, fields)
        if _attrs.changes_nothing(msg, st) or (_attrs.only_times(msg) and _gone(node, st)):
            return _attrs.entry(node.number, st, self.timeout)
        f = self._setattr_file(node, fh)
        if (
            f is None
            or msg.valid & SETATTR_SIZE
            or not _attrs.is_known_effect(msg, self._owners_honoured, st)
        ):
            return None
        f.pending = _attrs.merge(f.pending, msg)
        honoured = bool(self._owners_honoured)
        node.mtime_guessed |= _attrs.guesses_mtime(msg)
        return self._entry(node, _attrs.after_setattr(st, msg, honoured), fresh=False)

    @fuse_errors
    async def setattr(
        self,
        inode: int,
        attr: device.EntryAttributes,
        fields: device.SetattrFields,
        fh: int | None,
        ctx: device.RequestContext,
    ) -> device.EntryAttributes:
        now = self.setattr_now(inode, attr, fields, fh, ctx)
        if now is not None:
            return now
        self._writable()
        node = self._node(inode)
        if self.feed is not None and ctx.pid == self.feed.echo_tid:
            # the change feed replaying a change made elsewhere, so that the guest's
            # inotify sees it (fuse/_feed.py): nothing to send, the attributes are fresh.
            # The kernel takes the size we answer (the gateway's) and cuts its page cache
            # to it: refused while the inode is open for writing here (the feed skips such
            # files; this closes the window of an open made after that check).
            node.attrs_at = float("-inf")
            fresh = await self.getattr(inode, ctx)
            if any(f.flags & (os.O_WRONLY | os.O_RDWR) for f in node.opens):
                raise device.FUSEError(errno.EBUSY)
            return fresh
        msg = self._setattr_msg(node, attr, fields)
        f = self._setattr_file(node, fh)
        known = (
            self.cache != "none"
            and node.attrs is not None
            and _attrs.is_known_effect(msg, self._owners_honoured, node.attrs)
        )
        if msg.valid:
            if f is not None:
                await self._drain(f, tell=False)  # times set after the writes before
                msg, f.pending = _attrs.merge(f.pending, msg), None
            st = await self._send_setattr(node, f, msg, fetch=not known)
            if st is not None:
                return self._entry(node, st, ours=True)
        assert node.attrs is not None or not known
        if node.attrs is None:
            return await self.getattr(inode, ctx)
        honoured = bool(self._owners_honoured)
        node.mtime_guessed |= _attrs.guesses_mtime(msg)
        return self._entry(node, _attrs.after_setattr(node.attrs, msg, honoured), fresh=False)

    async def _send_setattr(
        self, node: Inode, f: OpenFile | None, msg: Tsetattr, *, fetch: bool
    ) -> StatResult | None:
        """Send ``msg`` (on the open file if there is one), with a Tgetattr when
        ``fetch``; returns the attributes fetched."""

        async def one(s: Session, fid: int) -> StatResult | None:
            msgs: list[Message] = [msg._replace(fid=fid)]
            if fetch:
                msgs.append(Tgetattr(fid, GETATTR_ALL))
            replies = await s.client.pipeline(msgs)
            ok(replies[0])
            if not fetch:
                return None
            st = StatResult.from_rgetattr(ok(replies[1]))  # type: ignore[arg-type]
            before = node.attrs
            if (
                msg.valid & (SETATTR_UID | SETATTR_GID)
                and self._owners_honoured is None
                and before is not None
            ):
                wanted = (
                    msg.uid if msg.valid & SETATTR_UID else before.st_uid,
                    msg.gid if msg.valid & SETATTR_GID else before.st_gid,
                )
                # Only a chown that asks for a change tells: a chown to the owners a file
                # has (cp -a, tar as root, git) looks honoured to a squashing gateway too.
                if wanted != (before.st_uid, before.st_gid):
                    self._owners_honoured = (st.st_uid, st.st_gid) == wanted
            return st

        if f is not None:
            return await self._file_call(f, one)

        async def fn(s: Session, fids: list[int], _: bool) -> StatResult | None:
            return await one(s, fids[0])

        return await self._on([node], fn)

    @fuse_errors
    async def readlink(self, inode: int, ctx: device.RequestContext) -> bytes:
        async def fn(s: Session, fids: list[int], _: bool) -> bytes:
            r = await s.client.call(Treadlink(fids[0]), Rreadlink)
            return os.fsencode(r.target)

        return await self._on([self._node(inode)], fn)

    @fuse_errors
    async def statfs(self, ctx: device.RequestContext) -> device.StatvfsData:
        async def fn(s: Session, fids: list[int], _: bool) -> Rstatfs:
            return await s.client.call(Tstatfs(fids[0]), Rstatfs)

        r = await self._on([self.inodes.root], fn)
        out = device.StatvfsData()
        out.f_bsize = r.bsize
        out.f_frsize = r.bsize
        out.f_blocks = r.blocks
        out.f_bfree = r.bfree
        out.f_bavail = r.bavail
        out.f_files = r.files
        out.f_ffree = r.ffree
        out.f_favail = r.ffree
        out.f_namemax = r.namelen
        return out

    async def _make(
        self,
        parent_inode: int,
        name: bytes,
        ctx: device.RequestContext,
        make: Callable[[int, str], Message],
        *,
        is_dir: bool = False,
    ) -> device.EntryAttributes:
        """mkdir, symlink, mknod: ``make(dfid, name)``, then the new name walked and
        its attributes fetched, all in one write."""
        self._writable()
        parent = self._node(parent_inode)
        child = checked_name(name)

        async def fn(s: Session, fids: list[int], retried: bool) -> device.EntryAttributes:
            fid = s.client.new_fid()
            msgs = [make(fids[0], child), Twalk(fids[0], fid, (child,))]
            msgs += self._chown_to_caller(fid, ctx)
            msgs.append(Tgetattr(fid, GETATTR_ALL))
            replies = await s.client.pipeline(msgs)
            walked = not isinstance(replies[1], OSError)
            made = replies[0]
            if isinstance(made, OSError) and not (retried and made.errno == errno.EEXIST):
                if walked:
                    await self.share.forget_fid(s, fid)
                else:
                    s.client.release_fid(fid)
                raise made
            if not walked:
                s.client.release_fid(fid)
                raise replies[1]  # type: ignore[misc]
            st = StatResult.from_rgetattr(ok(replies[-1]))  # type: ignore[arg-type]
            return await self._found_fid(s, parent, child, fid, st)

        e = await self._on([parent], fn)
        self._dir_changed(parent, 1 if is_dir else 0)
        if is_dir:
            node = self.inodes.get(e.st_ino)
            if node is not None:
                self._complete(node, set())
        return e

    @fuse_errors
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: device.RequestContext
    ) -> device.EntryAttributes:
        made = self._made_elsewhere(ctx, parent_inode, checked_name(name))
        if made is not None:
            return made
        perm = stat_mod.S_IMODE(mode)
        return await self._make(
            parent_inode, name, ctx, lambda d, n: Tmkdir(d, n, perm, ctx.gid), is_dir=True
        )

    @fuse_errors
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: device.RequestContext
    ) -> device.EntryAttributes:
        if stat_mod.S_ISREG(mode):
            info, e = await self.create(parent_inode, name, mode, os.O_EXCL | os.O_WRONLY, ctx)
            await self.release(info.fh)
            return e
        return await self._make(
            parent_inode,
            name,
            ctx,
            lambda d, n: Tmknod(d, n, mode, os.major(rdev), os.minor(rdev), ctx.gid),
        )

    @fuse_errors
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: device.RequestContext
    ) -> device.EntryAttributes:
        made = self._made_elsewhere(ctx, parent_inode, checked_name(name))
        if made is not None:
            return made
        dest = os.fsdecode(target)
        return await self._make(parent_inode, name, ctx, lambda d, n: Tsymlink(d, n, dest, ctx.gid))

    @fuse_errors
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: device.RequestContext
    ) -> device.EntryAttributes:
        self._writable()
        node = self._node(inode)
        parent = self._node(new_parent_inode)
        child = checked_name(new_name)

        async def fn(s: Session, fids: list[int], retried: bool) -> StatResult:
            linked, attr = await s.client.pipeline(
                [Tlink(fids[1], fids[0], child), Tgetattr(fids[0], GETATTR_ALL)]
            )
            if isinstance(linked, OSError) and not (retried and linked.errno == errno.EEXIST):
                raise linked
            return StatResult.from_rgetattr(ok(attr))  # type: ignore[arg-type]

        st = await self._on([node, parent], fn)
        self.inodes.for_qid([*parent.parts, child], node.qid_path)
        node.lookups += 1
        parent.name_added(child)
        self._dir_changed(parent)
        return self._entry(node, st)

    async def _unlinkat(
        self, parent_inode: int, name: bytes, flags: int, ctx: device.RequestContext
    ) -> None:
        self._writable()
        parent = self._node(parent_inode)
        child = checked_name(name)
        replay = self._replay(ctx, parent_inode, child)
        if replay is not None and not replay.made:  # removed elsewhere: nothing to send
            parent.name_removed(child)
            self.inodes.unlinked([*parent.parts, child])
            return

        async def fn(s: Session, fids: list[int], retried: bool) -> None:
            try:
                await self.share.unlink_in(s, fids[0], child, flags)
            except FileNotFoundError:
                if not retried:  # else: the first attempt removed it
                    raise

        await self._on([parent], fn)
        parent.name_removed(child)
        self.inodes.unlinked([*parent.parts, child])
        self._dir_changed(parent, -1 if flags & AT_REMOVEDIR else 0)

    @fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: device.RequestContext) -> None:
        await self._unlinkat(parent_inode, name, 0, ctx)

    @fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: device.RequestContext) -> None:
        await self._unlinkat(parent_inode, name, AT_REMOVEDIR, ctx)

    @fuse_errors
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: device.RequestContext,
    ) -> None:
        self._writable()
        if flags & device.RENAME_EXCHANGE:
            raise device.FUSEError(errno.EINVAL)  # 9P has no atomic exchange
        src, dst = self._node(parent_inode_old), self._node(parent_inode_new)
        old, new = checked_name(name_old), checked_name(name_new)
        replay = self._replay(ctx, parent_inode_old, old)
        if replay is None or replay.to is None:  # else renamed elsewhere: nothing to send

            async def fn(s: Session, fids: list[int], retried: bool) -> None:
                await self._rename_in(s, fids, old, new, flags, retried)

            await self._on([src, dst], fn)
        self.inodes.unlinked([*dst.parts, new])  # replaced, if it was there
        src.name_removed(old)
        dst.name_added(new)
        src.attrs_at = dst.attrs_at = float("-inf")  # times and link counts: ask
        self.inodes.moved([*src.parts, old], [*dst.parts, new])

    async def _rename_in(
        self, s: Session, fids: list[int], old: str, new: str, flags: int, retried: bool
    ) -> None:
        if flags & device.RENAME_NOREPLACE:
            try:
                fid, _ = await self._walk_stat(s, fids[1], new)
            except FileNotFoundError:
                pass
            else:
                await self.share.forget_fid(s, fid)
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST))
        try:
            await self.share.rename_in(s, fids[0], old, fids[1], new)
        except FileNotFoundError:
            if not retried:
                raise

    def getxattr_now(self, inode: int, name: bytes) -> None:
        """ENODATA, raised, for an attribute known to be absent with nothing asked."""
        if name == b"security.capability":
            # The kernel asks before the first write to an inode and at each chown, to
            # drop a file capability. The mount is nosuid, so capabilities never apply
            # through it, and the gateway's own write on the host drops them there.
            raise device.FUSEError(errno.ENODATA)
        s = self.share.session
        known = self._xattr_namespaces
        shown = known is not None and s is not None and known[0] == s.epoch
        if shown and known is not None and not os.fsdecode(name).startswith(known[1]):
            raise device.FUSEError(errno.ENODATA)

    @fuse_errors
    async def getxattr(self, inode: int, name: bytes, ctx: device.RequestContext) -> bytes:
        self.getxattr_now(inode, name)
        key = os.fsdecode(name)
        if not await self._xattr_shown(key):
            raise device.FUSEError(errno.ENODATA)

        async def fn(s: Session, fids: list[int], _: bool) -> bytes:
            return await self.share.xattr_read(s, fids[0], key)

        return await self._on([self._node(inode)], fn)

    async def _xattr_shown(self, key: str) -> bool:
        """Whether the gateway may have an attribute named ``key``: a vshare.2 gateway
        says which namespaces it shows (read once a session); others, always."""
        s = self.share.session
        known = self._xattr_namespaces
        if s is not None and known is not None and known[0] == s.epoch:
            return key.startswith(known[1])

        async def fn(s: Session, _fids: list[int], _: bool) -> tuple[str, ...] | None:
            if not s.client.readdirplus:
                return None
            raw = await self.share.xattr_read(s, s.root, XATTR_NAMESPACES_NAME)
            namespaces = tuple(n for n in os.fsdecode(raw).split("\0") if n)
            self._xattr_namespaces = (s.epoch, namespaces)
            return namespaces

        namespaces = await self._on([], fn)
        return namespaces is None or key.startswith(namespaces)

    @fuse_errors
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: device.RequestContext
    ) -> None:
        self._writable()
        key = os.fsdecode(name)

        async def fn(s: Session, fids: list[int], _: bool) -> None:
            await xattr_write(s, fids[0], key, value, 0)

        await self._on([self._node(inode)], fn)

    @fuse_errors
    async def listxattr(self, inode: int, ctx: device.RequestContext) -> Sequence[bytes]:
        async def fn(s: Session, fids: list[int], _: bool) -> bytes:
            return await self.share.xattr_read(s, fids[0], "")

        raw = await self._on([self._node(inode)], fn)
        return [n for n in raw.split(b"\0") if n]

    @fuse_errors
    async def removexattr(self, inode: int, name: bytes, ctx: device.RequestContext) -> None:
        self._writable()
        key = os.fsdecode(name)

        async def fn(s: Session, fids: list[int], _: bool) -> None:
            # Linux's way, which the gateway reads as removal: size 0, XATTR_REPLACE.
            await xattr_write(s, fids[0], key, b"", os.XATTR_REPLACE)

        await self._on([self._node(inode)], fn)


def _gone(node: Inode, st: StatResult) -> bool:
    """Whether ``node``'s file is removed, as far as this client knows: its only link
    unlinked here, and not open. With the writeback cache the kernel sends the times it
    keeps of a regular file at each unlink of it (``fuse_update_ctime``), and waits:
    asked of the gateway, they would cost the ``rm`` a walk that fails, per file."""
    return not node.names and not node.opens and st.st_nlink <= 1
