"""Handlers that change names in a directory: mkdir, symlink, mknod, readlink, link,
rename, renameat, unlinkat (see ops.py)."""

from __future__ import annotations

import errno
import stat
from collections.abc import Callable
from typing import Any

from vshare.backend.base import Node
from vshare.gateway.fids import INLINE, Attachment, node_qid
from vshare.gateway.ops_base import (
    OperationsBase,
    WouldBlock,
    os_error,
)
from vshare.policy import squash_mode
from vshare.protocol import (
    AT_REMOVEDIR,
    Message,
    Qid,
    Rlink,
    Rmkdir,
    Rmknod,
    Rreadlink,
    Rrename,
    Rrenameat,
    Rsymlink,
    Runlinkat,
    Tlink,
    Tmkdir,
    Tmknod,
    Treadlink,
    Trename,
    Trenameat,
    Tsymlink,
    Tunlinkat,
)


class NameOps(OperationsBase):
    """Tmkdir, Tsymlink, Tmknod, Treadlink, Tlink, Trename, Trenameat, Tunlinkat."""

    async def mkdir(self, msg: Tmkdir) -> Message:
        fid, parent = self._dir_to_change(msg.dfid, msg.name)
        mode = squash_mode(msg.mode) if self.squash else msg.mode & 0o7777
        create = self._create_owned(
            fid.att, msg.gid, mode, self.backend.mkdir, parent, msg.name, mode
        )
        return Rmkdir(await self._run(fid.att, create))

    def _create_owned(
        self, att: Attachment, gid: int, mode: int, fn: Callable[..., Node], *args: Any
    ) -> Callable[[], Qid]:
        """A call that creates something with ``fn(*args)``, gives it its owners
        (:meth:`_own`) and returns its qid (to run in a worker thread or, answered on the
        loop, right there)."""

        def create() -> Qid:
            node = fn(*args)
            try:
                self._own(att, node, gid, mode)
                return node_qid(node)
            finally:
                node.close()

        return create

    async def symlink(self, msg: Tsymlink) -> Message:
        fid, parent = self._dir_to_change(msg.fid, msg.name)
        if not msg.symtgt or "\0" in msg.symtgt:
            raise os_error(errno.EINVAL)
        create = self._create_owned(
            fid.att, msg.gid, 0, self.backend.symlink, parent, msg.name, msg.symtgt
        )
        return Rsymlink(await self._run(fid.att, create))

    async def mknod(self, msg: Tmknod) -> Message:
        fid, parent = self._dir_to_change(msg.dfid, msg.name)
        kind = stat.S_IFMT(msg.mode)
        if kind not in (stat.S_IFIFO, stat.S_IFSOCK):
            raise os_error(errno.EPERM)  # no device nodes, ever; files and dirs have their own ops
        perms = squash_mode(msg.mode) if self.squash else msg.mode & 0o7777
        create = self._create_owned(
            fid.att, msg.gid, perms, self.backend.mknod, parent, msg.name, kind | perms, 0
        )
        return Rmknod(await self._run(fid.att, create))

    async def readlink(self, msg: Treadlink) -> Message:
        fid = self._fid(msg.fid)
        if not fid.node.is_symlink:
            raise os_error(errno.EINVAL)
        return Rreadlink(await self._run(fid.att, self.backend.readlink, fid.node))

    async def link(self, msg: Tlink) -> Message:
        dfid, parent = self._dir_to_change(msg.dfid, msg.name)
        target = self._fid(msg.fid)
        if target.att.share is not dfid.att.share:
            raise os_error(errno.EXDEV)
        if target.node.is_dir:
            raise os_error(errno.EPERM)
        await self._run(dfid.att, self.backend.link, parent, msg.name, target.node)
        return Rlink()

    async def rename(self, msg: Trename) -> Message:
        dfid, new_parent = self._dir_to_change(msg.dfid, msg.name)
        fid = self._fid(msg.fid)
        self._writable(fid)
        if fid.att.share is not dfid.att.share:
            raise os_error(errno.EXDEV)
        if fid.up is None or fid.name is None:
            raise os_error(errno.EBUSY)

        def move() -> tuple[int, int]:
            # The name the fid was walked by may be stale (renamed or replaced by someone
            # else): only move it if it still names the fid's file, as Tremove does.
            old_parent, old_name = self._check_still_named(fid)
            self.backend.rename(old_parent, old_name, new_parent, msg.name)
            link, links_made = dfid.link_here(self.backend)
            freed = fid.leave()
            fid.up, fid.name = link, msg.name
            return links_made, freed

        links_made, freed = await self._run(fid.att, move)
        self.fid_budget.force(links_made)
        self.fid_budget.give(freed)
        return Rrename()

    async def renameat(self, msg: Trenameat) -> Message:
        old, old_parent = self._dir_to_change(msg.olddirfid, msg.oldname)
        new, new_parent = self._dir_to_change(msg.newdirfid, msg.newname)
        if old.att.share is not new.att.share:
            raise os_error(errno.EXDEV)
        rename = self.backend.rename
        await self._run(old.att, rename, old_parent, msg.oldname, new_parent, msg.newname)
        return Rrenameat()

    async def unlinkat(self, msg: Tunlinkat) -> Message:
        fid, parent = self._dir_to_change(msg.dirfid, msg.name)
        rmdir = bool(msg.flags & AT_REMOVEDIR)
        if INLINE.get() and not self.backend.unlink_is_quick(parent, msg.name, rmdir=rmdir):
            raise WouldBlock  # a large file's blocks to free: in a worker thread
        await self._run(fid.att, lambda: self._unlink(fid.att, parent, msg.name, rmdir=rmdir))
        return Runlinkat()
