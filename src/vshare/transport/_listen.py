"""Listeners and dialers for every scheme of :mod:`vshare.transport._uri`.

A listener owns its socket; :meth:`Listener.serve` accepts until cancelled and runs a
handler per connection inside the caller's task group. Each connection's
:class:`PeerIdentity` is fixed at accept time from transport facts (see ``_identity.py``);
for TLS it is completed by the handshake, which runs in the connection's own task, bounded
by a timeout, never in the accept loop.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import posixpath
import socket
import ssl
import stat
import struct
from collections.abc import Callable, Coroutine
from typing import Any, Final

import anyio
import anyio.abc
import anyio.lowlevel

from vshare.transport import _vsock
from vshare.transport._connection import Connection, SocketConnection
from vshare.transport._identity import PeerIdentity
from vshare.transport._tls import TlsConnection, TlsSettings
from vshare.transport._uri import Address, parse_uri

log = logging.getLogger("vshare.transport")

Handler = Callable[[Connection], Coroutine[Any, Any, None]]
#: (accepted socket, peer address from accept()) → the connection's identity.
Identify = Callable[[socket.socket, Any], PeerIdentity]
_UCRED: Final = struct.Struct("3i")
#: The longest line a VMM may answer to the hybrid-vsock CONNECT request.
_HVSOCK_REPLY_MAX: Final = 64


def _unix_identity(sock: socket.socket, _peer: object) -> PeerIdentity:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerIdentity("unix", uid=uid, gid=gid, pid=pid)


def _ip_identity(kind: str) -> Identify:
    def identify(_sock: socket.socket, peer: Any) -> PeerIdentity:
        return PeerIdentity(kind, address=peer[0], port=peer[1])

    return identify


def _vsock_identity(_sock: socket.socket, peer: Any) -> PeerIdentity:
    return _vsock.vsock_identity(peer)


def _hvsock_identity(address: Address) -> Identify:
    # Every connection on <uds_path>_<port> comes from the one VM whose VMM owns uds_path.
    identity = PeerIdentity("hvsock", socket_path=posixpath.normpath(address.path))

    def identify(_sock: socket.socket, _peer: Any) -> PeerIdentity:
        return identity

    return identify


class Listener:
    """A bound, listening socket for one address."""

    def __init__(
        self,
        address: Address,
        sock: socket.socket,
        identify: Identify,
        *,
        tls: ssl.SSLContext | None = None,
        handshake_timeout: float = 10.0,
    ) -> None:
        self.address = address
        self._sock = sock
        self._identify = identify
        self._tls = tls
        self._handshake_timeout = handshake_timeout
        self._closed = False
        sock.setblocking(False)
        self._label = str(self.bound)  # for logs, also after close

    @property
    def bound(self) -> Address:
        """The address actually bound (a tcp port of 0 becomes the real port)."""
        if self.address.scheme in ("tcp", "tls"):
            host, port = self._sock.getsockname()[:2]
            return Address(self.address.scheme, host=host, port=port)
        if self.address.scheme == "vsock":
            cid, port = self._sock.getsockname()[:2]
            host = "any" if cid == _vsock_cid_any() else str(cid)
            return Address("vsock", host=host, port=port)
        return self.address

    async def serve(self, handler: Handler, task_group: anyio.abc.TaskGroup) -> None:
        """Accept until cancelled (or closed); each connection runs ``handler`` in
        ``task_group``. A connection whose identity cannot be established is dropped."""
        while True:
            try:
                conn, peer = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                try:
                    await anyio.wait_readable(self._sock)
                except anyio.ClosedResourceError:
                    return
                continue
            except OSError as exc:  # EMFILE and friends: wait, do not die
                if self._closed:
                    return
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    await anyio.sleep(0.1)
                    continue
                raise
            try:
                identity = self._identify(conn, peer)
            except (OSError, ValueError) as exc:
                log.warning("%s: dropping a connection without an identity: %s", self._label, exc)
                conn.close()
                continue
            if self.address.scheme in ("tcp", "tls"):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is None:
                task_group.start_soon(handler, SocketConnection(conn, identity))
            else:
                tls = TlsConnection(conn, self._tls, identity, server_side=True)
                task_group.start_soon(self._handshake_then, handler, tls)
            # One connection at a time, then the others' turn: a burst of a hundred connects
            # accepted (and their sessions started) in one go held every session ~10 ms.
            await anyio.lowlevel.checkpoint()

    async def _handshake_then(self, handler: Handler, conn: TlsConnection) -> None:
        try:
            with anyio.fail_after(self._handshake_timeout):
                await conn.handshake()
        except (TimeoutError, OSError) as exc:  # ssl.SSLError is an OSError
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            log.warning("%s: TLS handshake with %s failed: %s", self._label, conn.identity, reason)
            await conn.aclose()
            return
        await handler(conn)

    def close(self) -> None:
        """Stop listening (idempotent); a Unix socket file this listener bound is removed.
        An accept loop waiting in :meth:`serve` returns."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(RuntimeError):  # no event loop here: nobody is waiting
            anyio.notify_closing(self._sock)
        self._sock.close()
        if self.address.scheme in ("unix", "hvsock"):
            path = self.address.listen_path
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)


def _vsock_cid_any() -> int:
    return int(getattr(socket, "VMADDR_CID_ANY", 0xFFFFFFFF))


def _bind_unix(path: str) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)  # a stale socket from an earlier run
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    return sock


def _bind_ip(address: Address) -> socket.socket:
    infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock


def listen(uri: str | Address, backlog: int = 128, *, tls: TlsSettings | None = None) -> Listener:
    """Bind and listen. A stale Unix socket file at the path is replaced.

    ``hvsock:///path`` binds ``/path_564`` (see :attr:`Address.listen_path`);
    ``tls://`` needs ``tls`` with a certificate and key.

    Raises:
        ValueError: the URI is malformed, or TLS settings are missing or unusable.
        OSError: the address cannot be bound.
    """
    address = parse_uri(uri) if isinstance(uri, str) else uri
    context: ssl.SSLContext | None = None
    identify: Identify
    if address.scheme == "unix":
        sock, identify = _bind_unix(address.path), _unix_identity
    elif address.scheme == "hvsock":
        sock, identify = _bind_unix(address.listen_path), _hvsock_identity(address)
    elif address.scheme in ("tcp", "tls"):
        if address.scheme == "tls":
            if tls is None:
                raise ValueError(f"{address}: a TLS listener needs a certificate and key")
            context = tls.server_context()  # before binding: a bad file binds nothing
        sock, identify = _bind_ip(address), _ip_identity(address.scheme)
    elif address.scheme == "vsock":
        sock = _vsock._vsock_socket()
        try:
            sock.bind((address.cid, address.port))
        except OSError:
            sock.close()
            raise
        identify = _vsock_identity
    else:  # pragma: no cover - parse_uri admits only the schemes above
        raise ValueError(f"{address}: no listener for {address.scheme}")
    try:
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    timeout = tls.handshake_timeout if tls is not None else 10.0
    return Listener(address, sock, identify, tls=context, handshake_timeout=timeout)


async def _connect_socket(sock: socket.socket, target: object) -> None:
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


async def _hvsock_handshake(sock: socket.socket, address: Address) -> None:
    """Firecracker's host-initiated connection: send ``CONNECT <port>\\n`` on the VM's
    ``uds_path``; the VMM answers ``OK <host port>\\n`` once the guest accepted, and the
    socket then carries the guest stream. Reads one byte at a time so not one byte of the
    stream after the line is consumed."""
    await _send_all(sock, f"CONNECT {address.port}\n".encode())
    line = bytearray()
    while not line.endswith(b"\n"):
        if len(line) >= _HVSOCK_REPLY_MAX:
            raise ConnectionRefusedError(
                errno.ECONNREFUSED, f"{address}: the VMM's answer is too long: {bytes(line)!r}"
            )
        try:
            byte = sock.recv(1)
        except (BlockingIOError, InterruptedError):
            await anyio.wait_readable(sock)
            continue
        if not byte:
            raise ConnectionRefusedError(
                errno.ECONNREFUSED,
                f"{address}: the VMM closed the connection (guest port "
                f"{address.port} not listening?)",
            )
        line += byte
    if not line.startswith(b"OK "):
        raise ConnectionRefusedError(
            errno.ECONNREFUSED, f"{address}: the VMM answered {bytes(line).strip()!r}"
        )


async def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except (BlockingIOError, InterruptedError):
            await anyio.wait_writable(sock)


async def connect(uri: str | Address, *, tls: TlsSettings | None = None) -> Connection:
    """Dial an address; the identity recorded is the server's, for logs.

    ``vsock://CID:PORT`` dials a vsock peer (from a guest: ``vsock://2:564``, the host).
    ``hvsock:///path`` dials a Firecracker guest through its VMM's ``uds_path``.
    ``tls://`` verifies the server with ``tls`` (default: the system's CAs, and the URI's
    host as the name); the handshake is bounded by ``tls.handshake_timeout``.

    Raises:
        ValueError: the URI is malformed or cannot be dialed (``vsock://any``).
        OSError: the connection failed (``ssl.SSLError`` for a refused TLS handshake).
    """
    address = parse_uri(uri) if isinstance(uri, str) else uri
    scheme = address.scheme
    target: object
    if scheme in ("unix", "hvsock"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = address.path
    elif scheme in ("tcp", "tls"):
        infos = await anyio.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        target = sockaddr
    elif scheme == "vsock":
        if address.host == "any":
            raise ValueError(f"{address}: dial a CID (from a guest, the host is CID 2)")
        sock = _vsock._vsock_socket()
        target = (address.cid, address.port)
    else:  # pragma: no cover - parse_uri admits only the schemes above
        raise ValueError(f"{address}: cannot dial {scheme}")
    await _connect_socket(sock, target)
    identity = PeerIdentity(scheme, address=str(address))
    try:
        if scheme in ("tcp", "tls"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if scheme == "hvsock":
            await _hvsock_handshake(sock, address)
        if scheme == "tls":
            settings = tls or TlsSettings()
            conn = TlsConnection(
                sock,
                settings.client_context(),
                identity,
                server_side=False,
                server_hostname=settings.server_name or address.host,
            )
            with anyio.fail_after(settings.handshake_timeout):
                await conn.handshake()
            return conn
    except BaseException:
        sock.close()
        raise
    return SocketConnection(sock, identity)
