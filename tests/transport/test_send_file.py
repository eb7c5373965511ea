"""A read's data sent from its file (``send_file``) and received into its own frame
(``receive_into``), on a real socket pair and on TLS."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from vshare.transport import connect
from vshare.transport._connection import Connection, SocketConnection
from vshare.transport._identity import PeerIdentity

from .certs import Certs
from .test_tls import client, echo_server, server_settings

pytestmark = pytest.mark.anyio


@dataclass
class Span:
    fd: int
    offset: int
    count: int


async def _receive(conn: Connection, n: int) -> bytes:
    got = bytearray(n)
    view = memoryview(got)
    done = 0
    with anyio.fail_after(10):
        while done < n:
            k = await conn.receive_into(view[done:])
            assert k, "closed early"
            done += k
    return bytes(got)


async def test_a_file_range_arrives_whole_between_other_parts(tmp_path: Path) -> None:
    """More than the socket buffer holds (4 MiB), so sendfile stops part way and waits."""
    data = os.urandom(4 << 20)
    path = tmp_path / "f"
    path.write_bytes(data)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = os.open(path, os.O_RDONLY)
    try:
        sender = SocketConnection(a, PeerIdentity(kind="test"))
        receiver = SocketConnection(b, PeerIdentity(kind="test"))
        got = b""

        async def read() -> None:
            nonlocal got
            got = await _receive(receiver, 3 + (4 << 20) - 100 + 3)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await sender.send([b"abc"])
            await sender.send_file(Span(fd, 100, (4 << 20) - 100))
            await sender.send([b"xyz"])
        assert got == b"abc" + data[100:] + b"xyz"
    finally:
        os.close(fd)
        a.close()
        b.close()


async def test_a_file_shorter_than_promised_is_made_up_with_zeros(tmp_path: Path) -> None:
    """The Rread's head says how many bytes follow, and it is sent first: a file shrunk
    since must not leave the frame short (the stream would be lost), so zeros follow."""
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = os.open(path, os.O_RDONLY)
    try:
        sender = SocketConnection(a, PeerIdentity(kind="test"))
        receiver = SocketConnection(b, PeerIdentity(kind="test"))
        await sender.send_file(Span(fd, 2, 10))
        await sender.send([b"!"])
        assert await _receive(receiver, 11) == b"345" + bytes(7) + b"!"
    finally:
        os.close(fd)
        a.close()
        b.close()


async def test_tls_sends_a_file_range_as_bytes(certs: Certs, tmp_path: Path) -> None:
    """TLS encrypts in this process: it reads the range and sends it (zeros past the
    end, as the socket does), and says it does not hand files to the kernel."""
    data = os.urandom(300_000)
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        async with echo_server(server_settings(certs)) as (port, _):
            conn = await connect(f"tls://127.0.0.1:{port}", tls=client(certs, "a"))
            assert conn.sends_files is False
            await conn.send_file(Span(fd, 1000, len(data) - 1000 + 4))
            assert await _receive(conn, len(data) - 1000 + 4) == data[1000:] + bytes(4)
            await conn.aclose()
    finally:
        os.close(fd)
