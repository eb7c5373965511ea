"""Handlers for extended attributes and byte-range locks: xattrwalk, xattrcreate, lock,
getlock (see ops.py; an xattr write takes effect at Tclunk, in ops_fids.py)."""

from __future__ import annotations

import errno
import os

from vshare.backend.base import Node
from vshare.gateway.fids import Fid, XattrWrite, hold
from vshare.gateway.locks import Owner, TooManyLocks
from vshare.gateway.ops_base import (
    MAX_OFFSET,
    XATTR_SIZE_MAX,
    OperationsBase,
    os_error,
)
from vshare.protocol import (
    LOCK_BLOCKED,
    LOCK_SUCCESS,
    LOCK_TYPE_UNLCK,
    LOCK_TYPE_WRLCK,
    XATTR_NAMESPACES_NAME,
    Message,
    Rgetlock,
    Rlock,
    Rxattrcreate,
    Rxattrwalk,
    Tgetlock,
    Tlock,
    Txattrcreate,
    Txattrwalk,
)


class XattrLockOps(OperationsBase):
    """Txattrwalk, Txattrcreate, Tlock, Tgetlock."""

    async def xattrwalk(self, msg: Txattrwalk) -> Message:
        fid = self._fid(msg.fid)
        if msg.newfid != msg.fid:
            self._new_fid_allowed(msg.newfid)
        namespaces = tuple(self.ctx.config.xattr_namespaces)

        def fetch() -> tuple[bytes, Node]:
            if msg.name == XATTR_NAMESPACES_NAME:  # what this gateway shows (vshare.2)
                value = b"".join(ns.encode() + b"\0" for ns in namespaces)
            elif msg.name:
                if not msg.name.startswith(namespaces):
                    raise os_error(errno.ENODATA)  # invisible, as if absent
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
            raise os_error(errno.EBUSY)
        self._writable(fid)
        self._check_xattr_name(msg.name)
        if msg.attr_size > XATTR_SIZE_MAX:
            raise os_error(errno.E2BIG)
        if msg.flags & ~(os.XATTR_CREATE | os.XATTR_REPLACE):
            raise os_error(errno.EINVAL)
        fid.xattr_write = XattrWrite(msg.name, msg.attr_size, msg.flags)
        return Rxattrcreate()

    def _check_xattr_name(self, name: str) -> None:
        if not name.startswith(tuple(self.ctx.config.xattr_namespaces)):
            raise os_error(errno.EOPNOTSUPP)

    # --- locks --------------------------------------------------------------------------

    def _owner(self, client_id: str, proc_id: int) -> Owner:
        return (self.session_id, client_id, proc_id)

    async def lock(self, msg: Tlock) -> Message:
        fid = self._fid(msg.fid)
        if fid.file is None:
            raise os_error(errno.EBADF)
        if msg.type != LOCK_TYPE_UNLCK and msg.start > MAX_OFFSET:
            raise os_error(errno.EINVAL)
        owner = self._owner(msg.client_id, msg.proc_id)
        start, length = msg.start, msg.length
        try:
            ok = self.ctx.locks.lock(
                fid.node.qid_path, owner, msg.type, start, length, self.lock_budget
            )
        except ValueError:
            raise os_error(errno.EINVAL) from None
        except TooManyLocks:
            raise os_error(errno.ENOLCK) from None
        return Rlock(LOCK_SUCCESS if ok else LOCK_BLOCKED)

    async def getlock(self, msg: Tgetlock) -> Message:
        fid = self._fid(msg.fid)
        if fid.file is None:
            raise os_error(errno.EBADF)
        # Linux (6.1) asks every F_GETLK with type UNLCK: read that as "any lock at all?".
        query = LOCK_TYPE_WRLCK if msg.type == LOCK_TYPE_UNLCK else msg.type
        owner = self._owner(msg.client_id, msg.proc_id)
        held = self.ctx.locks.conflict(fid.node.qid_path, owner, query, msg.start, msg.length)
        if held is None:
            return Rgetlock(LOCK_TYPE_UNLCK, msg.start, msg.length, msg.proc_id, msg.client_id)
        return Rgetlock(held.type, held.start, held.length, held.owner[2], held.owner[1])
