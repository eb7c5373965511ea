"""Listeners and dialers for ``unix://`` and ``tcp://`` (vsock and TLS: see the
transports issue). A listener owns its socket; :meth:`Listener.serve` runs a handler per
connection inside the caller's task group."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import struct
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.abc

from vshare.transport._connection import SocketConnection
from vshare.transport._identity import PeerIdentity
from vshare.transport._uri import Address, parse_uri

Handler = Callable[[SocketConnection], Coroutine[Any, Any, None]]
_UCRED = struct.Struct("3i")


def _unix_identity(sock: socket.socket) -> PeerIdentity:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerIdentity("unix", uid=uid, gid=gid, pid=pid)


def _tcp_identity(peer: tuple[str, int] | tuple[str, int, int, int]) -> PeerIdentity:
    return PeerIdentity("tcp", address=peer[0], port=peer[1])


class Listener:
    """A bound, listening socket for one address."""

    def __init__(self, address: Address, sock: socket.socket) -> None:
        self.address = address
        self._sock = sock
        sock.setblocking(False)

    @property
    def bound(self) -> Address:
        """The address actually bound (a tcp port of 0 becomes the real port)."""
        if self.address.scheme == "tcp":
            host, port = self._sock.getsockname()[:2]
            return Address("tcp", host=host, port=port)
        return self.address

    def _identity(self, conn: socket.socket, peer: object) -> PeerIdentity:
        if self.address.scheme == "unix":
            return _unix_identity(conn)
        return _tcp_identity(peer)  # type: ignore[arg-type]

    async def serve(self, handler: Handler, task_group: anyio.abc.TaskGroup) -> None:
        """Accept until cancelled; each connection runs ``handler`` in ``task_group``."""
        while True:
            try:
                conn, peer = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                await anyio.wait_readable(self._sock)
                continue
            except OSError as exc:  # EMFILE and friends: wait, do not die
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    await anyio.sleep(0.1)
                    continue
                raise
            if self.address.scheme == "tcp":
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task_group.start_soon(handler, SocketConnection(conn, self._identity(conn, peer)))

    def close(self) -> None:
        self._sock.close()
        if self.address.scheme == "unix":
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.lstat(self.address.path).st_mode):
                    os.unlink(self.address.path)


def listen(uri: str | Address, backlog: int = 128) -> Listener:
    """Bind and listen. A stale Unix socket file at the path is replaced.

    Raises:
        ValueError: the URI is malformed or its scheme is not served by this function.
        OSError: the address cannot be bound.
    """
    address = parse_uri(uri) if isinstance(uri, str) else uri
    if address.scheme == "unix":
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(address.path).st_mode):
                os.unlink(address.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address.path)
        except OSError:
            sock.close()
            raise
    elif address.scheme == "tcp":
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError:
            sock.close()
            raise
    else:
        raise ValueError(f"{address}: {address.scheme} listeners are not available yet")
    sock.listen(backlog)
    return Listener(address, sock)


async def connect(uri: str | Address) -> SocketConnection:
    """Dial an address; the identity recorded is the server's, for logs."""
    address = parse_uri(uri) if isinstance(uri, str) else uri
    if address.scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: object = address.path
    elif address.scheme == "tcp":
        infos = await anyio.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        target = sockaddr
    else:
        raise ValueError(f"{address}: {address.scheme} dialing is not available yet")
    sock.setblocking(False)
    try:
        try:
            sock.connect(target)  # type: ignore[arg-type]
        except (BlockingIOError, InterruptedError):
            await anyio.wait_writable(sock)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err)) from None
    except BaseException:
        sock.close()
        raise
    if address.scheme == "tcp":
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return SocketConnection(sock, PeerIdentity(address.scheme, address=str(address)))
