"""Socket buffers: a whole 1 MiB message fits, so it crosses in one send and one receive."""

from __future__ import annotations

import socket

import anyio
import pytest

from vshare.client._session import io_limit
from vshare.protocol import IOHDRSZ
from vshare.transport._connection import SOCKET_BUFFER, SocketConnection
from vshare.transport._identity import PeerIdentity


@pytest.mark.parametrize("family", [socket.AF_UNIX, socket.AF_INET])
def test_connections_widen_their_socket_buffers(family: int) -> None:
    if family == socket.AF_UNIX:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        listener = socket.create_server(("127.0.0.1", 0))
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
        listener.close()
    with a, b:
        before = a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        if family == socket.AF_UNIX:
            assert before < SOCKET_BUFFER  # the kernel default, or this proves nothing
        SocketConnection(a, PeerIdentity(kind="test"))
        # Linux doubles the value asked for (bookkeeping); wmem_max may cap it lower.
        with open("/proc/sys/net/core/wmem_max") as f:
            cap = int(f.read())
        want = min(SOCKET_BUFFER, cap)
        # Widened where smaller, never shrunk (TCP may start larger: autotuning is kept).
        assert a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= max(want, before)
        assert a.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= want


def test_io_limit_is_page_aligned_and_fits_the_message() -> None:
    assert io_limit(1024 * 1024 + IOHDRSZ) == 1024 * 1024
    assert io_limit(512 * 1024) == 512 * 1024 - 4096  # 524288 - 24 rounds down a page
    assert io_limit(65536) == 61440  # diod's msize
    assert io_limit(4096) == 4096 - IOHDRSZ  # too small to round: all of it
    for msize in (8192 + IOHDRSZ, 100_000, 1_048_600):
        n = io_limit(msize)
        assert n % 4096 == 0 and n + IOHDRSZ <= msize


@pytest.mark.anyio
async def test_a_send_of_more_buffers_than_iov_max_goes_whole() -> None:
    """A client that pipelines thousands of small requests hands one send that many
    buffers; sendmsg takes at most IOV_MAX (1024) and refused more (EMSGSIZE), which
    lost the FUSE client its session when the change feed asked about 10,000 names."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        sender = SocketConnection(a, PeerIdentity(kind="test"))
        receiver = SocketConnection(b, PeerIdentity(kind="test"))
        parts = [i.to_bytes(4, "little") * 4 for i in range(5000)]  # 80,000 bytes
        want = b"".join(parts)
        got = bytearray()
        async with anyio.create_task_group() as tg:
            tg.start_soon(sender.send, parts)
            while len(got) < len(want):
                got += await receiver.receive(1 << 16)
        assert bytes(got) == want
