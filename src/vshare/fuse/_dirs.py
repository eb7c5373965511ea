"""Directory handlers of the FUSE client: a listing with attributes (readdirplus), one
pipelined batch of requests per 32 entries."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import Any

import pyfuse3

from vshare.client import Session, StatResult
from vshare.fuse import _attrs
from vshare.fuse._base import READDIR_BATCH, FidOperations, fuse_errors
from vshare.fuse._inodes import Inode, OpenDir
from vshare.protocol import (
    DOTL_DIRECTORY,
    DOTL_RDONLY,
    GETATTR_ALL,
    IOHDRSZ,
    Dirent,
    Message,
    Rgetattr,
    Rreaddir,
    Tgetattr,
    Treaddir,
    Twalk,
    unpack_dirents,
)


def _gone(reply: Message | OSError) -> bool:
    """A walk or getattr of a listed name that failed because the name is gone (removed
    since the listing): the entry is left out. Any other error is not the listing's
    answer: the entry is asked for again."""
    return isinstance(reply, OSError) and reply.errno in (errno.ENOENT, errno.ESTALE)


class DirectoryOperations(FidOperations):
    """opendir, readdir, releasedir."""

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
            for i in range(0, len(names), READDIR_BATCH):
                out += await self._stat_entries(s, d.node, fids[0], names[i : i + READDIR_BATCH])
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
