"""One FUSE mount served on an asyncio loop: requests read from ``/dev/fuse``, each
answered by a handler of the client's operations (``vshare.fuse._ops``).

Why our own and not libfuse's (through pyfuse3): the kernel's offer at FUSE_INIT is ours
to take. libfuse 3.14 cannot ask for HANDLE_KILLPRIV_V2, without which the kernel sends,
around every write, chown and chmod of a ``tar x``, a GETXATTR of ``security.capability``
and a GETATTR to learn whether set-id bits must go: 4.4 of the 13.5 requests per created
file, each a trip through this process. Here the client kills set-id bits itself (on a
write or truncation the kernel flags, and the gateway's chown does it on the host), and
asks for writes as large as its messages (``max_write``, MAX_PAGES).

Each request runs as an asyncio task owned by the session (``_tasks``), cancelled and
awaited when the mount ends; a reply is one ``write`` of the device. Notifications
(``invalidate_*``) write the device from a worker thread: the kernel may hold them until
a request of ours is answered, which the loop thread must stay free to do.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from vshare.fuse.device import wire
from vshare.fuse.device.types import EntryAttributes, FUSEError, RequestContext, SetattrFields

#: A SETATTR's new attributes, which of them change, and its file handle if any.
_SetattrArgs = tuple[EntryAttributes, SetattrFields, int | None]

log = logging.getLogger("vshare.fuse")

#: Kernel requests the kernel may have in the background (readahead, writeback) at once.
MAX_BACKGROUND = 64
#: Requests read and dispatched per wake-up before the loop runs anything else.
READS_PER_WAKEUP = 64
#: Requests an interrupt (the caller took a signal: Ctrl-C on a stat or read that waits for
#: a gateway being failed over) answers at once with EINTR. Each only asks: its handler
#: runs on to its end and its answer is dropped, so nothing it changes (the inode table,
#: a file's position in a reconnection) is left half done. Requests that make or forget
#: something the kernel must learn of (lookup, open, create, release...) are answered
#: when done, as before; the kernel waits for them.
INTERRUPTIBLE = frozenset(
    {wire.GETATTR, wire.READ, wire.READLINK, wire.STATFS, wire.GETXATTR, wire.LISTXATTR}
)

#: What a reply is written from: a read's data stays the view of the frame it came in.
Buffer = bytes | bytearray | memoryview
Handler = Callable[[wire.Header, bytes], Awaitable[bytes | Sequence[Buffer] | None]]
#: A request answered at once from what the client knows, or None: then by its Handler.
FastHandler = Callable[[wire.Header, bytes], bytes | None]


class MountError(OSError):
    """fusermount3 refused the mount (its message is the error's)."""


def mount_device(mountpoint: str, options: Iterable[str]) -> int:
    """Mount a FUSE file system at ``mountpoint`` through ``fusermount3`` (root or not)
    and return the ``/dev/fuse`` descriptor it passes back."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        done = subprocess.run(
            ["fusermount3", "-o", ",".join(sorted(options)), "--", mountpoint],
            env={**os.environ, "_FUSE_COMMFD": str(theirs.fileno())},
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            msg = done.stderr.strip().removeprefix("fusermount3: ") or "fusermount3 failed"
            raise MountError(errno.EIO, msg)
        theirs.close()
        _, fds, _, _ = socket.recv_fds(ours, 1, 1)
    if not fds:
        raise MountError(errno.EIO, "fusermount3 passed no /dev/fuse descriptor")
    return fds[0]


def unmount_device(mountpoint: str) -> None:
    """Detach the mount (lazily, as libfuse does when its session ends)."""
    subprocess.run(
        ["fusermount3", "-u", "-q", "-z", "--", mountpoint],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )


class DeviceSession:
    """Serves ``ops`` on the mounted ``/dev/fuse`` descriptor ``fd``.

    ``max_write``: the largest write the kernel sends (bounded by its 256 pages).
    """

    def __init__(self, ops: Any, fd: int, *, max_write: int = 1024 * 1024) -> None:
        self.ops = ops
        self.fd = fd
        self.max_write = max(4096, min(max_write, 256 * 4096))
        # A read must hold the largest request: a WRITE's header, arguments and data.
        self._buf = bytearray(self.max_write + 64 * 1024)
        self._view = memoryview(self._buf)
        self._tasks: set[asyncio.Task[None]] = set()
        #: Interruptible requests not yet answered, by ``unique``.
        self._interruptible: set[int] = set()
        self._done: asyncio.Future[None] | None = None
        self._notices: queue.SimpleQueue[tuple[int, bytes, bool] | None] | None = None
        self._noticer: threading.Thread | None = None
        #: The kernel can expire a name without unhashing it (set at INIT).
        self._expire_only = False
        self._handlers: dict[int, Handler] = {
            wire.LOOKUP: self._lookup,
            wire.GETATTR: self._getattr,
            wire.SETATTR: self._setattr,
            wire.READLINK: self._readlink,
            wire.SYMLINK: self._symlink,
            wire.MKNOD: self._mknod,
            wire.MKDIR: self._mkdir,
            wire.UNLINK: self._unlink,
            wire.RMDIR: self._rmdir,
            wire.RENAME: self._rename,
            wire.RENAME2: self._rename2,
            wire.LINK: self._link,
            wire.OPEN: self._open,
            wire.READ: self._read,
            wire.WRITE: self._write_op,
            wire.STATFS: self._statfs,
            wire.RELEASE: self._release,
            wire.FSYNC: self._fsync,
            wire.FALLOCATE: self._fallocate,
            wire.SETXATTR: self._setxattr,
            wire.GETXATTR: self._getxattr,
            wire.LISTXATTR: self._listxattr,
            wire.REMOVEXATTR: self._removexattr,
            wire.FLUSH: self._flush,
            wire.OPENDIR: self._opendir,
            wire.READDIR: self._readdir,
            wire.READDIRPLUS: self._readdir,
            wire.RELEASEDIR: self._releasedir,
            wire.FSYNCDIR: self._fsyncdir,
            wire.CREATE: self._create,
        }
        #: A SETATTR's arguments as its fast path read them, for the task that answers
        #: it when that path could not (by its request's unique; else read again).
        self._setattr_read: tuple[int, _SetattrArgs] | None = None
        # The operations' ``*_now`` methods: what needs no request to the gateway is
        # answered in the device's reader callback, no task made (most of what the
        # kernel sends around a ``tar x``: lookups of new names, cached attributes,
        # setattrs merged into an open file's, getxattrs of security.capability).
        self._fast: dict[int, FastHandler] = {
            op: fn
            for op, name, fn in (
                (wire.LOOKUP, "lookup_now", self._lookup_now),
                (wire.GETATTR, "getattr_now", self._getattr_now),
                (wire.SETATTR, "setattr_now", self._setattr_now),
                (wire.GETXATTR, "getxattr_now", self._getxattr_now),
                (wire.WRITE, "write_now", self._write_now),
                (wire.FLUSH, "flush_now", self._flush_now),
            )
            if hasattr(ops, name)
        }

    # -- the loop --

    async def serve(self) -> None:
        """Answer requests until the file system is unmounted."""
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        os.set_blocking(self.fd, False)
        loop.add_reader(self.fd, self._readable)
        try:
            await self._done
        finally:
            loop.remove_reader(self.fd)
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(list(self._tasks))

    def close(self, *, mountpoint: str | None = None) -> None:
        """Unmount (when ``mountpoint`` is given) and let go of the device."""
        if self._notices is not None:
            self._notices.put(None)
        if mountpoint is not None:
            unmount_device(mountpoint)
        os.close(self.fd)

    def _end(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _readable(self) -> None:
        for _ in range(READS_PER_WAKEUP):
            try:
                n = os.readv(self.fd, [self._buf])
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    continue  # a request interrupted before we read it
                if exc.errno != errno.ENODEV:
                    log.error("reading /dev/fuse: %s; the mount ends", exc)
                self._end()  # ENODEV: unmounted
                return
            self._dispatch(self._view[:n])

    def _dispatch(self, data: memoryview) -> None:
        """``data``: one read of the device, in the read buffer (valid until the next
        read): the request's arguments are copied out of it once, as ``body``."""
        try:
            header, length = wire.parse_header(data)
        except wire.WireError as exc:
            log.error("a request from the kernel we cannot read: %s", exc)
            return
        body = bytes(data[wire.IN_HEADER.size : length])
        op = header.opcode
        fast = self._fast.get(op)
        if fast is not None and self._answer_now(fast, header, body):
            return
        handler = self._handlers.get(op)
        if handler is not None:
            if op in INTERRUPTIBLE:
                self._interruptible.add(header.unique)
            self._spawn(self._answer(handler, header, body))
        elif op in (wire.FORGET, wire.BATCH_FORGET):  # no reply
            try:
                forgets = (
                    [(header.nodeid, wire.u64(body))] if op == wire.FORGET else _batch_forget(body)
                )
            except wire.WireError as exc:
                log.error("a forget we cannot read: %s", exc)
                return
            self._spawn(self.ops.forget(forgets))
        elif op == wire.INIT:
            try:
                self._reply(header.unique, [self._init(wire.init_in(body))])
            except (FUSEError, wire.WireError) as exc:
                log.error("FUSE_INIT refused: %s", exc)
                self._fail(header.unique, errno.EPROTO)
        elif op == wire.INTERRUPT:  # no reply of its own
            try:
                unique = wire.u64(body)
            except wire.WireError as exc:
                log.error("an interrupt we cannot read: %s", exc)
                return
            if unique in self._interruptible:  # else answered already, or runs to its end
                self._interruptible.discard(unique)
                self._fail(unique, errno.EINTR)
        elif op == wire.DESTROY:
            self._reply(header.unique, [])
            self._end()
        else:
            self._fail(header.unique, errno.ENOSYS)

    def _answer_now(self, fast: FastHandler, header: wire.Header, body: bytes) -> bool:
        """Answer from what the client knows, with no task made; False if it cannot."""
        try:
            out = fast(header, body)
        except FUSEError as exc:
            self._fail(header.unique, exc.errno)
            return True
        except wire.WireError as exc:
            log.error("opcode %d: %s", header.opcode, exc)
            self._fail(header.unique, errno.EIO)
            return True
        if out is None:
            return False
        self._reply(header.unique, [out])
        return True

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, handler: Handler, header: wire.Header, body: bytes) -> None:
        try:
            out = await handler(header, body)
        except FUSEError as exc:
            if self._unanswered(header):
                self._fail(header.unique, exc.errno)
        except wire.WireError as exc:
            log.error("opcode %d: %s", header.opcode, exc)
            if self._unanswered(header):
                self._fail(header.unique, errno.EIO)
        except Exception:
            log.exception("opcode %d failed", header.opcode)
            if self._unanswered(header):
                self._fail(header.unique, errno.EIO)
        else:
            if self._unanswered(header) and out is not None:
                self._reply(header.unique, [out] if isinstance(out, bytes) else out)

    def _unanswered(self, header: wire.Header) -> bool:
        """Whether the request still waits for its answer (not answered EINTR on an
        interrupt); from here on, it is answered."""
        if header.opcode not in INTERRUPTIBLE:
            return True
        try:
            self._interruptible.remove(header.unique)
        except KeyError:
            return False
        return True

    def _reply(self, unique: int, parts: Sequence[Buffer]) -> None:
        size = wire.OUT_HEADER.size + sum(map(len, parts))
        self._write([wire.OUT_HEADER.pack(size, 0, unique), *parts])

    def _fail(self, unique: int, errno_: int) -> None:
        self._write([wire.error_reply(unique, errno_)])

    def _write(self, parts: Sequence[Buffer]) -> None:
        try:
            os.writev(self.fd, parts)
        except OSError as exc:
            # ENOENT: the request was interrupted and is gone; ENODEV: unmounted.
            if exc.errno not in (errno.ENOENT, errno.ENODEV):
                log.error("replying on /dev/fuse: %s", exc)

    def _init(self, init: wire.InitIn) -> bytes:
        if init.major < wire.KERNEL_MAJOR:
            raise FUSEError(errno.EPROTO)
        want = (
            wire.ASYNC_READ
            | wire.ATOMIC_O_TRUNC
            | wire.BIG_WRITES
            | wire.AUTO_INVAL_DATA
            | wire.DO_READDIRPLUS
            | wire.ASYNC_DIO
            | wire.PARALLEL_DIROPS
            | wire.MAX_PAGES
            | wire.HANDLE_KILLPRIV_V2
            | wire.INIT_EXT
            | wire.DIRECT_IO_ALLOW_MMAP
        )
        if getattr(self.ops, "enable_writeback_cache", False):
            want |= wire.WRITEBACK_CACHE
        if getattr(self.ops, "cache_symlinks", False):
            want |= wire.CACHE_SYMLINKS
        flags = want & init.flags
        self._expire_only = bool(init.flags & wire.HAS_EXPIRE_ONLY)
        log.debug("FUSE %d.%d, flags %#x of %#x", init.major, init.minor, flags, init.flags)
        return wire.init_out(
            min(init.minor, wire.KERNEL_MINOR),
            init.max_readahead,
            flags,
            MAX_BACKGROUND,
            self.max_write,
            self.max_write // 4096,
        )

    # -- notifications (from a worker thread: they may wait for the loop) --

    def invalidate_inode(self, ino: int, *, attr_only: bool = False) -> None:
        """Drop the kernel's attributes of ``ino`` (and its pages unless ``attr_only``).
        Raises OSError (ENOENT) when the kernel does not hold the inode."""
        os.write(self.fd, wire.notify_inval_inode(ino, -1 if attr_only else 0, 0))

    def invalidate_entry(self, parent: int, name: bytes, *, expire_only: bool = False) -> None:
        """Drop the kernel's entry ``name`` in ``parent``. Raises OSError (ENOENT) when
        it holds none.

        ``expire_only``: for a name that may still be there (everything dropped, names
        untold). The kernel keeps the entry and looks the name up again before it uses it,
        and drops it then if the answer differs. Unhashed instead, a directory that a
        process has as its working directory stays its working directory but has no path
        any more: getcwd fails with ENOENT (``git status``, ``make``, ``pwd``). Kernels
        before 6.2 cannot: the entry is unhashed there."""
        expire = expire_only and self._expire_only
        os.write(self.fd, wire.notify_inval_entry(parent, name, expire_only=expire))

    def invalidate_entry_async(
        self, parent: int, name: bytes, *, expire_only: bool = False
    ) -> None:
        """:meth:`invalidate_entry` from this session's notice thread, not waited for
        (callable from the loop)."""
        if self._notices is None:
            self._notices = queue.SimpleQueue()
            self._noticer = threading.Thread(
                target=self._notify_loop, name="fuse-notices", daemon=True
            )
            self._noticer.start()
        self._notices.put((parent, name, expire_only))

    def _notify_loop(self) -> None:
        assert self._notices is not None
        while (item := self._notices.get()) is not None:
            try:
                self.invalidate_entry(item[0], item[1], expire_only=item[2])
            except OSError:
                pass  # not cached, or unmounted: nothing to drop

    # -- handlers: arguments decoded, the client's operation awaited, its reply encoded --

    @staticmethod
    def _ctx(h: wire.Header) -> RequestContext:
        return RequestContext(h.uid, h.gid, h.pid)

    async def _lookup(self, h: wire.Header, body: bytes) -> bytes:
        name = wire.names(body, 1)[0]
        return wire.entry_out(await self.ops.lookup(h.nodeid, name, self._ctx(h)))

    async def _getattr(self, h: wire.Header, body: bytes) -> bytes:
        return wire.attr_out(await self.ops.getattr(h.nodeid, self._ctx(h)))

    def _lookup_now(self, h: wire.Header, body: bytes) -> bytes | None:
        e = self.ops.lookup_now(h.nodeid, wire.names(body, 1)[0], self._ctx(h))
        return None if e is None else wire.entry_out(e)

    def _getattr_now(self, h: wire.Header, body: bytes) -> bytes | None:
        e = self.ops.getattr_now(h.nodeid)
        return None if e is None else wire.attr_out(e)

    def _setattr_now(self, h: wire.Header, body: bytes) -> bytes | None:
        args = _setattr_args(h, body)
        e = self.ops.setattr_now(h.nodeid, *args, self._ctx(h))
        if e is None:  # answered in a task, which takes the arguments as read here
            self._setattr_read = (h.unique, args)
            return None
        return wire.attr_out(e)

    def _getxattr_now(self, h: wire.Header, body: bytes) -> bytes | None:
        self.ops.getxattr_now(h.nodeid, wire.names(body[8:], 1)[0])  # raises, or None
        return None

    def _write_now(self, h: wire.Header, body: bytes) -> bytes | None:
        io = wire.io_in(body)
        data = wire.write_data(body, io.size)
        kill = bool(io.flags & wire.WRITE_KILL_SUIDGID)
        n = self.ops.write_now(io.fh, io.offset, data, kill_setid=kill)
        return None if n is None else wire.write_out(n)

    def _flush_now(self, h: wire.Header, body: bytes) -> bytes | None:
        return b"" if self.ops.flush_now(wire.release_in(body)) else None

    async def _setattr(self, h: wire.Header, body: bytes) -> bytes:
        read, self._setattr_read = self._setattr_read, None
        attr, fields, fh = (
            read[1] if read is not None and read[0] == h.unique else (_setattr_args(h, body))
        )
        return wire.attr_out(await self.ops.setattr(h.nodeid, attr, fields, fh, self._ctx(h)))

    async def _readlink(self, h: wire.Header, body: bytes) -> bytes:
        return bytes(await self.ops.readlink(h.nodeid, self._ctx(h)))

    async def _symlink(self, h: wire.Header, body: bytes) -> bytes:
        name, target = wire.names(body, 2)
        return wire.entry_out(await self.ops.symlink(h.nodeid, name, target, self._ctx(h)))

    async def _mknod(self, h: wire.Header, body: bytes) -> bytes:
        mode, rdev = wire.u32_pair(body)
        name = wire.names(body[16:], 1)[0]
        return wire.entry_out(await self.ops.mknod(h.nodeid, name, mode, rdev, self._ctx(h)))

    async def _mkdir(self, h: wire.Header, body: bytes) -> bytes:
        mode, _umask = wire.u32_pair(body)
        name = wire.names(body[8:], 1)[0]
        return wire.entry_out(await self.ops.mkdir(h.nodeid, name, mode, self._ctx(h)))

    async def _unlink(self, h: wire.Header, body: bytes) -> bytes:
        await self.ops.unlink(h.nodeid, wire.names(body, 1)[0], self._ctx(h))
        return b""

    async def _rmdir(self, h: wire.Header, body: bytes) -> bytes:
        await self.ops.rmdir(h.nodeid, wire.names(body, 1)[0], self._ctx(h))
        return b""

    async def _rename(self, h: wire.Header, body: bytes) -> bytes:
        newdir = wire.u64(body)
        old, new = wire.names(body[8:], 2)
        await self.ops.rename(h.nodeid, old, newdir, new, 0, self._ctx(h))
        return b""

    async def _rename2(self, h: wire.Header, body: bytes) -> bytes:
        newdir, flags, old, new = wire.rename2_in(body)
        await self.ops.rename(h.nodeid, old, newdir, new, flags, self._ctx(h))
        return b""

    async def _link(self, h: wire.Header, body: bytes) -> bytes:
        old = wire.u64(body)
        name = wire.names(body[8:], 1)[0]
        return wire.entry_out(await self.ops.link(old, h.nodeid, name, self._ctx(h)))

    async def _open(self, h: wire.Header, body: bytes) -> bytes:
        flags, _open_flags = wire.u32_pair(body)
        info = await self.ops.open(h.nodeid, flags, self._ctx(h))
        return wire.open_out(info.fh, _open_flags_of(info))

    async def _read(self, h: wire.Header, body: bytes) -> list[Buffer]:
        io = wire.io_in(body)
        # The bytes as the gateway's reply brought them (a view of the received frame):
        # written to the device from there, not copied first.
        return [await self.ops.read(io.fh, io.offset, io.size)]

    async def _write_op(self, h: wire.Header, body: bytes) -> bytes:
        io = wire.io_in(body)
        data = wire.write_data(body, io.size)
        kill = bool(io.flags & wire.WRITE_KILL_SUIDGID)
        return wire.write_out(await self.ops.write(io.fh, io.offset, data, kill_setid=kill))

    async def _statfs(self, h: wire.Header, body: bytes) -> bytes:
        return wire.statfs_out(await self.ops.statfs(self._ctx(h)))

    async def _release(self, h: wire.Header, body: bytes) -> bytes:
        await self.ops.release(wire.release_in(body))
        return b""

    async def _fsync(self, h: wire.Header, body: bytes) -> bytes:
        await self.ops.fsync(*wire.fsync_in(body))
        return b""

    async def _fallocate(self, h: wire.Header, body: bytes) -> bytes:
        await self.ops.fallocate(*wire.fallocate_in(body))
        return b""

    async def _setxattr(self, h: wire.Header, body: bytes) -> bytes:
        size, _flags = wire.u32_pair(body)
        name = wire.names(body[8:], 1)[0]
        start = 8 + len(name) + 1
        value = body[start : start + size]
        await self.ops.setxattr(h.nodeid, name, value, self._ctx(h))
        return b""

    async def _getxattr(self, h: wire.Header, body: bytes) -> bytes:
        size, _ = wire.u32_pair(body)
        value = bytes(await self.ops.getxattr(h.nodeid, wire.names(body[8:], 1)[0], self._ctx(h)))
        return _sized(value, size)

    async def _listxattr(self, h: wire.Header, body: bytes) -> bytes:
        size, _ = wire.u32_pair(body)
        listed = await self.ops.listxattr(h.nodeid, self._ctx(h))
        return _sized(b"".join(bytes(n) + b"\0" for n in listed), size)

    async def _removexattr(self, h: wire.Header, body: bytes) -> bytes:
        await self.ops.removexattr(h.nodeid, wire.names(body, 1)[0], self._ctx(h))
        return b""

    async def _flush(self, h: wire.Header, body: bytes) -> bytes:
        await self.ops.flush(wire.release_in(body))
        return b""

    async def _opendir(self, h: wire.Header, body: bytes) -> bytes:
        fh = await self.ops.opendir(h.nodeid, self._ctx(h))
        return wire.open_out(fh, 0)

    async def _readdir(self, h: wire.Header, body: bytes) -> list[bytes]:
        io = wire.io_in(body)
        token = wire.ReaddirToken(io.size, h.opcode == wire.READDIRPLUS)
        await self.ops.readdir(io.fh, io.offset, token)
        return token.parts

    async def _releasedir(self, h: wire.Header, body: bytes) -> bytes:
        await self.ops.releasedir(wire.release_in(body))
        return b""

    async def _fsyncdir(self, h: wire.Header, body: bytes) -> bytes:
        await self.ops.fsyncdir(*wire.fsync_in(body))
        return b""

    async def _create(self, h: wire.Header, body: bytes) -> list[bytes]:
        flags, mode, _open_flags, name = wire.create_in(body)
        info, e = await self.ops.create(h.nodeid, name, mode, flags, self._ctx(h))
        return [wire.entry_out(e), wire.open_out(info.fh, _open_flags_of(info))]


def _open_flags_of(info: Any) -> int:
    flags = 0
    if info.direct_io:
        flags |= wire.FOPEN_DIRECT_IO
    if info.keep_cache:
        flags |= wire.FOPEN_KEEP_CACHE
    if info.nonseekable:
        flags |= wire.FOPEN_NONSEEKABLE
    return flags


def _sized(value: bytes, size: int) -> bytes:
    """A getxattr or listxattr reply: the size alone when asked with size 0, ERANGE when
    the caller's buffer is too small."""
    if size == 0:
        return wire.xattr_size_out(len(value))
    if len(value) > size:
        raise FUSEError(errno.ERANGE)
    return value


def _batch_forget(body: bytes) -> list[tuple[int, int]]:
    count, _ = wire.u32_pair(body)
    pairs = memoryview(body)[8 : 8 + 16 * count].cast("Q")
    return [(pairs[2 * i], pairs[2 * i + 1]) for i in range(len(pairs) // 2)]


def _setattr_args(h: wire.Header, body: bytes) -> _SetattrArgs:
    """A SETATTR's new attributes, which of them change, and its file handle if any."""
    s = wire.setattr_in(body)
    v = s.valid
    now = time.time_ns()
    attr = EntryAttributes(
        st_ino=h.nodeid,
        st_mode=s.mode,
        st_uid=s.uid,
        st_gid=s.gid,
        st_size=s.size,
        st_atime_ns=now if v & wire.FATTR_ATIME_NOW else s.atime_ns,
        st_mtime_ns=now if v & wire.FATTR_MTIME_NOW else s.mtime_ns,
    )
    fields = SetattrFields(
        update_mode=bool(v & wire.FATTR_MODE),
        update_uid=bool(v & wire.FATTR_UID),
        update_gid=bool(v & wire.FATTR_GID),
        update_size=bool(v & wire.FATTR_SIZE),
        update_atime=bool(v & (wire.FATTR_ATIME | wire.FATTR_ATIME_NOW)),
        update_mtime=bool(v & (wire.FATTR_MTIME | wire.FATTR_MTIME_NOW)),
        update_ctime=bool(v & wire.FATTR_CTIME),
        kill_setid=bool(v & wire.FATTR_KILL_SUIDGID),
    )
    fh = s.fh if v & wire.FATTR_FH else None
    return attr, fields, fh
