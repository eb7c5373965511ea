"""Handlers for file I/O: lopen, lcreate, read, write, readdir (and vshare's readdirplus),
fsync (see ops.py)."""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Sequence
from typing import Final

from vshare.backend._handle import FileSpan
from vshare.backend.base import Attr, DirEntry, Listing, Node, OpenFile, check_name
from vshare.gateway.fids import INLINE, Fid, Link, node_qid, qid_of
from vshare.gateway.ops_base import (
    MAX_OFFSET,
    OperationsBase,
    WouldBlock,
    os_error,
)
from vshare.policy import squash_mode
from vshare.protocol import (
    ATTRS_SIZE,
    FALLOC_KEEP_SIZE,
    FALLOC_PUNCH_HOLE,
    FALLOC_ZERO_RANGE,
    FALLOCATE_MODES,
    IOHDRSZ,
    NO_ATTRS,
    DirentPacker,
    Message,
    Rfallocate,
    Rfsync,
    Rlcreate,
    Rlcreateat,
    Rlopen,
    Rread,
    Rreaddir,
    Rreaddirplus,
    Rwrite,
    Tfallocate,
    Tfsync,
    Tlcreate,
    Tlcreateat,
    Tlopen,
    Tread,
    Treaddir,
    Treaddirplus,
    Twrite,
    dotl_to_os_flags,
    pack_attrs,
)

_DIRENT_MIN: Final = 24  # a packed entry without its name
#: Entries of one Rreaddirplus at most (see IoOps.readdirplus).
READDIRPLUS_MAX: Final = 512
#: Entries a listing answered on the event loop may hold (a stat each, where metadata is
#: cheap): a directory that does not end within them is listed in a worker thread.
INLINE_LISTING_MAX: Final = 64


class IoOps(OperationsBase):
    """Tlopen, Tlcreate, Tlcreateat, Tread, Twrite, Tfallocate, Treaddir, Treaddirplus,
    Tfsync."""

    async def lopen(self, msg: Tlopen) -> Message:
        fid = self._fid(msg.fid)
        if fid.is_open:
            raise os_error(errno.EBUSY)
        flags = dotl_to_os_flags(msg.flags) & ~(os.O_CREAT | os.O_EXCL | os.O_NOCTTY)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
            self._writable(fid)
        b = self.backend
        fid.file = await self._run_nowait(fid.att, b.open_nowait, b.open, fid.node, flags)
        fid.flags = flags
        return Rlopen(node_qid(fid.node), self.msize - IOHDRSZ)

    def _create_args(self, msg: Tlcreate | Tlcreateat) -> tuple[int, int]:
        """The open flags and mode a create request asks for (modes verbatim: the guest
        has applied its umask; squash gives everything its fixed modes)."""
        flags = dotl_to_os_flags(msg.flags) & ~(os.O_CREAT | os.O_EXCL | os.O_NOCTTY)
        return flags, squash_mode(msg.mode) if self.squash else msg.mode & 0o7777

    def _create_in(
        self, fid: Fid, msg: Tlcreate | Tlcreateat, flags: int, mode: int
    ) -> tuple[Node, OpenFile, Link, int]:
        """Create and open ``msg.name`` in the directory of ``fid`` (blocking), its owners
        set; with the link to that directory (the file's ``up``) and the links made."""
        node, file = self.backend.create(fid.node, msg.name, flags, mode)
        try:
            self._own(fid.att, node, msg.gid, mode)
            link, links_made = fid.link_here(self.backend)  # the directory: the file's up
        except BaseException:
            file.close()
            node.close()
            raise
        return node, file, link, links_made

    async def lcreate(self, msg: Tlcreate) -> Message:
        fid = self._fid(msg.fid)
        self._dir(fid)
        check_name(msg.name)
        self._writable(fid)
        flags, mode = self._create_args(msg)

        def create() -> tuple[Node, int, int]:
            node, file, link, links_made = self._create_in(fid, msg, flags, mode)
            old = fid.node
            fid.node, fid.file, fid.flags = node, file, flags
            self._hold(fid.att, node)
            old.close()  # a directory: nothing to let go
            freed = fid.leave()
            fid.up, fid.name = link, msg.name
            return node, links_made, freed

        node, links_made, freed = await self._run(fid.att, create)
        self.fid_budget.force(links_made)
        self.fid_budget.give(freed)
        return Rlcreate(node_qid(node), self.msize - IOHDRSZ)

    async def lcreateat(self, msg: Tlcreateat) -> Message:
        """vshare's extension (``VERSION_VSHARE_4``): Tlcreate in the directory ``dfid``
        whose file becomes the new fid ``newfid``; ``dfid`` stays the directory. The
        checks are Tlcreate's and a walk's to a new fid; the file's place is a link to the
        directory fid's own, as for a file walked from it."""
        dfid, _ = self._dir_to_change(msg.dfid, msg.name)
        self._new_fid_allowed(msg.newfid)
        flags, mode = self._create_args(msg)

        def create() -> tuple[Fid, int]:
            node, file, link, links_made = self._create_in(dfid, msg, flags, mode)
            return Fid(dfid.att, node, link, msg.name, file, flags), links_made

        new, links_made = await self._run(dfid.att, create)
        self.fid_budget.force(links_made)
        try:
            self._add_fid(msg.newfid, new)  # EMFILE if others took the last fid meanwhile
        except OSError:
            self.fid_budget.give(await self._run_shielded(dfid.att, new.close))
            raise
        return Rlcreateat(node_qid(new.node), self.msize - IOHDRSZ)

    async def read(self, msg: Tread) -> Message:
        fid = self._fid(msg.fid)
        if msg.offset > MAX_OFFSET:
            raise os_error(errno.EINVAL)
        count = min(msg.count, self.msize - IOHDRSZ)
        if fid.xattr_data is not None:
            data = fid.xattr_data[msg.offset : msg.offset + count]
            return Rread(data)
        file = self._file_to_read(fid)
        # A pooled buffer: the session gives it back once the reply is sent. It may hold an
        # earlier read's bytes, so only the n bytes read now are ever sent. A small read
        # gets a buffer of its size: the memory it holds is what it was charged (session.py).
        pool = self.ctx.read_buffers
        buf = pool.take() if count > pool.size // 4 else bytearray(count)
        view = memoryview(buf)[:count]
        try:
            if INLINE.get():
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

    @staticmethod
    def _file_to_read(fid: Fid) -> OpenFile:
        """The open file a Tread of ``fid`` reads: EBADF if it is not open for reading,
        EISDIR for a directory."""
        file = fid.file
        if file is None or fid.flags & os.O_ACCMODE == os.O_WRONLY:
            raise os_error(errno.EBADF)
        if fid.node.is_dir:
            raise os_error(errno.EISDIR)
        return file

    def read_span(self, msg: Tread, least: int) -> FileSpan | None:
        """Tread's data as a span of the file, to be sent from its page cache with no copy
        here (:meth:`Backend.span_nowait`), when at least ``least`` bytes of it are all
        cached; else None, with nothing done: :meth:`read` answers it (and any error)."""
        fid = self.fids.get(msg.fid)
        if fid is None or fid.xattr_data is not None or msg.offset > MAX_OFFSET:
            return None
        try:
            file = self._file_to_read(fid)
        except OSError:
            return None
        count = min(msg.count, self.msize - IOHDRSZ)
        if count < least:
            return None
        span = self.backend.span_nowait(file, msg.offset, count, least)
        if span is not None:
            self.ctx.metrics.bytes_read.inc(span.count)
            self.ctx.metrics.bytes_read_from_files.inc(span.count)
        return span

    async def write(self, msg: Twrite) -> Message:
        fid = self._fid(msg.fid)
        if fid.xattr_write is not None:
            pending = fid.xattr_write
            self._writable(fid)  # and again at Tclunk, where it takes effect
            if msg.offset != len(pending.data) or msg.offset + len(msg.data) > pending.size:
                raise os_error(errno.EINVAL)
            pending.data += msg.data
            return Rwrite(len(msg.data))
        file = fid.file
        if file is None or fid.flags & os.O_ACCMODE == os.O_RDONLY:
            raise os_error(errno.EBADF)
        self._writable(fid)  # checked on every write: an rw→ro change applies at once
        if msg.offset > MAX_OFFSET or msg.offset + len(msg.data) > MAX_OFFSET:
            raise os_error(errno.EFBIG)
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

    async def fallocate(self, msg: Tfallocate) -> Message:
        """vshare's extension (``VERSION_VSHARE_5``): fallocate(2) of an open fid, with
        the modes FUSE passes on (others: EOPNOTSUPP, as Linux for modes it lacks)."""
        if msg.mode & ~FALLOCATE_MODES:
            raise os_error(errno.EOPNOTSUPP)
        fid = self._fid(msg.fid)
        file = fid.file
        if file is None or fid.flags & os.O_ACCMODE == os.O_RDONLY:
            raise os_error(errno.EBADF)
        self._writable(fid)
        if msg.length == 0 or msg.offset > MAX_OFFSET or msg.length > MAX_OFFSET:
            raise os_error(errno.EINVAL)
        if msg.offset + msg.length > MAX_OFFSET:
            raise os_error(errno.EFBIG)
        limit = fid.att.share.size_bytes
        await self._run(fid.att, self._fallocate_within, fid, file, limit, msg)
        return Rfallocate()

    def _fallocate_within(
        self, fid: Fid, file: OpenFile, limit: int | None, msg: Tfallocate
    ) -> None:
        """The backend's fallocate, keeping a share within its size. Usage counts apparent
        sizes (quota.py), so growth is reserved as a write's; and space kept beyond the end
        of the file (KEEP_SIZE), which no size would show, is refused in a share with a
        size (EOPNOTSUPP: a program then writes, as glibc's posix_fallocate does)."""
        keep, punch = bool(msg.mode & FALLOC_KEEP_SIZE), bool(msg.mode & FALLOC_PUNCH_HOLE)
        call = functools.partial(
            self.backend.fallocate, file, msg.offset, msg.length, keep_size=keep,
            punch_hole=punch, zero_range=bool(msg.mode & FALLOC_ZERO_RANGE),
        )  # fmt: skip

        if limit is None or punch:  # a hole frees; it never grows the file
            call()
            return
        size = self.backend.getattr(fid.node).size
        end = msg.offset + msg.length
        if keep and end > size:
            raise os_error(errno.EOPNOTSUPP)
        with fid.att.usage.growing(limit, 0 if keep else max(0, end - size), fid.node.qid_path):
            call()

    async def readdir(self, msg: Treaddir) -> Message:
        data, _ = await self._listing(msg.fid, msg.offset, msg.count, plus=False)
        return Rreaddir(data)

    async def readdirplus(self, msg: Treaddirplus) -> Message:
        """vshare's extension (``VERSION_VSHARE_2``): each entry with its attributes, as
        Tgetattr would answer them (ownership squashed alike), so that a client needs no
        walk and getattr per entry. At most ``READDIRPLUS_MAX`` entries a reply: each one
        costs a stat, and one request must not hold a worker thread for long."""
        data, end = await self._listing(msg.fid, msg.offset, msg.count, plus=True)
        return Rreaddirplus(int(end), data)

    async def _listing(
        self, fid_number: int, offset: int, count: int, *, plus: bool
    ) -> tuple[bytes, bool]:
        """Packed entries from ``offset`` on, and whether the directory ended in them."""
        fid = self._fid(fid_number)
        file = fid.file
        if file is None or not fid.node.is_dir:
            raise os_error(errno.EBADF if file is None else errno.ENOTDIR)
        if offset > MAX_OFFSET:
            raise os_error(errno.EINVAL)
        count = min(count, self.msize - IOHDRSZ)
        if not plus and offset and offset == fid.listing_end:
            # A Treaddir asked again from where the last one ended (it has no end flag):
            # the end, with no backend call (once: a later ask looks again). A
            # Treaddirplus says its end, so asking again from there means "look again".
            fid.listing_end = None
            return b"", True
        at_root = fid.at_root
        root_qid_path = fid.att.root.qid_path
        directory = fid.node
        entry_min = _DIRENT_MIN + 8 + (ATTRS_SIZE if plus else 0)

        def fill(limit: int) -> tuple[bytes, bool, int]:
            """(packed entries, whether they reach the end, the cookie after them)."""
            packer = DirentPacker(count)
            cookie = offset
            inline = INLINE.get()
            with_attrs = (
                self._listed_from_memory
                if inline and not self.metadata_inline
                else self.backend.readdir_attrs
            )
            while True:
                want = max(1, (count - packer.size) // entry_min)
                attrs: Sequence[Attr | None] = ()
                if plus or inline:
                    want = min(want, limit - len(packer))
                    if want <= 0:
                        return packer.getvalue(), False, cookie
                if plus:
                    listed = with_attrs(directory, file, cookie, want)
                    entries: Sequence[DirEntry] = [e for e, _ in listed.entries]
                    attrs = [a for _, a in listed.entries]
                    end = listed.end
                else:
                    entries, end = self.backend.readdir(file, cookie, want)
                if not entries:
                    return packer.getvalue(), True, cookie
                for i, entry in enumerate(entries):
                    qid_path = entry.qid_path
                    if at_root and entry.name == "..":
                        qid_path = root_qid_path  # never reveal what is above the share
                    # Names are bytes (surrogate-escaped): every name a backend lists packs.
                    kind = entry.file_type
                    qid = qid_of(kind, qid_path)
                    extra = b""
                    if plus:
                        attr = attrs[i]
                        extra = NO_ATTRS if attr is None else pack_attrs(self._rgetattr(fid, attr))
                    if not packer.add(qid, entry.cookie, kind >> 12, entry.name, extra):
                        return packer.getvalue(), False, cookie
                    cookie = entry.cookie
                if end:  # the backend saw the end: no call to learn it
                    return packer.getvalue(), True, cookie

        if INLINE.get():
            # A small directory, whole, where its stats are cheap or its listing is in the
            # backend's memory (runs_inline: from its start): one turn on the loop, no
            # worker thread. A larger one is listed again from its start in a thread: a
            # listing changes nothing.
            data, end, after = fill(INLINE_LISTING_MAX)
            if not end:
                raise WouldBlock
        else:
            data, end, after = await self._run(fid.att, fill, READDIRPLUS_MAX)
        fid.listing_end = after if end and after != offset and not plus else None
        return data, end

    def _listed_from_memory(
        self, directory: Node, file: OpenFile, cookie: int, n: int
    ) -> Listing[tuple[DirEntry, Attr | None]]:
        """:meth:`Backend.readdir_attrs_nowait`, or WouldBlock (a listing changes nothing)."""
        listed = self.backend.readdir_attrs_nowait(directory, file, cookie, n)
        if listed is None:
            raise WouldBlock
        return listed

    async def fsync(self, msg: Tfsync) -> Message:
        fid = self._fid(msg.fid)
        if fid.file is None:
            raise os_error(errno.EBADF)
        file, datasync = fid.file, bool(msg.datasync)
        await self._run(fid.att, lambda: self.backend.fsync(file, datasync=datasync))
        return Rfsync()
