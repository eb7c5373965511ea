"""The pyfuse3 file system: FUSE requests → 9P requests on fids the client holds.

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

POSIX locks: pyfuse3 has no getlk/setlk/flock handlers, so the kernel keeps fcntl and
flock locks locally: they work between processes of this mount, not across mounts.
"""

from __future__ import annotations

import errno
import functools
import os
import stat as stat_mod
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import anyio
import pyfuse3

from vshare.client import AsyncShare, Session, StatResult, xattr_write
from vshare.fuse import _attrs
from vshare.fuse._inodes import Inode, InodeTable, OpenDir, OpenFile
from vshare.protocol import (
    AT_REMOVEDIR,
    DOTL_CREATE,
    DOTL_DIRECTORY,
    DOTL_EXCL,
    DOTL_RDONLY,
    DOTL_TRUNC,
    GETATTR_ALL,
    IOHDRSZ,
    SETATTR_GID,
    SETATTR_MTIME,
    SETATTR_SIZE,
    SETATTR_UID,
    Dirent,
    Message,
    Rgetattr,
    Rlcreate,
    Rlopen,
    Rread,
    Rreaddir,
    Rreadlink,
    Rstatfs,
    Rwrite,
    Tclunk,
    Tfsync,
    Tgetattr,
    Tlcreate,
    Tlink,
    Tlopen,
    Tmkdir,
    Tmknod,
    Tread,
    Treaddir,
    Treadlink,
    Trenameat,
    Tsetattr,
    Tstatfs,
    Tsymlink,
    Tunlinkat,
    Twalk,
    Twrite,
    os_to_dotl_flags,
    unpack_dirents,
)

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

TIMEOUTS = {"none": 0.0, "auto": 1.0, "always": 3600.0}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOSYS)
#: Walked fids kept for inodes; past it the least recently used go back (and are walked
#: again from their path when needed).
MAX_INODE_FIDS = 8192
#: Entries of one readdir whose attributes are asked for in one write.
_READDIR_BATCH = 128


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


def _ok(reply: Message | OSError) -> Message:
    if isinstance(reply, OSError):
        raise reply
    return reply


def _name(name: bytes) -> str:
    decoded = os.fsdecode(name)
    if "/" in decoded or decoded in ("", ".", ".."):
        raise pyfuse3.FUSEError(errno.EINVAL)
    return decoded


class VshareOperations(pyfuse3.Operations):
    """See the module note. ``readonly`` refuses every change with EROFS here, before
    the gateway is asked (the mount is also ``ro``)."""

    supports_dot_lookup = False

    def __init__(
        self, share: AsyncShare, *, cache: str = "auto", readonly: bool = False,
        max_fids: int = MAX_INODE_FIDS,
    ) -> None:  # fmt: skip
        super().__init__()
        if cache not in TIMEOUTS:
            raise ValueError(f"cache must be none, auto or always, not {cache!r}")
        self.share = share
        self.cache = cache
        self.readonly = readonly
        self.timeout = TIMEOUTS[cache]
        #: The kernel gathers writes in its page cache (not with ``none``: direct I/O).
        self.enable_writeback_cache = cache != "none" and not readonly
        self.inodes = InodeTable(max_fids)
        self._files: dict[int, OpenFile] = {}
        self._dirs: dict[int, OpenDir] = {}
        self._next_fh = 1
        #: The uid the share was attached as: the gateway gives it what we create.
        self._uid = os.getuid()
        #: Whether the gateway applies ownership changes (passthrough) or not (squash):
        #: learnt from the first chown, which is then sent with a Tgetattr.
        self._owners_honoured: bool | None = None

    # --- fids -------------------------------------------------------------------------

    def _node(self, inode: int) -> Inode:
        node = self.inodes.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ESTALE)
        return node

    async def _fid(self, s: Session, node: Inode) -> int:
        """``node``'s walked fid on session ``s`` (walked again from its path if it has
        none there). The caller has pinned ``node``."""
        if node is self.inodes.root:
            return s.root
        if node.epoch != s.epoch or node.fid < 0:
            node.fid = await self.share.walk_from_root(s, node.parts)
            node.epoch = s.epoch
        self.inodes.used(node)
        for old in self.inodes.over_budget():
            await self._give_back(s, old)
        return node.fid

    async def _give_back(self, s: Session | None, node: Inode) -> None:
        fid, epoch = node.fid, node.epoch
        node.fid, node.epoch = -1, -1
        self.inodes.untrack(node)
        if s is not None and fid >= 0 and epoch == s.epoch:
            await self.share.forget_fid(s, fid)

    def _adopt(self, s: Session, node: Inode, fid: int) -> bool:
        """Give ``node`` the walked ``fid`` if it has none on ``s``; False if it had one
        (the caller gives ``fid`` back)."""
        if node is self.inodes.root or (node.epoch == s.epoch and node.fid >= 0):
            return False
        node.fid, node.epoch = fid, s.epoch
        self.inodes.used(node)
        return True

    async def _on(
        self, nodes: Sequence[Inode], fn: Callable[[Session, list[int], bool], Awaitable[T]]
    ) -> T:
        """Run ``fn(session, fids of nodes, retried)``, the nodes pinned meanwhile."""
        for node in nodes:
            node.busy += 1
        try:

            async def op(s: Session, retried: bool) -> T:
                fids = [await self._fid(s, node) for node in nodes]
                return await fn(s, fids, retried)

            return await self.share.on_session(op)
        finally:
            for node in nodes:
                node.busy -= 1

    async def _walk_stat(self, s: Session, pfid: int, name: str) -> tuple[int, StatResult]:
        """A new fid for ``name`` in the directory ``pfid``, and its attributes, in one
        round trip."""
        fid = s.client.new_fid()
        walk, attr = await s.client.pipeline(
            [Twalk(pfid, fid, (name,)), Tgetattr(fid, GETATTR_ALL)]
        )
        if isinstance(walk, OSError):
            s.client.release_fid(fid)
            raise walk
        if isinstance(attr, OSError):
            await self.share.forget_fid(s, fid)
            raise attr
        assert isinstance(attr, Rgetattr)
        return fid, StatResult.from_rgetattr(attr)

    def _entry(self, node: Inode, st: StatResult, *, fresh: bool = True) -> pyfuse3.EntryAttributes:
        """The entry of ``node`` with ``st``: from the gateway (``fresh``), or computed
        here after a change of ours."""
        node.attrs = st
        if fresh:
            node.attrs_at = anyio.current_time()
        return _attrs.entry(node.number, st, self.timeout)

    def _dir_changed(self, node: Inode, links: int = 0) -> None:
        """We added or removed a name in ``node``: its times, and its link count when
        the name is a directory."""
        if node.attrs is not None:
            node.attrs = _attrs.dir_changed(node.attrs, links)

    def _found(self, s: Session, parent: Inode, name: str, fid: int, st: StatResult) -> Inode:
        """The inode of a name just walked to (``fid``), with one more lookup."""
        node = self.inodes.for_qid([*parent.parts, name], st.qid.path)
        node.lookups += 1
        parent.name_added(name)
        self._adopt(s, node, fid)
        return node

    async def _found_fid(
        self, s: Session, parent: Inode, name: str, fid: int, st: StatResult
    ) -> pyfuse3.EntryAttributes:
        node = self._found(s, parent, name, fid, st)
        if node.fid != fid:
            await self.share.forget_fid(s, fid)
        return self._entry(node, st)

    def _writable(self) -> None:
        if self.readonly:
            raise pyfuse3.FUSEError(errno.EROFS)

    def _complete(self, node: Inode, names: set[str]) -> None:
        """Every name of ``node`` is ``names``, as of now."""
        if self.cache != "none":
            node.children = names
            node.complete_until = anyio.current_time() + self.timeout

    # --- metadata -----------------------------------------------------------------------

    @fuse_errors
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        child = _name(name)
        if parent.knows_absent(child, anyio.current_time()):
            return _attrs.negative_entry(parent.complete_until - anyio.current_time())

        async def fn(s: Session, fids: list[int], _: bool) -> pyfuse3.EntryAttributes:
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
            if node.lookups <= 0 and not node.opens:
                self.inodes.drop(node)
                if node.busy == 0:
                    await self._give_back(s, node)

    @property
    def inode_count(self) -> int:
        return len(self.inodes)

    async def _flush_pending(self, node: Inode) -> None:
        for f in list(node.opens):
            if f.pending is not None:
                await self._send_pending(f)

    @fuse_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        if (
            self.cache != "none"
            and node.attrs is not None
            and anyio.current_time() - node.attrs_at < self.timeout
        ):
            # The kernel drops its copy after each change it makes (a create in a
            # directory, a chown); ours is as fresh as the mode promises, with our changes.
            return _attrs.entry(node.number, node.attrs, self.timeout)
        await self._flush_pending(node)
        if node.opens and node is not self.inodes.root:
            # An open file reaches the inode even when no name does any more.
            f = next(iter(node.opens))
            st = await self._file_call(f, self._stat)
            return self._entry(node, st)

        async def fn(s: Session, fids: list[int], _: bool) -> StatResult:
            return await self._stat(s, fids[0])

        return self._entry(node, await self._on([node], fn))

    @staticmethod
    async def _stat(s: Session, fid: int) -> StatResult:
        return StatResult.from_rgetattr(await s.client.call(Tgetattr(fid, GETATTR_ALL), Rgetattr))

    @fuse_errors
    async def setattr(
        self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
        fh: int | None, ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:  # fmt: skip
        self._writable()
        node = self._node(inode)
        msg = _attrs.setattr_from_fields(attr, fields)
        f = self._files.get(fh) if fh is not None else None
        if f is None and node.opens:
            # The kernel gives no handle for futimens, fchown, fchmod: any open file of
            # the inode will do, and it reaches the inode even once no name does.
            f = next(iter(node.opens))
        known = (
            self.cache != "none"
            and node.attrs is not None
            and _attrs.is_known_effect(msg, self._owners_honoured)
        )
        if known and f is not None and not msg.valid & SETATTR_SIZE:  # size: errors now
            f.pending = _attrs.merge(f.pending, msg)
        elif msg.valid:
            if f is not None:
                msg, f.pending = _attrs.merge(f.pending, msg), None
            st = await self._send_setattr(node, f, msg, fetch=not known)
            if st is not None:
                return self._entry(node, st)
        assert node.attrs is not None or not known
        if node.attrs is None:
            return await self.getattr(inode, ctx)
        honoured = bool(self._owners_honoured)
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
            _ok(replies[0])
            if not fetch:
                return None
            st = StatResult.from_rgetattr(_ok(replies[1]))  # type: ignore[arg-type]
            if msg.valid & (SETATTR_UID | SETATTR_GID) and self._owners_honoured is None:
                wanted = (msg.uid if msg.valid & SETATTR_UID else st.st_uid,
                          msg.gid if msg.valid & SETATTR_GID else st.st_gid)  # fmt: skip
                self._owners_honoured = (st.st_uid, st.st_gid) == wanted
            return st

        if f is not None:
            return await self._file_call(f, one)

        async def fn(s: Session, fids: list[int], _: bool) -> StatResult | None:
            return await one(s, fids[0])

        return await self._on([node], fn)

    @fuse_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        async def fn(s: Session, fids: list[int], _: bool) -> bytes:
            r = await s.client.call(Treadlink(fids[0]), Rreadlink)
            return os.fsencode(r.target)

        return await self._on([self._node(inode)], fn)

    @fuse_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        async def fn(s: Session, fids: list[int], _: bool) -> Rstatfs:
            return await s.client.call(Tstatfs(fids[0]), Rstatfs)

        r = await self._on([self.inodes.root], fn)
        out = pyfuse3.StatvfsData()
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

    # --- names --------------------------------------------------------------------------

    def _chown_to_caller(self, fid: int, ctx: pyfuse3.RequestContext) -> list[Message]:
        """The gateway gives what we create to the uid we attached as; a caller with
        another uid gets it (passthrough; squash ignores it)."""
        if ctx.uid == self._uid:
            return []
        valid = SETATTR_UID | SETATTR_GID
        return [Tsetattr(fid, valid, 0, ctx.uid, ctx.gid, 0, 0, 0, 0, 0)]

    async def _make(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext,
        make: Callable[[int, str], Message], *, is_dir: bool = False,
    ) -> pyfuse3.EntryAttributes:  # fmt: skip
        """mkdir, symlink, mknod: ``make(dfid, name)``, then the new name walked and
        its attributes fetched, all in one write."""
        self._writable()
        parent = self._node(parent_inode)
        child = _name(name)

        async def fn(s: Session, fids: list[int], retried: bool) -> pyfuse3.EntryAttributes:
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
            st = StatResult.from_rgetattr(_ok(replies[-1]))  # type: ignore[arg-type]
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
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        perm = stat_mod.S_IMODE(mode)
        return await self._make(
            parent_inode, name, ctx, lambda d, n: Tmkdir(d, n, perm, ctx.gid), is_dir=True
        )

    @fuse_errors
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if stat_mod.S_ISREG(mode):
            info, e = await self.create(parent_inode, name, mode, os.O_EXCL | os.O_WRONLY, ctx)
            await self.release(info.fh)
            return e
        return await self._make(
            parent_inode, name, ctx,
            lambda d, n: Tmknod(d, n, mode, os.major(rdev), os.minor(rdev), ctx.gid),
        )  # fmt: skip

    @fuse_errors
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        dest = os.fsdecode(target)
        return await self._make(parent_inode, name, ctx, lambda d, n: Tsymlink(d, n, dest, ctx.gid))

    @fuse_errors
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        self._writable()
        node = self._node(inode)
        parent = self._node(new_parent_inode)
        child = _name(new_name)

        async def fn(s: Session, fids: list[int], retried: bool) -> StatResult:
            linked, attr = await s.client.pipeline(
                [Tlink(fids[1], fids[0], child), Tgetattr(fids[0], GETATTR_ALL)]
            )
            if isinstance(linked, OSError) and not (retried and linked.errno == errno.EEXIST):
                raise linked
            return StatResult.from_rgetattr(_ok(attr))  # type: ignore[arg-type]

        st = await self._on([node, parent], fn)
        self.inodes.for_qid([*parent.parts, child], node.qid_path)
        node.lookups += 1
        parent.name_added(child)
        self._dir_changed(parent)
        return self._entry(node, st)

    async def _unlinkat(self, parent_inode: int, name: bytes, flags: int) -> None:
        self._writable()
        parent = self._node(parent_inode)
        child = _name(name)

        async def fn(s: Session, fids: list[int], retried: bool) -> None:
            try:
                if not self.share.no_at:
                    try:
                        await s.client.rpc(Tunlinkat(fids[0], child, flags))
                        return
                    except OSError as exc:
                        if exc.errno not in _UNSUPPORTED:
                            raise
                        self.share.no_at = True  # diod 1.0: no Tunlinkat/Trenameat
                await self.share.remove_legacy(s, fids[0], child)
            except FileNotFoundError:
                if not retried:  # else: the first attempt removed it
                    raise

        await self._on([parent], fn)
        parent.name_removed(child)
        self.inodes.unlinked([*parent.parts, child])
        self._dir_changed(parent, -1 if flags & AT_REMOVEDIR else 0)

    @fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._unlinkat(parent_inode, name, 0)

    @fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._unlinkat(parent_inode, name, AT_REMOVEDIR)

    @fuse_errors
    async def rename(
        self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
        flags: int, ctx: pyfuse3.RequestContext,
    ) -> None:  # fmt: skip
        self._writable()
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)  # 9P has no atomic exchange
        src, dst = self._node(parent_inode_old), self._node(parent_inode_new)
        old, new = _name(name_old), _name(name_new)

        async def fn(s: Session, fids: list[int], retried: bool) -> None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                try:
                    fid, _ = await self._walk_stat(s, fids[1], new)
                except FileNotFoundError:
                    pass
                else:
                    await self.share.forget_fid(s, fid)
                    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST))
            try:
                if not self.share.no_at:
                    try:
                        await s.client.rpc(Trenameat(fids[0], old, fids[1], new))
                        return
                    except OSError as exc:
                        if exc.errno not in _UNSUPPORTED:
                            raise
                        self.share.no_at = True
                await self.share.rename_legacy(s, fids[0], old, fids[1], new)
            except FileNotFoundError:
                if not retried:
                    raise

        await self._on([src, dst], fn)
        self.inodes.unlinked([*dst.parts, new])  # replaced, if it was there
        src.name_removed(old)
        dst.name_added(new)
        src.attrs_at = dst.attrs_at = float("-inf")  # times and link counts: ask
        self.inodes.moved([*src.parts, old], [*dst.parts, new])

    # --- directories --------------------------------------------------------------------

    async def _open_fid(self, s: Session, ifid: int, flags: int) -> tuple[int, int]:
        """A new fid cloned from ``ifid`` and opened with ``flags``: (fid, iounit)."""
        fid = s.client.new_fid()
        walk, opened = await s.client.pipeline([Twalk(ifid, fid, ()), Tlopen(fid, flags)])
        if isinstance(walk, OSError):
            s.client.release_fid(fid)
            raise walk
        if isinstance(opened, OSError):
            await self.share.forget_fid(s, fid)
            raise opened
        assert isinstance(opened, Rlopen)
        return fid, opened.iounit

    @fuse_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self._node(inode)
        d = OpenDir(node)

        async def fn(s: Session, fids: list[int], _: bool) -> None:
            d.fid, _unit = await self._open_fid(s, fids[0], DOTL_RDONLY | DOTL_DIRECTORY)
            d.epoch = s.epoch

        await self._on([node], fn)
        fh = self._next_fh
        self._next_fh += 1
        self._dirs[fh] = d
        return fh

    async def _list(self, d: OpenDir) -> list[tuple[str, Inode, StatResult]]:
        """Every entry of ``d`` with its inode and attributes (readdirplus)."""

        async def fn(s: Session, fids: list[int], _: bool) -> list[tuple[str, Inode, StatResult]]:
            if d.epoch != s.epoch:
                d.fid, _unit = await self._open_fid(s, fids[0], DOTL_RDONLY | DOTL_DIRECTORY)
                d.epoch = s.epoch
            names: list[Dirent] = []
            offset = 0
            count = s.client.msize - IOHDRSZ
            while True:
                r = await s.client.call(Treaddir(d.fid, offset, count), Rreaddir)
                batch = unpack_dirents(r.data)
                if not batch:
                    break
                names.extend(e for e in batch if e.name not in (".", ".."))
                offset = batch[-1].offset
            out: list[tuple[str, Inode, StatResult]] = []
            for i in range(0, len(names), _READDIR_BATCH):
                out += await self._stat_entries(s, d.node, fids[0], names[i : i + _READDIR_BATCH])
            self._complete(d.node, {e.name for e in names})
            return out

        return await self._on([d.node], fn)

    async def _stat_entries(
        self, s: Session, parent: Inode, pfid: int, batch: Sequence[Any]
    ) -> list[tuple[str, Inode, StatResult]]:
        """Attributes of a batch of entries in one write: a Tgetattr of the fid we hold
        for an inode we know, else a Twalk to a new fid and its Tgetattr."""
        msgs: list[Message] = []
        plan: list[tuple[str, Inode | None, int]] = []
        for e in batch:
            known = self.inodes.by_qid.get(e.qid.path)
            if known is not None and known.epoch == s.epoch and known.fid >= 0:
                msgs.append(Tgetattr(known.fid, GETATTR_ALL))
                plan.append((e.name, known, -1))
                known.busy += 1
            else:
                fid = s.client.new_fid()
                msgs += [Twalk(pfid, fid, (e.name,)), Tgetattr(fid, GETATTR_ALL)]
                plan.append((e.name, None, fid))
        try:
            replies = await s.client.pipeline(msgs)
        finally:
            for _, known, _ in plan:
                if known is not None:
                    known.busy -= 1
        out = []
        i = 0
        for name, known, fid in plan:
            if known is not None:
                attr = replies[i]
                i += 1
                if isinstance(attr, Rgetattr):
                    out.append((name, known, StatResult.from_rgetattr(attr)))
                continue
            walk, attr = replies[i], replies[i + 1]
            i += 2
            if isinstance(walk, OSError):
                s.client.release_fid(fid)  # gone since the listing
                continue
            if not isinstance(attr, Rgetattr):
                await self.share.forget_fid(s, fid)
                continue
            st = StatResult.from_rgetattr(attr)
            node = self.inodes.for_qid([*parent.parts, name], st.qid.path)
            if not self._adopt(s, node, fid):
                await self.share.forget_fid(s, fid)
            out.append((name, node, st))
        for old in self.inodes.over_budget():
            await self._give_back(s, old)
        return out

    @fuse_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        d = self._dirs[fh]
        if d.entries is None or start_id == 0:
            d.entries = await self._list(d)
        for i in range(start_id, len(d.entries)):
            name, node, st = d.entries[i]
            node = self.inodes.revive(node)
            node.attrs = st
            e = _attrs.entry(node.number, st, self.timeout)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), e, i + 1):
                return
            node.lookups += 1  # the kernel took a lookup on it (readdirplus)

    async def releasedir(self, fh: int) -> None:
        d = self._dirs.pop(fh, None)
        if d is None:
            return
        s = self.share.session
        for _, node, _ in d.entries or ():
            if node.lookups <= 0 and not node.opens and node.busy == 0:
                self.inodes.drop(node)  # listed, never handed to the kernel
                await self._give_back(s, node)
        if s is not None and d.epoch == s.epoch:
            await self.share.forget_fid(s, d.fid)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        pass

    # --- files --------------------------------------------------------------------------

    def _file_info(self, fh: int, node: Inode) -> pyfuse3.FileInfo:
        info = pyfuse3.FileInfo(fh=fh)
        if self.cache == "none":
            info.direct_io = True
            info.keep_cache = False
        elif self.cache == "always":
            info.keep_cache = True
        else:
            st = node.attrs
            now = None if st is None else (st.st_mtime_ns, st.st_size)
            info.keep_cache = now is not None and node.seen == now
            node.seen = now
        return info

    def _cached_flags(self, flags: int) -> int:
        """With the writeback cache the kernel reads pages it writes only in part, even
        of a file opened write-only, and places appends itself: the gateway's file is
        opened read-write, without O_APPEND (as libfuse's passthrough_ll does)."""
        if not self.enable_writeback_cache:
            return flags
        flags &= ~os.O_APPEND
        if flags & os.O_ACCMODE == os.O_WRONLY:
            flags = flags & ~os.O_ACCMODE | os.O_RDWR
        return flags

    def _add_file(self, f: OpenFile) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._files[fh] = f
        f.node.opens.add(f)
        return fh

    async def _file_call(self, f: OpenFile, fn: Callable[[Session, int], Awaitable[T]]) -> T:
        """``fn(session, the file's fid)``, the file re-opened on a new session."""

        async def op(s: Session, _: bool) -> T:
            if f.epoch != s.epoch:
                f.node.busy += 1
                try:
                    ifid = await self._fid(s, f.node)
                    reopen = f.flags & ~(DOTL_CREATE | DOTL_EXCL | DOTL_TRUNC)
                    f.fid, f.iounit = await self._open_fid(s, ifid, reopen)
                    f.epoch = s.epoch
                finally:
                    f.node.busy -= 1
            return await fn(s, f.fid)

        return await self.share.on_session(op)

    @fuse_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & _WRITE_FLAGS:
            self._writable()
        node = self._node(inode)
        await self._flush_pending(node)
        dotl = os_to_dotl_flags(self._cached_flags(flags & ~(os.O_CREAT | os.O_EXCL)))
        f = OpenFile(node, dotl)

        async def fn(s: Session, fids: list[int], _: bool) -> None:
            f.fid, f.iounit = await self._open_fid(s, fids[0], dotl)
            f.epoch = s.epoch

        await self._on([node], fn)
        if dotl & DOTL_TRUNC and node.attrs is not None:
            truncated = Tsetattr(0, SETATTR_SIZE | SETATTR_MTIME, 0, 0, 0, 0, 0, 0, 0, 0)
            node.attrs = _attrs.after_setattr(node.attrs, truncated, False)
        return self._file_info(self._add_file(f), node)

    @fuse_errors
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        self._writable()
        parent = self._node(parent_inode)
        child = _name(name)
        perm = stat_mod.S_IMODE(mode)
        dotl = os_to_dotl_flags(self._cached_flags(flags | os.O_CREAT))
        # A file made with O_EXCL is new: its attributes are known (see _attrs).
        predict = (
            self.cache != "none"
            and dotl & DOTL_EXCL
            and _attrs.predictable_owner(parent.attrs, ctx.uid, ctx.gid, perm)
        )

        async def fn(s: Session, fids: list[int], retried: bool) -> tuple[OpenFile, StatResult]:
            fid = s.client.new_fid()
            msgs: list[Message] = [
                Twalk(fids[0], fid, ()), Tlcreate(fid, child, dotl & ~DOTL_TRUNC, perm, ctx.gid)
            ]  # fmt: skip
            msgs += self._chown_to_caller(fid, ctx)
            if not predict:
                msgs.append(Tgetattr(fid, GETATTR_ALL))
            replies = await s.client.pipeline(msgs)
            if isinstance(replies[0], OSError):
                s.client.release_fid(fid)
                raise replies[0]
            made = replies[1]
            if isinstance(made, OSError):
                await self.share.forget_fid(s, fid)
                if made.errno != errno.EEXIST or (dotl & DOTL_EXCL and not retried):
                    raise made
                # Our own earlier create (retried), or a concurrent one (not O_EXCL).
                return await self._open_existing(s, fids[0], child, dotl)
            assert isinstance(made, Rlcreate)
            f = OpenFile(parent, dotl & ~(DOTL_CREATE | DOTL_EXCL | DOTL_TRUNC), fid, s.epoch)
            f.iounit = made.iounit
            if predict:
                blksize = parent.attrs.st_blksize if parent.attrs else 4096
                return f, _attrs.new_file(made.qid, perm, ctx.uid, ctx.gid, blksize)
            return f, StatResult.from_rgetattr(_ok(replies[-1]))  # type: ignore[arg-type]

        f, st = await self._on([parent], fn)
        node = self.inodes.for_qid([*parent.parts, child], st.qid.path)
        node.lookups += 1
        parent.name_added(child)
        self._dir_changed(parent)
        f.node = node
        node.seen = None
        e = self._entry(node, st)
        return self._file_info(self._add_file(f), node), e

    async def _open_existing(
        self, s: Session, pfid: int, name: str, dotl: int
    ) -> tuple[OpenFile, StatResult]:
        wfid, st = await self._walk_stat(s, pfid, name)
        try:
            flags = dotl & ~(DOTL_CREATE | DOTL_EXCL)
            fid, iounit = await self._open_fid(s, wfid, flags)
        finally:
            await self.share.forget_fid(s, wfid)
        placeholder = self.inodes.root  # replaced by the caller
        f = OpenFile(placeholder, flags & ~DOTL_TRUNC, fid, s.epoch, iounit)
        return f, st

    async def _send_pending(self, f: OpenFile) -> None:
        msg = f.pending
        if msg is None:
            return
        f.pending = None

        async def one(s: Session, fid: int) -> None:
            await s.client.rpc(msg._replace(fid=fid))

        await self._file_call(f, one)

    def _io_size(self, s: Session, f: OpenFile) -> int:
        room = s.client.msize - IOHDRSZ
        return min(f.iounit or room, room)

    @fuse_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        f = self._files[fh]
        await self._flush_pending(f.node)
        out = bytearray()
        while len(out) < size:
            data = await self._file_call(f, functools.partial(self._read, f, off + len(out),
                                                              size - len(out)))  # fmt: skip
            if not data:
                break
            if not out and len(data) == size:
                return data
            out += data
        return bytes(out)

    async def _read(self, f: OpenFile, at: int, want: int, s: Session, fid: int) -> bytes:
        r = await s.client.call(Tread(fid, at, min(want, self._io_size(s, f))), Rread)
        return bytes(r.data)

    @fuse_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        f = self._files[fh]
        await self._flush_pending(f.node)
        view = memoryview(buf)
        done = 0
        while done < len(view):
            call = functools.partial(self._write, f, off + done, view[done:])
            n = await self._file_call(f, call)
            if n <= 0:
                raise OSError(errno.EIO, "the server wrote nothing")
            done += n
        if f.node.attrs is not None:
            f.node.attrs = _attrs.after_write(f.node.attrs, off + done)
        return done

    async def _write(self, f: OpenFile, at: int, rest: memoryview, s: Session, fid: int) -> int:
        chunk = rest[: self._io_size(s, f)]
        return int((await s.client.call(Twrite(fid, at, chunk), Rwrite)).count)

    @fuse_errors
    async def flush(self, fh: int) -> None:
        f = self._files.get(fh)
        if f is not None:
            await self._send_pending(f)  # close() is where its error can be told

    @fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        f = self._files[fh]
        await self._flush_pending(f.node)

        async def one(s: Session, fid: int) -> None:
            await s.client.rpc(Tfsync(fid, int(datasync)))

        await self._file_call(f, one)

    async def release(self, fh: int) -> None:
        f = self._files.pop(fh, None)
        if f is None:
            return
        node = f.node
        node.opens.discard(f)
        s = self.share.session
        if s is not None and f.epoch == s.epoch:
            msgs: list[Message] = []
            if f.pending is not None:
                msgs.append(f.pending._replace(fid=f.fid))
            f.pending = None
            try:
                if msgs:
                    await s.client.pipeline([*msgs, Tclunk(f.fid)])
                    s.client.release_fid(f.fid)
                else:
                    await self.share.forget_fid(s, f.fid)
            except OSError:
                pass  # the fid is gone either way
        if node.lookups <= 0 and not node.opens and node is not self.inodes.root:
            self.inodes.drop(node)
            if node.busy == 0:
                await self._give_back(s, node)

    # --- extended attributes ------------------------------------------------------------

    @fuse_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if name == b"security.capability":
            # The kernel asks before every write, to drop a file capability: a round trip
            # per write. The mount is nosuid, so capabilities never apply through it, and
            # the gateway's own write on the host drops them there.
            raise pyfuse3.FUSEError(errno.ENODATA)
        key = os.fsdecode(name)

        async def fn(s: Session, fids: list[int], _: bool) -> bytes:
            return await self.share.xattr_read(s, fids[0], key)

        return await self._on([self._node(inode)], fn)

    @fuse_errors
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        self._writable()
        key = os.fsdecode(name)

        async def fn(s: Session, fids: list[int], _: bool) -> None:
            await xattr_write(s, fids[0], key, value, 0)

        await self._on([self._node(inode)], fn)

    @fuse_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        async def fn(s: Session, fids: list[int], _: bool) -> bytes:
            return await self.share.xattr_read(s, fids[0], "")

        raw = await self._on([self._node(inode)], fn)
        return [n for n in raw.split(b"\0") if n]

    @fuse_errors
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._writable()
        key = os.fsdecode(name)

        async def fn(s: Session, fids: list[int], _: bool) -> None:
            # Linux's way, which the gateway reads as removal: size 0, XATTR_REPLACE.
            await xattr_write(s, fids[0], key, b"", os.XATTR_REPLACE)

        await self._on([self._node(inode)], fn)
