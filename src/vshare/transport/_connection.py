"""A connected byte stream with scatter-gather sends (``sendmsg``), on any anyio backend."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Protocol

import anyio

from vshare.transport._identity import PeerIdentity

Buffer = bytes | bytearray | memoryview


class Connection(Protocol):
    identity: PeerIdentity

    async def receive(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes``; ``b""`` when the peer has closed."""
        ...

    async def send(self, parts: Sequence[Buffer]) -> None:
        """Send all of ``parts`` in order, without joining them first."""
        ...

    async def aclose(self) -> None: ...


class SocketConnection:
    """A non-blocking stream socket.

    Sends go out with ``sendmsg`` of the caller's buffers, so a read reply's payload is
    never copied in Python. Callers serialize their sends (one writer at a time).
    """

    def __init__(self, sock: socket.socket, identity: PeerIdentity) -> None:
        sock.setblocking(False)
        self._sock = sock
        self.identity = identity
        self._closed = False

    @property
    def socket(self) -> socket.socket:
        return self._sock

    async def receive(self, max_bytes: int) -> bytes:
        while True:
            try:
                return self._sock.recv(max_bytes)
            except (BlockingIOError, InterruptedError):
                await anyio.wait_readable(self._sock)
            except (ConnectionResetError, BrokenPipeError, TimeoutError):
                return b""

    async def send(self, parts: Sequence[Buffer]) -> None:
        views = [memoryview(p).cast("B") for p in parts if len(p)]
        while views:
            try:
                sent = self._sock.sendmsg(views)
            except (BlockingIOError, InterruptedError):
                await anyio.wait_writable(self._sock)
                continue
            while sent:
                first = views[0]
                if sent >= first.nbytes:
                    sent -= first.nbytes
                    views.pop(0)
                else:
                    views[0] = first[sent:]
                    sent = 0

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
