"""File handlers of the FUSE client: open, create, read, write, flush, fsync, release.

Each open file holds its own opened fid (``_inodes.OpenFile``): a read or write is one
Tread/Twrite on it. Writes answer the kernel before the gateway answers (write-behind, up
to ``WRITE_BEHIND_BYTES`` per file; an error is told at the next operation on the file, as
a page cache does), and attribute changes made through the file are merged into one
``Tsetattr`` sent before the next request on it or at close (see ``_ops.py``).
"""

from __future__ import annotations

import errno
import functools
import os
import stat as stat_mod

from vshare.client import Session, StatResult
from vshare.fuse import _attrs, device
from vshare.fuse._base import (
    HEAD_MAX,
    HEADS_HELD,
    WRITE_BEHIND_BYTES,
    WRITE_FLAGS,
    checked_name,
    fuse_errors,
    ok,
)
from vshare.fuse._dirs import DirectoryOperations
from vshare.fuse._inodes import Inode, OpenFile
from vshare.protocol import (
    DOTL_ACCMODE,
    DOTL_CREATE,
    DOTL_EXCL,
    DOTL_RDONLY,
    DOTL_TRUNC,
    GETATTR_ALL,
    SETATTR_GID,
    SETATTR_MTIME,
    SETATTR_SIZE,
    SETATTR_UID,
    Buffer,
    Message,
    Rfallocate,
    Rlcreate,
    Rread,
    Rwrite,
    Tclunk,
    Tfallocate,
    Tfsync,
    Tgetattr,
    Tlcreate,
    Tlcreateat,
    Tread,
    Tsetattr,
    Twalk,
    Twrite,
    os_to_dotl_flags,
)


class FileOperations(DirectoryOperations):
    """The handlers of open files, under :class:`~vshare.fuse._ops.VshareOperations`."""

    def _chown_to_caller(self, fid: int, ctx: device.RequestContext) -> list[Message]:
        """The gateway gives what we create to the uid we attached as; a caller with
        another uid gets it (passthrough; squash ignores it)."""
        if ctx.uid == self._uid:
            return []
        valid = SETATTR_UID | SETATTR_GID
        return [Tsetattr(fid, valid, 0, ctx.uid, ctx.gid, 0, 0, 0, 0, 0)]

    @fuse_errors
    async def open(self, inode: int, flags: int, ctx: device.RequestContext) -> device.FileInfo:
        if flags & WRITE_FLAGS:
            self._writable()
        node = self._node(inode)
        await self._flush_pending(node)
        dotl = os_to_dotl_flags(self._cached_flags(flags & ~(os.O_CREAT | os.O_EXCL)))
        f = OpenFile(node, dotl)
        head = self._head_to_read(node, dotl)
        known = node.attrs

        async def fn(s: Session, _fids: list[int], _: bool) -> None:
            f.fid, f.iounit, data = await self._open_node_reading(s, node, dotl, head)
            f.epoch = s.epoch
            if data is not None and known is not None:
                whole = len(data) < head  # a short read: the file ends there
                if not whole or len(data) == known.st_size:
                    f.head = (data, whole, (known.st_mtime_ns, known.st_size))
                    self._head_bytes += len(data)

        await self._on([node], fn, walk=False)
        if dotl & DOTL_TRUNC and node.attrs is not None:
            truncated = Tsetattr(0, SETATTR_SIZE | SETATTR_MTIME, 0, 0, 0, 0, 0, 0, 0, 0)
            node.attrs = _attrs.after_setattr(node.attrs, truncated, False)
            node.mtime_guessed = True
        return self._file_info(self._add_file(f), node)

    @fuse_errors
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: device.RequestContext
    ) -> tuple[device.FileInfo, device.EntryAttributes]:
        self._writable()
        parent = self._node(parent_inode)
        child = checked_name(name)
        made = self._made_elsewhere(ctx, parent_inode, child)
        if made is not None:
            node = self._node(made.st_ino)
            # No fid: the echo thread only closes it, and nothing is sent for it.
            return self._file_info(self._add_file(OpenFile(node, 0)), node), made
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
            flags = dotl & ~DOTL_TRUNC
            one = s.client.opens_new_fids  # vshare.4: one request, else a clone and its Tlcreate
            msgs: list[Message] = (
                [Tlcreateat(fids[0], fid, child, flags, perm, ctx.gid)]
                if one
                else [Twalk(fids[0], fid, ()), Tlcreate(fid, child, flags, perm, ctx.gid)]
            )
            msgs += self._chown_to_caller(fid, ctx)
            if not predict:
                msgs.append(Tgetattr(fid, GETATTR_ALL))
            replies = await s.client.pipeline(msgs)
            if not one and isinstance(replies[0], OSError):
                s.client.release_fid(fid)
                raise replies[0]
            created = replies[0 if one else 1]
            if isinstance(created, OSError):
                if one:
                    s.client.release_fid(fid)  # never made
                else:
                    await self.share.forget_fid(s, fid)
                if created.errno != errno.EEXIST or (dotl & DOTL_EXCL and not retried):
                    raise created
                # Our own earlier create (retried), or a concurrent one (not O_EXCL).
                return await self._open_existing(s, fids[0], child, dotl)
            assert isinstance(created, Rlcreate)
            f = OpenFile(parent, dotl & ~(DOTL_CREATE | DOTL_EXCL | DOTL_TRUNC), fid, s.epoch)
            f.iounit = created.iounit
            if predict:
                blksize = parent.attrs.st_blksize if parent.attrs else 4096
                return f, _attrs.new_file(created.qid, perm, ctx.uid, ctx.gid, blksize)
            return f, StatResult.from_rgetattr(ok(replies[-1]))  # type: ignore[arg-type]

        f, st = await self._on([parent], fn)
        node = self.inodes.for_qid([*parent.parts, child], st.qid.path, st.st_mode)
        node.lookups += 1
        parent.name_added(child)
        self._dir_changed(parent)
        f.node = node
        node.seen = None
        e = self._entry(node, st, ours=True)
        # Predicted, its times are this host's clock; the gateway's differ by a moment,
        # which is no change made elsewhere (``_take_attrs``).
        node.mtime_guessed = bool(predict)
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

    def _head_to_read(self, node: Inode, dotl: int) -> int:
        """How many bytes to read with the open of ``node`` (0: none): a regular file of
        known size up to HEAD_MAX, opened read-only, in a mode that caches data. The
        kernel's first READ follows the open at once; answered from those bytes, the file
        costs one round trip instead of two. Its size and a page more are asked for, so
        that a short read says the file ends there."""
        st = node.attrs
        if (
            self.cache == "none"  # every read must reach the gateway
            or dotl & (DOTL_ACCMODE | DOTL_TRUNC) != DOTL_RDONLY
            or st is None
            or not stat_mod.S_ISREG(st.st_mode)
            or not 0 < st.st_size <= HEAD_MAX
            or self._head_bytes + HEAD_MAX > HEADS_HELD
        ):
            return 0
        return (st.st_size // 4096 + 1) * 4096

    def _take_head(self, f: OpenFile, off: int, size: int) -> bytes | memoryview | None:
        """The first read of ``f``, answered from its head if the head covers it and the
        file's attributes are those it was read with (a change the client learnt of since,
        its own writes included, makes it stale); None otherwise. Either way the head goes:
        the kernel's page cache keeps what it was given."""
        head, f.head = f.head, None
        if head is None:
            return None
        data, whole, known = head
        self._head_bytes -= len(data)
        st = f.node.attrs
        if st is None or (st.st_mtime_ns, st.st_size) != known:
            return None
        if not whole and off + size > len(data):
            return None
        return memoryview(data)[off : off + size]

    @fuse_errors
    async def read(self, fh: int, off: int, size: int) -> Buffer:
        f = self._files[fh]
        await self._drain(f, tell=True)
        await self._flush_pending(f.node)
        if f.head is not None:
            head = self._take_head(f, off, size)
            if head is not None:
                return head
        out = bytearray()
        while len(out) < size:
            call = functools.partial(self._read, f, off + len(out), size - len(out))
            data, asked = await self._file_call(f, call)
            if not out and len(data) == size:
                return data
            out += data
            if len(data) < asked:
                break  # a short read is the end of the file: asking again would say 0
        return bytes(out)

    async def _read(
        self, f: OpenFile, at: int, want: int, s: Session, fid: int
    ) -> tuple[Buffer, int]:
        asked = min(want, self._io_size(s, f))
        r = await s.client.call(Tread(fid, at, asked), Rread)
        return r.data, asked

    def write_now(
        self, fh: int, off: int, buf: bytes | memoryview, *, kill_setid: bool = False
    ) -> int | None:
        """A write answered at once and sent behind (see ``write``), else None: when it
        must wait (mode ``none``, an error to tell, the write-behind full, changes to
        send before it, set-id bits to drop)."""
        f = self._files.get(fh)
        if (
            f is None
            or self.cache == "none"
            or f.error is not None
            or f.pending is not None
            or f.behind_bytes + len(buf) > WRITE_BEHIND_BYTES
            or (kill_setid and self._setid_drop(f.node) is not None)
            or not self._behind(f, functools.partial(self._write_all, f, off, buf), len(buf))
        ):
            return None
        self._wrote(f.node, off + len(buf))
        return len(buf)

    @fuse_errors
    async def write(
        self, fh: int, off: int, buf: bytes | memoryview, *, kill_setid: bool = False
    ) -> int:
        """``kill_setid``: the writer lacks CAP_FSETID, so set-id bits go (the kernel
        leaves that to us: HANDLE_KILLPRIV_V2; the gateway writes as a user that keeps
        them)."""
        n = self.write_now(fh, off, buf, kill_setid=kill_setid)
        if n is not None:
            return n
        f = self._files[fh]
        drop = self._setid_drop(f.node) if kill_setid else None
        if drop is not None and f.node.attrs is not None:  # sent before the data (below)
            f.pending = _attrs.merge(f.pending, drop)
            f.node.attrs = _attrs.after_setattr(f.node.attrs, drop, False)
        if f.error is not None or f.behind_bytes + len(buf) > WRITE_BEHIND_BYTES:
            await self._drain(f, tell=True)
        if f.pending is not None:
            await self._send_pending(f)  # changes made before this write go first
        # The kernel's writeback cache already answers the application before the data
        # reaches us; we answer the kernel before it reaches the gateway, and tell an
        # error at the next operation on the file (close, fsync), as a page cache does.
        if self.cache == "none" or not self._behind(
            f, functools.partial(self._write_all, f, off, buf), len(buf)
        ):
            await self._write_all(f, off, buf)
        self._wrote(f.node, off + len(buf))
        return len(buf)

    @staticmethod
    def _wrote(node: Inode, end: int) -> None:
        """We wrote ``node``'s file up to ``end``: its size is known, its mtime guessed."""
        if node.attrs is not None:
            node.attrs = _attrs.after_write(node.attrs, end)
            node.mtime_guessed = True

    async def _write_all(self, f: OpenFile, off: int, buf: bytes | memoryview) -> None:
        view = memoryview(buf)
        done = 0
        while done < len(view):
            call = functools.partial(self._write, f, off + done, view[done:])
            n = await self._file_call(f, call)
            if n <= 0:
                raise OSError(errno.EIO, "the server wrote nothing")
            done += n

    async def _write(self, f: OpenFile, at: int, rest: memoryview, s: Session, fid: int) -> int:
        chunk = rest[: self._io_size(s, f)]
        return int((await s.client.call(Twrite(fid, at, chunk), Rwrite)).count)

    def flush_now(self, fh: int) -> bool:
        """A flush with nothing to wait for: no write unanswered; merged attribute changes
        sent behind (their reply is not waited for: see release). False if it must wait."""
        f = self._files.get(fh)
        if f is None:
            return True
        if f.behind or f.error is not None:
            return False
        return f.pending is None or self._behind(f, functools.partial(self._send_pending, f))

    @fuse_errors
    async def flush(self, fh: int) -> None:
        if self.flush_now(fh):
            return
        f = self._files[fh]
        await self._drain(f, tell=True)  # close() is where a write's error is told
        if f.pending is not None and self._behind(f, functools.partial(self._send_pending, f)):
            return  # merged attribute changes: their reply is not waited for (see release)
        await self._send_pending(f)

    @fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        f = self._files[fh]
        await self._drain(f, tell=True)
        await self._flush_pending(f.node)

        async def one(s: Session, fid: int) -> None:
            await s.client.rpc(Tfsync(fid, int(datasync)))

        await self._file_call(f, one)

    @fuse_errors
    async def fallocate(self, fh: int, offset: int, length: int, mode: int) -> None:
        """fallocate(2), after what was written behind; EOPNOTSUPP from a gateway older
        than ``VERSION_VSHARE_5`` (glibc's posix_fallocate then writes zeros itself). The
        file's size and blocks change: its attributes are asked for again."""
        f = self._files[fh]
        await self._drain(f, tell=True)
        await self._flush_pending(f.node)

        async def one(s: Session, fid: int) -> None:
            if not s.client.fallocates:
                raise OSError(errno.EOPNOTSUPP, "the gateway has no fallocate (vshare.5)")
            await s.client.call(Tfallocate(fid, mode, offset, length), Rfallocate)

        try:
            await self._file_call(f, one)
        finally:
            f.node.attrs_at = float("-inf")

    async def release(self, fh: int) -> None:
        f = self._files.pop(fh, None)
        if f is None:
            return
        if f.head is not None:
            self._head_bytes -= len(f.head[0])
            f.head = None
        node = f.node
        await self._drain(f, tell=False)  # the Tclunk goes after what was sent behind
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
        await self._cool(s, node)
