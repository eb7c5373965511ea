"""A connected byte stream with scatter-gather sends (``sendmsg``), on any anyio backend."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence
from typing import Protocol

import anyio

from vshare.transport._identity import PeerIdentity

Buffer = bytes | bytearray | memoryview


class FileRange(Protocol):
    """``count`` bytes of the file open as ``fd``, from ``offset``: sent by
    :meth:`Connection.send_file`."""

    fd: int
    offset: int
    count: int


class Connection(Protocol):
    identity: PeerIdentity
    #: Whether :meth:`send_file` hands the file's pages to the kernel (``sendfile``) rather
    #: than reading them into this process first.
    sends_files: bool

    async def receive(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes``; ``b""`` when the peer has closed."""
        ...

    async def receive_into(self, buf: memoryview) -> int:
        """Up to ``len(buf)`` bytes into ``buf``; 0 when the peer has closed."""
        ...

    async def send(self, parts: Sequence[Buffer]) -> None:
        """Send all of ``parts`` in order, without joining them first."""
        ...

    async def send_file(self, span: FileRange) -> None:
        """Send exactly ``span.count`` bytes of the file: its bytes, then zeros if the file
        ended before (shrunk since the count was fixed: what was promised must follow)."""
        ...

    async def aclose(self) -> None: ...


#: Socket buffers big enough for a whole 1 MiB message (the largest msize), so that one
#: ``sendmsg`` hands it over and the peer takes it in one receive, decoded without being
#: reassembled: the default (~208 KiB) splits every large read or write into several
#: partial sends, wake-ups and receives. Best effort: the kernel caps it at wmem_max.
SOCKET_BUFFER = 2 * 1024 * 1024
#: Buffers one sendmsg takes at most (Linux: 1024).
_IOV_MAX = os.sysconf("SC_IOV_MAX")


def _widen_buffers(sock: socket.socket) -> None:
    if sock.family not in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6):
        return  # vsock has its own buffer options, left at the transport's defaults
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            if sock.getsockopt(socket.SOL_SOCKET, option) < SOCKET_BUFFER:
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        except OSError:
            pass


class SocketConnection:
    """A non-blocking stream socket.

    Sends go out with ``sendmsg`` of the caller's buffers, so a read reply's payload is
    never copied in Python; a file's bytes with ``sendfile``. Callers serialize their
    sends (one writer at a time).
    """

    sends_files = True

    def __init__(self, sock: socket.socket, identity: PeerIdentity) -> None:
        sock.setblocking(False)
        _widen_buffers(sock)
        self._sock = sock
        self.identity = identity
        self._closed = False
        # asyncio only (see _wait_readable): the loop the socket is registered with, and
        # the future of a receive waiting for data.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        #: Receives that waited for data (each let the event loop run others meanwhile).
        self.waits = 0
        #: The last receive took less than it asked for: the socket was empty then. A
        #: peer that sends one request and waits for its reply has sent nothing since,
        #: so the next receive waits for data before it tries (a recv failing with
        #: EAGAIN, and the exception, once per request otherwise).
        self._drained = False

    @property
    def socket(self) -> socket.socket:
        return self._sock

    async def receive(self, max_bytes: int) -> bytes:
        if self._drained:
            await self._wait_readable()
        while True:
            try:
                data = self._sock.recv(max_bytes)
            except (BlockingIOError, InterruptedError):
                await self._wait_readable()
                continue
            except (ConnectionResetError, BrokenPipeError, TimeoutError):
                return b""
            self._drained = len(data) < max_bytes
            return data

    async def receive_into(self, buf: memoryview) -> int:
        if self._drained:
            await self._wait_readable()
        while True:
            try:
                n = self._sock.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                await self._wait_readable()
                continue
            except (ConnectionResetError, BrokenPipeError, TimeoutError):
                return 0
            self._drained = n < len(buf)
            return n

    async def _wait_readable(self) -> None:
        """Wait until the socket is readable.

        On asyncio the socket stays registered with the loop between receives, so a
        request-reply exchange costs no epoll_ctl calls: ``anyio.wait_readable`` registers
        and unregisters on every wait, which at one request in flight was a good part of
        the gateway's time per request. The registration is dropped only when readiness
        is reported while nobody waits (epoll is level-triggered: it would fire again on
        every loop iteration until the data is read). Other event loops (trio, for the
        FUSE client) use anyio's portable wait.
        """
        self.waits += 1
        loop = self._loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not asyncio
                await anyio.wait_readable(self._sock)
                return
        waiter = loop.create_future()
        self._waiter = waiter
        if self._loop is None:
            loop.add_reader(self._sock.fileno(), self._on_readable)
            self._loop = loop
        try:
            await waiter
        finally:
            self._waiter = None

    def _on_readable(self) -> None:
        waiter = self._waiter
        if waiter is None:
            self._unregister()
        elif not waiter.done():
            waiter.set_result(None)

    def _unregister(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._loop = None

    async def send(self, parts: Sequence[Buffer]) -> None:
        views = [memoryview(p).cast("B") for p in parts if len(p)]
        i = 0  # the first view not sent whole
        while i < len(views):
            try:
                # at most IOV_MAX buffers a call: past it sendmsg fails (EMSGSIZE), and a
                # client that pipelines thousands of small requests hands over that many
                sent = self._sock.sendmsg(views[i : i + _IOV_MAX])
            except (BlockingIOError, InterruptedError):
                await anyio.wait_writable(self._sock)
                continue
            while sent:
                first = views[i]
                if sent >= first.nbytes:
                    sent -= first.nbytes
                    i += 1
                else:
                    views[i] = first[sent:]
                    sent = 0

    async def send_file(self, span: FileRange) -> None:
        # From the page cache to the socket in the kernel: on a Unix or TCP socket the
        # pages themselves are queued (MSG_SPLICE_PAGES), and the peer's receive is the
        # only copy. Reading a page that is not cached would block: callers send only
        # spans found cached (Backend.span_nowait).
        sent, out = 0, self._sock.fileno()
        while sent < span.count:
            try:
                n = os.sendfile(out, span.fd, span.offset + sent, span.count - sent)
            except (BlockingIOError, InterruptedError):
                await anyio.wait_writable(self._sock)
                continue
            if n == 0:
                await self.send([bytes(span.count - sent)])
                return
            sent += n

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._loop is not None and not self._loop.is_closed():
            self._unregister()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
