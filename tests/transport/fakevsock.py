"""A stand-in for AF_VSOCK on a host without vsock loopback: AF_UNIX sockets in a directory.

``vshare.transport._vsock._vsock_socket`` is the one function that makes AF_VSOCK sockets;
tests replace it with :meth:`FakeVsockNet.socket`. A listener's ``bind((cid, port))`` binds
``DIR/listen-<port>``; a dialer's ``connect((cid, port))`` first binds its own socket to
``DIR/guest-<cid>-<n>`` with the CID the test chose (:attr:`FakeVsockNet.guest_cid`, what a
hypervisor would stamp), so ``accept()`` can report the ``(cid, port)`` peer address that a
real vsock accept returns. No real AF_VSOCK socket is ever made.
"""

from __future__ import annotations

import itertools
import socket
from pathlib import Path
from typing import Any

_counter = itertools.count(1)


class FakeVsockNet:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.guest_cid = 3  # the CID the next dialer connects from
        self.made = 0  # sockets made through the stand-in

    def socket(self) -> socket.socket:
        self.made += 1
        return _FakeVsockSocket(self)


class _FakeVsockSocket(socket.socket):
    def __init__(self, net: FakeVsockNet) -> None:
        super().__init__(socket.AF_UNIX, socket.SOCK_STREAM)
        self._net = net
        self._name: tuple[int, int] = (0xFFFFFFFF, 0)

    def bind(self, address: Any) -> None:
        cid, port = address
        self._name = (cid, port)
        super().bind(str(self._net.dir / f"listen-{port}"))

    def getsockname(self) -> Any:
        return self._name

    def connect(self, address: Any) -> None:
        _cid, port = address
        me = self._net.guest_cid
        super().bind(str(self._net.dir / f"guest-{me}-{next(_counter)}"))
        self._name = (me, 1024)
        super().connect(str(self._net.dir / f"listen-{port}"))

    def accept(self) -> tuple[socket.socket, Any]:
        fd, peer_path = self._accept()  # type: ignore[attr-defined]
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, fileno=fd)
        _, cid, n = Path(peer_path).name.split("-")
        return conn, (int(cid), 1024 + int(n))
