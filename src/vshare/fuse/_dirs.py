"""Directory handlers of the FUSE client: a listing with attributes (readdirplus), one
pipelined batch of requests per 32 entries."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import time
from collections.abc import Sequence
from typing import Any

from vshare.client import Session, StatResult, read_dirents
from vshare.fuse import _attrs, device
from vshare.fuse._base import (
    LIST_AHEAD_PER_DIRECTORY,
    READDIR_BATCH,
    RELIST_AFTER,
    RELIST_GAIN,
    RELIST_PER,
    RELIST_UNLISTED,
    RELIST_UNLISTED_SIZE,
    FidOperations,
    fuse_errors,
)
from vshare.fuse._inodes import Inode, OpenDir
from vshare.protocol import (
    DOTL_DIRECTORY,
    DOTL_RDONLY,
    GETATTR_ALL,
    IOHDRSZ,
    Message,
    Rgetattr,
    Rreaddirplus,
    Tclunk,
    Tgetattr,
    Treaddirplus,
    Twalk,
    Twalkopen,
    unpack_dirents_plus,
)

log = logging.getLogger("vshare.fuse")
#: Bytes of a Rreaddirplus per byte of a directory's size on the host, at most (an entry:
#: 12 bytes or more on the host's file systems, ~180 in a reply with its attributes).
ONE_REPLY_PER_HOST_BYTE = 16


def _gone(reply: Message | OSError) -> bool:
    """A walk or getattr of a listed name that failed because the name is gone (removed
    since the listing): the entry is left out. Any other error is not the listing's
    answer: the entry is asked for again."""
    return isinstance(reply, OSError) and reply.errno in (errno.ENOENT, errno.ESTALE)


class DirectoryOperations(FidOperations):
    """opendir, readdir, releasedir."""

    @fuse_errors
    async def opendir(self, inode: int, ctx: device.RequestContext) -> int:
        # No request yet: the directory is opened on the gateway at its first readdir.
        # Programs open directories they never read (rm -r, find and tar open each one
        # again for its fd, to work relative to it), and the kernel has already checked
        # the permission (default_permissions).
        node = self._node(inode)
        fh = self._next_fh
        self._next_fh += 1
        self._dirs[fh] = OpenDir(node)
        return fh

    def _known_listing(self, node: Inode) -> list[tuple[str, Inode, StatResult]] | None:
        """The listing of ``node`` from what we know, when we know it whole (we made it
        or listed it within the mode's timeout, our own changes applied since) and have
        fresh attributes of every entry; else None. ``rm -rf`` and ``find`` open and read
        each directory twice (a directory costs three requests a listing: its Twalkopen,
        Treaddirplus and Tclunk); the second reading is answered here."""
        now = time.monotonic()
        if node.children is None or now >= node.complete_until:
            return None
        out: list[tuple[str, Inode, StatResult]] = []
        for name in sorted(node.children):
            child = self.inodes.by_path.get((*node.parts, name))
            if child is None or child.attrs is None or now - child.attrs_at >= self.timeout:
                return None
            out.append((name, child, child.attrs))
        return out

    async def _list(
        self, d: OpenDir, *, ahead: bool = False
    ) -> list[tuple[str, Inode, StatResult]]:
        """Every entry of ``d`` with its inode and attributes (readdirplus); after the
        listing asked for ahead of it, if one is on its way (``ahead``: this is it)."""
        coming = None if ahead else self._ahead.get(d.node.number)
        if coming is not None:
            await coming.wait()
        known = self._known_listing(d.node)
        if known is not None:
            return known

        async def fn(s: Session, _fids: list[int], _: bool) -> list[tuple[str, Inode, StatResult]]:
            if d.epoch != s.epoch:
                whole = await self._listed_at_once(s, d.node)
                if whole is not None:
                    return await self._list_plus(s, d, whole)
                d.fid, _unit = await self._open_node(s, d.node, DOTL_RDONLY | DOTL_DIRECTORY)
                d.epoch = s.epoch
            if s.client.readdirplus:
                return await self._list_plus(s, d)
            pfid = await self._fid(s, d.node)
            names = await read_dirents(s, d.fid)
            out: list[tuple[str, Inode, StatResult]] = []
            for i in range(0, len(names), READDIR_BATCH):
                out += await self._stat_entries(s, d.node, pfid, names[i : i + READDIR_BATCH])
            self._complete(d.node, {e.name for e in names})
            return out

        return await self._on([d.node], fn, walk=False)

    async def _listed_at_once(self, s: Session, node: Inode) -> Rreaddirplus | None:
        """A small directory's whole listing in one round trip: its Twalkopen, Treaddirplus
        and Tclunk in one write (requests on one fid keep their order), rather than a round
        trip for the open, one for the listing and the Tclunk sent after. Small: its size
        on the host says its entries fit one reply (a host's directory takes 12 bytes an
        entry or more, a reply ~180 with its attributes). None if it is not small, if the
        gateway lacks Twalkopen or Treaddirplus, or if the listing did not fit after all
        (it grew meanwhile): the caller opens it and lists it as any other."""
        count = s.client.msize - IOHDRSZ
        st = node.attrs
        if not (s.client.readdirplus and s.client.opens_new_fids) or st is None:
            return None
        if st.st_size * ONE_REPLY_PER_HOST_BYTE > count:
            return None
        pfid = await self._fid(s, node)
        fid = s.client.new_fid()
        flags = DOTL_RDONLY | DOTL_DIRECTORY
        try:
            opened, listed, _ = await s.client.pipeline(
                [Twalkopen(pfid, fid, flags, ()), Treaddirplus(fid, 0, count), Tclunk(fid)]
            )
        finally:
            s.client.release_fid(fid)  # never made, or clunked
        if isinstance(opened, OSError):
            raise opened
        if isinstance(listed, OSError):
            raise listed
        if not isinstance(listed, Rreaddirplus):
            raise OSError(errno.EPROTO, f"expected Rreaddirplus, got {type(listed).__name__}")
        return listed if listed.end else None

    async def _list_plus(
        self, s: Session, d: OpenDir, whole: Rreaddirplus | None = None
    ) -> list[tuple[str, Inode, StatResult]]:
        """The listing from a gateway that answers Treaddirplus: the entries come with
        their attributes, so no fid is walked for them; an inode without a fid gets one
        when something is done to it (``_fid``). A name whose attributes the gateway could
        not give (removed since) is asked for alone. ``whole``: the listing, read already
        in one reply (:meth:`_listed_at_once`; ``d`` has no fid then)."""
        out: list[tuple[str, Inode, StatResult]] = []
        names: set[str] = set()
        alone: list[str] = []
        offset = 0
        count = s.client.msize - IOHDRSZ
        now = time.monotonic()
        while True:
            if whole is not None:
                r = whole
            else:
                r = await s.client.call(Treaddirplus(d.fid, offset, count), Rreaddirplus)
            batch = unpack_dirents_plus(r.data)
            if not batch and not r.end:
                raise OSError(errno.EIO, "Rreaddirplus: no entries, yet not the end")
            if batch:
                offset = batch[-1][0].offset
            for e, attr in batch:
                if e.name in (".", ".."):
                    continue
                names.add(e.name)
                if attr is None:
                    alone.append(e.name)
                    continue
                st = StatResult.from_rgetattr(attr)
                node = self.inodes.for_qid([*d.node.parts, e.name], st.qid.path, st.st_mode)
                node.attrs_at = now
                out.append((e.name, node, st))
            if r.end:
                break
        pfid = await self._fid(s, d.node) if alone else -1
        for name in alone:
            try:
                fid, st = await self._walk_stat(s, pfid, name)
            except FileNotFoundError:
                names.discard(name)
                continue
            out.append((name, await self._listed(s, d.node, name, fid, st.qid.path), st))
        self._complete(d.node, names)
        return out

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
                    await self._unpin(known)
        out = []
        again: list[str] = []  # refused for now (EAGAIN: the gateway's in-flight bound)
        i = 0
        for name, known, fid in plan:
            if known is not None:
                attr = replies[i]
                i += 1
                if isinstance(attr, Rgetattr):
                    out.append((name, known, StatResult.from_rgetattr(attr)))
                elif not _gone(attr):
                    again.append(name)
                continue
            walk, attr = replies[i], replies[i + 1]
            i += 2
            if isinstance(walk, OSError):
                s.client.release_fid(fid)
                if not _gone(walk):
                    again.append(name)
                continue  # else gone since the listing
            if not isinstance(attr, Rgetattr):
                await self.share.forget_fid(s, fid)
                if not _gone(attr):
                    again.append(name)
                continue
            st = StatResult.from_rgetattr(attr)
            out.append((name, await self._listed(s, parent, name, fid, st.qid.path), st))
        for name in again:  # one at a time; an error now is the listing's
            try:
                fid, st = await self._walk_stat(s, pfid, name)
            except FileNotFoundError:
                continue
            out.append((name, await self._listed(s, parent, name, fid, st.qid.path), st))
        for old in self.inodes.over_budget():
            await self._give_back(s, old)
        return out

    async def _listed(self, s: Session, parent: Inode, name: str, fid: int, qid_path: int) -> Inode:
        """The inode of a listed entry, given the walked ``fid`` if it has none."""
        node = self.inodes.for_qid([*parent.parts, name], qid_path)
        if not self._adopt(s, node, fid):
            await self.share.forget_fid(s, fid)
        return node

    def _list_ahead(self, entries: list[tuple[str, Inode, StatResult]]) -> None:
        """``find``, ``du``, ``rm -r``, ``tar c`` read a directory, then each of its
        subdirectories in turn, each a round trip or three (on GlusterFS, a brick's OPENDIR
        and READDIRP in a worker thread) while the program waits. So when the kernel reads
        a directory, the listings of its first subdirectories are asked for in the
        background (LIST_AHEAD at once for the mount): the program's reads of them find
        them known (``_known_listing``: within the cache mode's timeout, a second in
        ``auto``). Not in ``none``, which keeps nothing."""
        if self.cache == "none" or self.background is None:
            return
        started = seen = 0
        now = time.monotonic()
        for _, node, st in entries:
            if started == LIST_AHEAD_PER_DIRECTORY or seen == 4 * LIST_AHEAD_PER_DIRECTORY:
                break  # (a huge directory of directories known already: no scan of all)
            if not stat.S_ISDIR(st.st_mode):
                continue
            seen += 1
            if node.number in self._ahead or (
                node.children is not None and now < node.complete_until
            ):
                continue  # on its way, or listed (its entries' attributes are checked later)
            done = self._ahead[node.number] = asyncio.Event()
            self.background.start_soon(self._list_one_ahead, node, done)
            started += 1

    async def _relisted(self, parent: Inode) -> bool:
        """Whether ``parent`` was just listed again for a lookup of one of its names whose
        attributes are older than the mode's timeout (True: ask ``lookup_now`` again).

        ``find | xargs stat``, ``rm -rf``, ``tar c`` or ``ls -l`` a second later look up,
        one by one, names of a directory listed more than the timeout ago (``auto``: a
        second): a round trip each, 2,000 for a directory of 2,000 files. From the
        RELIST_AFTER-th such lookup, or one per RELIST_PER names of a large directory,
        the directory is listed again with its entries' attributes (readdirplus: a request
        per ~100 entries), and the lookups wait for it. What they are told was read after
        the listing began, so the promise of the mode holds. Not when fewer than
        RELIST_GAIN of its names are left that were not looked up since: a listing (3
        requests) of a directory of one or two names saves none (``find | xargs stat`` of
        a Django tree: 2,000 such listings, a quarter of its requests).

        A directory never listed here (``stat`` or ``cat`` of many of its files by name,
        ``git status``, a build's checks of its headers) is listed from the
        RELIST_UNLISTED-th lookup, if its size (the bytes its entries take on the host's
        file system) says it is small. Not in ``none``."""
        if self.cache == "none" or self.background is None:
            return False
        coming = self._ahead.get(parent.number)
        if coming is None:
            parent.stale_lookups += 1
            if parent.children is not None:
                if len(parent.children) - parent.stale_lookups < RELIST_GAIN:
                    return False  # the listing would answer too few names not yet asked
                least = max(RELIST_AFTER, len(parent.children) // RELIST_PER)
            elif parent.attrs is not None and parent.attrs.st_size <= RELIST_UNLISTED_SIZE:
                least = RELIST_UNLISTED
            else:
                return False
            if parent.stale_lookups < least:
                return False
            coming = self._ahead[parent.number] = asyncio.Event()
            self.background.start_soon(self._list_one_ahead, parent, coming)
        await coming.wait()
        return True

    async def _list_one_ahead(self, node: Inode, done: asyncio.Event) -> None:
        try:
            async with self._ahead_slots:
                if self._known_listing(node) is not None:
                    return
                d = OpenDir(node)
                try:
                    d.entries = await self._list(d, ahead=True)
                    for _, child, st in d.entries:
                        self._take_attrs(child, st)  # as readdir gives them: _known_listing's
                except OSError as exc:  # the program's own read asks again and is told
                    log.debug("listing %s ahead: %s", "/".join(node.parts), exc)
                finally:
                    await self._close_listing(d)
        except Exception:  # a bug of ours: the program's own read is unaffected
            log.exception("listing %s ahead failed", "/".join(node.parts))
        finally:
            del self._ahead[node.number]
            done.set()

    @fuse_errors
    async def readdir(self, fh: int, start_id: int, token: device.ReaddirToken) -> None:
        d = self._dirs[fh]
        if d.entries is None or start_id == 0:
            d.entries = await self._list(d)
            self._list_ahead(d.entries)
        for i in range(start_id, len(d.entries)):
            name, node, st = d.entries[i]
            node = self.inodes.revive(node)
            self._take_attrs(node, st)
            node = self._for_kernel(node)
            e = _attrs.entry(node.number, st, self.timeout)
            if not token.add(os.fsencode(name), e, i + 1):
                return
            node.lookups += 1  # the kernel took a lookup on it (readdirplus)

    async def releasedir(self, fh: int) -> None:
        d = self._dirs.pop(fh, None)
        if d is not None:
            await self._close_listing(d)

    async def _close_listing(self, d: OpenDir) -> None:
        """What a listing held: its entries the kernel was not given go cold, its fid back."""
        s = self.share.session
        for _, node, _ in d.entries or ():
            await self._cool(s, node)  # if listed but never handed to the kernel
        if s is not None and d.epoch == s.epoch:
            await self.share.forget_fid(s, d.fid)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        pass
