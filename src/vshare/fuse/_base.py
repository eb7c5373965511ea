"""The FUSE client's plumbing: fids held per inode and per open file, requests sent
behind the application's back, and what every handler shares (see ``_ops.py`` for the
design, ``_inodes.py`` for why fids are pinned)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

from vshare.client import AsyncShare, Session, StatResult
from vshare.fuse import _attrs, device
from vshare.fuse._feed import Feed, Replay
from vshare.fuse._inodes import Inode, InodeTable, OpenDir, OpenFile
from vshare.protocol import (
    DOTL_ACCMODE,
    DOTL_CREATE,
    DOTL_EXCL,
    DOTL_TRUNC,
    GETATTR_ALL,
    IOHDRSZ,
    SETATTR_MODE,
    Buffer,
    Message,
    Rgetattr,
    Rgetattrat,
    Rlopen,
    Rread,
    Rwalkopen,
    Tgetattr,
    Tgetattrat,
    Tlopen,
    Tread,
    Tsetattr,
    Twalk,
    Twalkopen,
)
from vshare.transport import TaskSet

log = logging.getLogger("vshare.fuse")
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: ``coherent``: ``always``'s timeouts, kept correct by the gateway's change feed (_feed.py).
TIMEOUTS = {"none": 0.0, "auto": 1.0, "always": 3600.0, "coherent": 3600.0}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
#: Walked fids kept for inodes; past it the least recently used go back (and are walked
#: again from their path when needed).
MAX_INODE_FIDS = 8192
#: ... and never fewer than this, however often the gateway refuses fids (EMFILE).
MIN_INODE_FIDS = 64
#: Subdirectories' listings asked for ahead at once, for the whole mount (_dirs.py), and at
#: most how many of one directory's.
LIST_AHEAD = 4
LIST_AHEAD_PER_DIRECTORY = 16
#: A directory once listed whole is listed again, with its entries' attributes, when this
#: many lookups of its names found them older than the cache mode's timeout, or one per
#: RELIST_PER of its names if more (``VshareOperations.lookup``).
RELIST_AFTER = 2
RELIST_PER = 32
#: ... if at least this many of its names were not looked up since it was listed.
RELIST_GAIN = 4
#: A directory never listed here is listed, the same way, from this many such lookups if
#: its size (bytes its entries take on the host) is at most RELIST_UNLISTED_SIZE: a
#: listing of a small directory costs a few requests, its lookups one each.
RELIST_UNLISTED = 8
RELIST_UNLISTED_SIZE = 64 * 1024
#: Entries of one readdir whose attributes are asked for in one write: 64 requests, well
#: under what a gateway takes in flight from one session (256), with room for the other
#: handlers' requests (an entry refused with EAGAIN is asked for again, alone).
READDIR_BATCH = 32


#: A file opened to read whose size is known and at most this is read with its open, in the
#: same round trip (``FileOperations.open``): a source file, a header, a small config.
HEAD_MAX = 128 * 1024
#: Bytes of such heads the open files may hold at once (opened, not yet read).
HEADS_HELD = 16 * 1024 * 1024
#: Bytes of write-behind one open file may have unanswered before a write waits.
WRITE_BEHIND_BYTES = 8 * 1024 * 1024


def fuse_errors(
    fn: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Every ``OSError`` (the gateway's errno) becomes the ``FUSEError`` FUSE answers."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except device.FUSEError:
            raise
        except OSError as exc:
            raise device.FUSEError(exc.errno or errno.EIO) from None
        except ValueError:
            raise device.FUSEError(errno.EINVAL) from None

    return wrapper


def ok(reply: Message | OSError) -> Message:
    if isinstance(reply, OSError):
        raise reply
    return reply


def checked_name(name: bytes) -> str:
    decoded = os.fsdecode(name)
    if "/" in decoded or decoded in ("", ".", ".."):
        raise device.FUSEError(errno.EINVAL)
    return decoded


class FidOperations:
    """State and helpers of :class:`~vshare.fuse._ops.VshareOperations` (the handlers are
    there and in ``_dirs.py``)."""

    supports_dot_lookup = False

    def __init__(
        self,
        share: AsyncShare,
        *,
        cache: str = "auto",
        readonly: bool = False,
        max_fids: int = MAX_INODE_FIDS,
    ) -> None:
        if cache not in TIMEOUTS:
            raise ValueError(f"cache must be one of {', '.join(TIMEOUTS)}, not {cache!r}")
        self.share = share
        self.cache = cache
        self.readonly = readonly
        self.timeout = TIMEOUTS[cache]
        #: The kernel gathers writes in its page cache (not with ``none``: direct I/O).
        self.enable_writeback_cache = cache != "none" and not readonly
        #: The kernel keeps a symlink's target with its inode: a target never changes
        #: (a new link is a new inode), but ``none`` promises every read reaches us.
        self.cache_symlinks = cache != "none"
        self.inodes = InodeTable(max_fids)
        #: The change feed's follower (cache mode ``coherent``; set by the mount).
        self.feed: Feed | None = None
        self._files: dict[int, OpenFile] = {}
        #: Bytes of the open files' heads held (``OpenFile.head``), at most HEADS_HELD.
        self._head_bytes = 0
        self._dirs: dict[int, OpenDir] = {}
        self._next_fh = 1
        #: The uid the share was attached as: the gateway gives it what we create.
        self._uid = os.getuid()
        #: Whether the gateway applies ownership changes (passthrough) or not (squash):
        #: learnt from the first chown, which is then sent with a Tgetattr.
        self._owners_honoured: bool | None = None
        #: (session epoch, the xattr namespaces the gateway shows), once asked (vshare.2).
        self._xattr_namespaces: tuple[int, tuple[str, ...]] | None = None
        #: Set by the mount: without it every request is waited for.
        self.background: TaskSet | None = None
        #: Directories whose listing is being asked for ahead (_dirs.py), by inode number:
        #: an event set when it is done; and the bound on how many at once.
        self._ahead: dict[int, asyncio.Event] = {}
        self._ahead_slots = asyncio.Semaphore(LIST_AHEAD)

    def _replay(self, ctx: device.RequestContext, parent: int, name: str) -> Replay | None:
        """The change feed's replay of ``name`` in ``parent`` that this request is (the
        echo thread's, fuse/_feed.py): answered from it, nothing sent."""
        return None if self.feed is None else self.feed.replay_for(ctx.pid, parent, name)

    def _made_elsewhere(
        self, ctx: device.RequestContext, parent: int, name: str
    ) -> device.EntryAttributes | None:
        """When this request (a create, mkdir or symlink) is the change feed replaying a
        name made elsewhere: its entry, as if made here (one lookup more); nothing sent."""
        replay = self._replay(ctx, parent, name)
        if replay is None or not replay.made or replay.st is None:
            return None
        directory = self._node(parent)
        node = self.inodes.for_qid([*directory.parts, name], replay.st.qid.path, replay.st.st_mode)
        node.lookups += 1
        directory.name_added(name)
        return self._entry(node, replay.st)

    def _node(self, inode: int) -> Inode:
        node = self.inodes.get(inode)
        if node is None:
            raise device.FUSEError(errno.ESTALE)
        return node

    async def _fid(self, s: Session, node: Inode) -> int:
        """``node``'s walked fid on session ``s`` (walked again from its path if it has
        none there). The caller has pinned ``node``."""
        if node is self.inodes.root:
            return s.root
        if node.epoch != s.epoch or node.fid < 0:
            node.fid = await self._walk_to(s, node.parts)
            node.epoch = s.epoch
        self.inodes.used(node)
        for old in self.inodes.over_budget():
            await self._give_back(s, old)
        return node.fid

    def _held_fid(self, s: Session, node: Inode) -> int:
        """``node``'s fid on ``s`` if it holds one (the root always does), else -1."""
        if node is self.inodes.root:
            return s.root
        return node.fid if node.epoch == s.epoch else -1

    def _directory_fid(self, s: Session, parts: Sequence[str]) -> tuple[Inode, int] | None:
        """The inode of the directory holding the name ``parts`` and its fid on ``s``,
        if we know that directory and it holds a fid there."""
        directory = self._directory_of(parts)
        if directory is None:
            return None
        pfid = self._held_fid(s, directory)
        return None if pfid < 0 else (directory, pfid)

    def _directory_of(self, parts: Sequence[str]) -> Inode | None:
        """The inode of the directory holding the name ``parts``, if we know it."""
        if not parts:
            return None
        return self.inodes.root if len(parts) == 1 else self.inodes.by_path.get(tuple(parts[:-1]))

    def _parent_in_use(self, s: Session, parts: Sequence[str]) -> Inode | None:
        """The inode of the directory holding the name ``parts`` if it holds a fid on ``s``
        or the kernel holds it (looked up or open): worth a fid of its own, from which this
        name and each of its siblings is then reached by one name. A directory listed from
        what the client knows (``coherent``, ``always``) is opened and read with no fid, so
        without this every file opened in it walked its own path from the share root and
        kept a fid (``tar c`` after ``drop_caches``: Twalk + Twalkopen per file)."""
        directory = self._directory_of(parts)
        if directory is None or not (
            self._held_fid(s, directory) >= 0 or directory.lookups > 0 or directory.opens
        ):
            return None
        return directory

    @contextlib.asynccontextmanager
    async def _pinned(self, node: Inode) -> AsyncIterator[None]:
        """``node``'s fid is not given back meanwhile (see ``_inodes.py``)."""
        node.busy += 1
        try:
            yield
        finally:
            await self._unpin(node)

    async def _open_node(self, s: Session, node: Inode, flags: int) -> tuple[int, int]:
        """A new fid on ``node`` opened with ``flags``: (fid, iounit). An inode that holds
        no fid (it came with a listing) but whose directory is in use
        (:meth:`_parent_in_use`, given a fid first if it has none) is opened by one
        Twalkopen from the directory and is given no fid of its own: a file read once
        costs two requests and a Tclunk. Not so a directory (below).
        The caller has pinned ``node``."""
        fid, iounit, _ = await self._open_node_reading(s, node, flags, 0)
        return fid, iounit

    async def _open_node_reading(
        self, s: Session, node: Inode, flags: int, head: int
    ) -> tuple[int, int, Buffer | None]:
        """:meth:`_open_node`, and with ``head`` > 0 the file's first ``head`` bytes read
        in the same round trip (:meth:`_walk_open`); None when they were not read."""
        # A directory gets its fid all the same: what is done in it (lookups, unlinks)
        # needs one, and opening it from that fid costs nothing more.
        is_dir = node.attrs is not None and stat.S_ISDIR(node.attrs.st_mode)
        directory = (
            None if is_dir or self._held_fid(s, node) >= 0 else self._parent_in_use(s, node.parts)
        )
        if directory is None:
            return await self._walk_open(s, await self._fid(s, node), (), flags, head)
        async with self._pinned(directory):
            pfid = await self._fid(s, directory)
            return await self._walk_open(s, pfid, (node.parts[-1],), flags, head)

    async def _stat_node(self, s: Session, node: Inode) -> StatResult:
        """``node``'s attributes on ``s``: a Tgetattr of its fid; for an inode that holds
        none, a Tgetattrat of its name in its directory's fid (vshare.2; the directory in
        use, :meth:`_parent_in_use`), ESTALE if the name names another file now; else its
        fid walked first. The caller pinned it."""
        fid = self._held_fid(s, node)
        if fid >= 0:
            return await self._stat(s, fid)
        directory = self._parent_in_use(s, node.parts) if s.client.readdirplus else None
        if directory is None:
            return await self._stat(s, await self._fid(s, node))
        async with self._pinned(directory):
            st = await self._stat_at(s, await self._fid(s, directory), node.parts[-1])
        if st.qid.path != node.qid_path:
            raise OSError(errno.ESTALE, os.strerror(errno.ESTALE), "/".join(node.parts))
        return st

    @staticmethod
    async def _stat_at(s: Session, dfid: int, name: str) -> StatResult:
        """The attributes of ``name`` in the directory ``dfid``, no fid made (vshare.2)."""
        r = await s.client.call(Tgetattrat(dfid, name, GETATTR_ALL), Rgetattrat)
        return StatResult.from_rgetattr(r)

    async def _walk_to(self, s: Session, parts: list[str]) -> int:
        """A new fid for the file at ``parts``: one name from its directory's fid when we
        hold that (an entry that came with a listing has no fid of its own until it is
        used), else the whole path from the share root."""
        held = self._directory_fid(s, parts)
        if held is None:
            return await self.share.walk_from_root(s, parts)
        directory, pfid = held
        async with self._pinned(directory):
            return await self.share.walk_from(s, pfid, (parts[-1],))

    def _fresh_entry(self, node: Inode) -> device.EntryAttributes | None:
        """``node``'s entry from its attributes if they are as fresh as the cache mode
        promises, else None."""
        if (
            self.cache == "none"
            or node.attrs is None
            or time.monotonic() - node.attrs_at >= self.timeout
        ):
            return None
        return _attrs.entry(node.number, node.attrs, self.timeout)

    async def _cool(self, s: Session | None, node: Inode) -> None:
        """If the kernel holds ``node`` no more (no lookup, no open file): kept cold
        (``_inodes.py``), its fid given back (now, or by ``_unpin`` when the last request
        using it ends)."""
        if node.lookups > 0 or node.opens or node is self.inodes.root:
            return
        for old in self.inodes.cool(node):
            await self._give_back(s, old)
        if node.busy == 0:
            await self._give_back(s, node)

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
        self,
        nodes: Sequence[Inode],
        fn: Callable[[Session, list[int], bool], Awaitable[T]],
        *,
        walk: bool = True,
    ) -> T:
        """Run ``fn(session, fids of nodes, retried)``, the nodes pinned meanwhile; with
        ``walk`` False the nodes are pinned but not walked to (``fn`` gets no fids).

        EMFILE is the gateway's fid budget for this session: fids are given back until
        we hold a quarter fewer, and ``fn`` runs once more (as ``retried``: a step of it
        may have been done before the refusal)."""
        for node in nodes:
            node.busy += 1
        try:
            for attempt in (0, 1):

                async def op(s: Session, retried: bool, again: bool = attempt > 0) -> T:
                    fids = [await self._fid(s, node) for node in nodes] if walk else []
                    return await fn(s, fids, retried or again)

                try:
                    return await self.share.on_session(op)
                except OSError as exc:
                    if exc.errno != errno.EMFILE or attempt or not await self._shed_fids():
                        raise
            raise AssertionError("unreachable")
        finally:
            for node in nodes:
                await self._unpin(node)

    async def _unpin(self, node: Inode) -> None:
        """One use of ``node``'s fid ended; if it was the last and the kernel forgot the
        inode meanwhile, its fid goes back now (``forget`` could not give it back)."""
        node.busy -= 1
        if node.busy == 0 and node.fid >= 0 and not self._held(node):
            await self._give_back(self.share.session, node)

    def _held(self, node: Inode) -> bool:
        """Whether the kernel may name ``node``: it holds a lookup or an open file of it."""
        return node is self.inodes.root or (
            self.inodes.get(node.number) is node and (node.lookups > 0 or bool(node.opens))
        )

    async def _shed_fids(self) -> bool:
        """The gateway refused us a fid: hold at most three quarters of the walked fids we
        hold now, from now on (the bound is the gateway's, which we cannot ask). False if
        there was nothing to give back."""
        held = len(self.inodes.with_fid)
        if held <= MIN_INODE_FIDS:
            return False
        self.inodes.max_fids = max(MIN_INODE_FIDS, held * 3 // 4)
        log.warning(
            "the gateway refused a fid (EMFILE) with %d walked fids held: keeping at most %d",
            held,
            self.inodes.max_fids,
        )
        s = self.share.session
        for old in self.inodes.over_budget():
            await self._give_back(s, old)
        return True

    async def _walk_then(
        self, s: Session, pfid: int, names: tuple[str, ...], then: Callable[[int], Message]
    ) -> tuple[int, Message]:
        """A new fid walked from ``pfid`` by ``names``, and ``then(new fid)`` sent in the
        same write: (the fid, the reply to ``then``). On an error of either the fid is
        given back and the error raised."""
        fid = s.client.new_fid()
        walk, reply = await s.client.pipeline([Twalk(pfid, fid, names), then(fid)])
        if isinstance(walk, OSError):
            s.client.release_fid(fid)
            raise walk
        if isinstance(reply, OSError):
            await self.share.forget_fid(s, fid)
            raise reply
        return fid, reply

    async def _walk_stat(self, s: Session, pfid: int, name: str) -> tuple[int, StatResult]:
        """A new fid for ``name`` in the directory ``pfid``, and its attributes, in one
        round trip."""
        fid, attr = await self._walk_then(s, pfid, (name,), lambda f: Tgetattr(f, GETATTR_ALL))
        assert isinstance(attr, Rgetattr)
        return fid, StatResult.from_rgetattr(attr)

    def _entry(
        self,
        node: Inode,
        st: StatResult,
        *,
        fresh: bool = True,
        ours: bool = False,
        lookup: bool = False,
    ) -> device.EntryAttributes:
        """The entry of ``node`` with ``st``: from the gateway (``fresh``), or computed
        here after a change of ours. ``ours``: the gateway's answer to a change of ours,
        which the kernel made too. ``lookup``: the reply to a lookup, which gives the
        kernel one more lookup on the inode (``_for_kernel``'s)."""
        if fresh and not ours:
            self._take_attrs(node, st)
        else:
            node.attrs = st
            node.mtime_guessed &= not ours
        if fresh:
            node.attrs_at = time.monotonic()
        if lookup:
            node = self._for_kernel(node)
            node.lookups += 1
        return _attrs.entry(node.number, st, self.timeout)

    def _take_attrs(self, node: Inode, st: StatResult) -> None:
        """``node``'s attributes are ``st``, from the gateway.

        With the writeback cache the kernel trusts its own size and mtime of a regular
        file whatever a reply says (fs/fuse: ``fuse_get_cache_mask``): a file changed by
        another VM or on the host would keep its old size here, and be read cut short or
        padded with zeros, as long as the kernel holds its inode. So a change of either
        that is not ours (no file of it open to write here, whose writes explain it)
        marks the kernel's copy stale, and the next lookup of the file gives the kernel a
        new inode for it (``_for_kernel``). Not with the change feed (``coherent``), which
        replays the change through the mount instead, on the inode the guest's inotify
        watches."""
        old, node.attrs = node.attrs, st
        guessed, node.mtime_guessed = node.mtime_guessed, False
        if (
            self.feed is None
            and old is not None
            and stat.S_ISREG(st.st_mode)
            and (
                old.st_size != st.st_size
                # After a write of ours the gateway's mtime is its own, not the one we
                # guessed (and the kernel's is its own): only the size tells.
                or (old.st_mtime_ns != st.st_mtime_ns and not guessed)
            )
            and not any(f.flags & DOTL_ACCMODE for f in node.opens)
        ):
            node.stale_in_kernel = True

    def _for_kernel(self, node: Inode) -> Inode:
        """The inode to hand the kernel in a lookup's reply (or a readdirplus entry) for
        ``node``'s file: a new one, under a new number, when the kernel's copy of its size
        and mtime is stale (``_take_attrs``) and no file of it is open here. The kernel
        then drops its old inode (a revalidated name whose number changed is looked up
        again) and makes a new one with the gateway's attributes. An open file keeps its
        inode, as on NFS: its size is the one it was opened with, plus its own writes."""
        if node.stale_in_kernel and not node.opens:
            node = self.inodes.renew(node)
        return node

    def _dir_changed(self, node: Inode, links: int = 0) -> None:
        """We added or removed a name in ``node``: its times, and its link count when
        the name is a directory."""
        if node.attrs is not None:
            node.attrs = _attrs.dir_changed(node.attrs, links)

    async def _found_fid(
        self, s: Session, parent: Inode, name: str, fid: int, st: StatResult
    ) -> device.EntryAttributes:
        """The entry of a name just walked to (``fid``: kept by its inode if it has none,
        else given back), with one more lookup."""
        node = self.inodes.for_qid([*parent.parts, name], st.qid.path, st.st_mode)
        parent.name_added(name)
        if not self._adopt(s, node, fid):
            await self.share.forget_fid(s, fid)
        return self._entry(node, st, lookup=True)

    @staticmethod
    def _setid_drop(node: Inode) -> Tsetattr | None:
        """The mode change that drops ``node``'s set-id bits, as the kernel drops them on
        a write or truncation by a caller without CAP_FSETID (it leaves that to us:
        HANDLE_KILLPRIV_V2); None when there are none to drop."""
        st = node.attrs
        drop = 0 if st is None else _attrs.setid_to_drop(st.st_mode)
        if st is None or not drop:
            return None
        return Tsetattr(0, SETATTR_MODE, stat.S_IMODE(st.st_mode) & ~drop, 0, 0, 0, 0, 0, 0, 0)

    def _writable(self) -> None:
        if self.readonly:
            raise device.FUSEError(errno.EROFS)

    def _complete(self, node: Inode, names: set[str]) -> None:
        """Every name of ``node`` is ``names``, as of now."""
        if self.cache != "none":
            node.children = names
            node.complete_until = time.monotonic() + self.timeout
            node.stale_lookups = 0

    @property
    def inode_count(self) -> int:
        return len(self.inodes)

    async def _flush_pending(self, node: Inode) -> None:
        """Everything sent or deferred through the open files of ``node`` done, before
        a request that must see it."""
        for f in list(node.opens):
            await self._drain(f, tell=False)
            if f.pending is not None:
                await self._send_pending(f)

    def _behind(self, f: OpenFile, fn: Callable[[], Awaitable[Any]], size: int = 0) -> bool:
        """Run ``fn`` in the background, counted on ``f``; False if there is no
        background to run it in (the caller then waits for it)."""
        if self.background is None:
            return False
        if f.idle is None or f.behind == 0:
            f.idle = asyncio.Event()
        f.behind += 1
        f.behind_bytes += size
        idle = f.idle

        async def run() -> None:
            try:
                await fn()
            except OSError as exc:
                f.error = f.error or exc
            except Exception:  # a bug of ours: the application learns EIO
                log.exception("request behind %s failed", "/".join(f.node.parts))
                f.error = f.error or OSError(errno.EIO, os.strerror(errno.EIO))
            finally:
                f.behind -= 1
                f.behind_bytes -= size
                if f.behind == 0:
                    idle.set()

        self.background.start_soon(run)
        return True

    async def _drain(self, f: OpenFile, *, tell: bool) -> None:
        """Wait until nothing sent behind ``f`` is unanswered; with ``tell``, raise the
        first error one of them met (once)."""
        while f.behind and f.idle is not None:
            await f.idle.wait()
        if tell and f.error is not None:
            error, f.error = f.error, None
            raise error

    @staticmethod
    async def _stat(s: Session, fid: int) -> StatResult:
        return StatResult.from_rgetattr(await s.client.call(Tgetattr(fid, GETATTR_ALL), Rgetattr))

    async def _open_fid(self, s: Session, ifid: int, flags: int) -> tuple[int, int]:
        """A new fid cloned from ``ifid`` and opened with ``flags``: (fid, iounit)."""
        fid, iounit, _ = await self._walk_open(s, ifid, (), flags)
        return fid, iounit

    async def _walk_open(
        self, s: Session, pfid: int, names: tuple[str, ...], flags: int, head: int = 0
    ) -> tuple[int, int, Buffer | None]:
        """A new fid walked from ``pfid`` by ``names`` (at most one) and opened with
        ``flags``: (fid, iounit, head). One Twalkopen (vshare.4; not for a truncation, which
        the gateway tells its change feed of from an opened fid), else a Twalk and a Tlopen
        in one write. With ``head`` > 0 (and Twalkopen), a Tread of the new fid's first
        ``head`` bytes goes in the same write: the gateway runs it once the open is done
        (requests on one fid keep their order), so open and first read cost one round
        trip; its data, or None if it failed (the read is then asked again)."""
        if not s.client.opens_new_fids or flags & DOTL_TRUNC:
            fid, opened = await self._walk_then(s, pfid, names, lambda f: Tlopen(f, flags))
            assert isinstance(opened, Rlopen)
            return fid, opened.iounit, None
        fid = s.client.new_fid()
        walkopen = Twalkopen(pfid, fid, flags, names)
        try:
            if head <= 0:
                r = await s.client.call(walkopen, Rwalkopen)
                return fid, r.iounit, None
            replies = await s.client.pipeline([walkopen, Tread(fid, 0, head)])
            done = replies[0]
            if isinstance(done, OSError):
                raise done
            if not isinstance(done, Rwalkopen):
                raise OSError(errno.EPROTO, f"expected Rwalkopen, got {type(done).__name__}")
        except OSError:
            s.client.release_fid(fid)  # never made
            raise
        read = replies[1]
        return fid, done.iounit, read.data if isinstance(read, Rread) else None

    def _file_info(self, fh: int, node: Inode) -> device.FileInfo:
        info = device.FileInfo(fh=fh)
        if self.cache == "none":
            info.direct_io = True
            info.keep_cache = False
        elif self.cache in ("always", "coherent"):  # coherent: the feed drops stale pages
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
                async with self._pinned(f.node):
                    ifid = await self._fid(s, f.node)
                    reopen = f.flags & ~(DOTL_CREATE | DOTL_EXCL | DOTL_TRUNC)
                    f.fid, f.iounit = await self._open_fid(s, ifid, reopen)
                    f.epoch = s.epoch
            return await fn(s, f.fid)

        return await self.share.on_session(op)

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
