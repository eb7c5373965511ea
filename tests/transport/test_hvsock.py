"""Hybrid vsock (Firecracker, Cloud Hypervisor): the listener binds ``<uds_path>_<port>``
and every connection on it is that VM; dialing speaks the VMM's CONNECT handshake."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import anyio
import anyio.abc
import pytest

from vshare.transport import Connection, PeerIdentity, connect, listen

pytestmark = pytest.mark.anyio


async def test_listener_binds_the_port_socket_and_names_the_vm(short_dir: Path) -> None:
    vm = short_dir / "vm-1234.vsock"
    lst = listen(f"hvsock://{vm}")
    port_socket = short_dir / "vm-1234.vsock_564"
    assert stat.S_ISSOCK(os.lstat(port_socket).st_mode)
    assert not vm.exists()  # the VM's own socket belongs to the VMM
    seen: list[PeerIdentity] = []

    async def handler(conn: Connection) -> None:
        seen.append(conn.identity)
        await conn.send([b"ok"])
        await conn.aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lst.serve, handler, tg)
        conn = await connect(f"unix://{port_socket}")  # what the VMM does for the guest
        assert await conn.receive(10) == b"ok"
        await conn.aclose()
        tg.cancel_scope.cancel()
    lst.close()
    assert seen == [PeerIdentity("hvsock", socket_path=str(vm))]
    assert str(seen[0]) == f"hvsock {vm}"
    assert not port_socket.exists()  # closing removes the socket file


def test_other_port_and_stale_socket(short_dir: Path) -> None:
    vm = short_dir / "vm.vsock"
    first = listen(f"hvsock://{vm}?port=1234")
    assert (short_dir / "vm.vsock_1234").exists()
    # A stale socket (a gateway that died) is replaced, not an error.
    first._sock.close()  # simulate a crash: the file stays
    second = listen(f"hvsock://{vm}?port=1234")
    second.close()
    assert not (short_dir / "vm.vsock_1234").exists()


async def _fake_vmm(path: Path, answer: bytes, tg: anyio.abc.TaskGroup) -> list[bytes]:
    """A VMM's side of Firecracker's host-initiated connection on ``uds_path``: it reads
    the CONNECT line, answers ``answer``, then echoes the stream. Returns what it read."""
    got: list[bytes] = []
    listener = await anyio.create_unix_listener(path)

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            line = b""
            while not line.endswith(b"\n"):
                line += await stream.receive(1)
            got.append(line)
            if not answer:
                return
            await stream.send(answer + b"first bytes of the stream")
            try:
                while True:
                    data = await stream.receive()
                    got.append(data)
                    await stream.send(data)
            except anyio.EndOfStream:
                pass

    tg.start_soon(listener.serve, handle)
    return got


async def test_dial_speaks_firecrackers_connect_handshake(short_dir: Path) -> None:
    vm = short_dir / "vm.vsock"
    async with anyio.create_task_group() as tg:
        got = await _fake_vmm(vm, b"OK 1073741824\n", tg)
        conn = await connect(f"hvsock://{vm}?port=5000")
        # Not one byte after the OK line is lost to the handshake.
        data = b""
        while len(data) < len(b"first bytes of the stream"):
            data += await conn.receive(100)
        assert data == b"first bytes of the stream"
        await conn.send([b"9P"])
        assert await conn.receive(100) == b"9P"
        await conn.aclose()
        tg.cancel_scope.cancel()
    assert got[:2] == [b"CONNECT 5000\n", b"9P"]


@pytest.mark.parametrize(("answer", "phrase"), [(b"", "closed"), (b"NO\n", "answered")])
async def test_dial_refused_by_the_vmm(short_dir: Path, answer: bytes, phrase: str) -> None:
    vm = short_dir / "vm.vsock"
    async with anyio.create_task_group() as tg:
        await _fake_vmm(vm, answer, tg)
        with pytest.raises(ConnectionRefusedError) as info:
            await connect(f"hvsock://{vm}")
        assert info.value.errno == errno.ECONNREFUSED
        assert phrase in str(info.value)
        tg.cancel_scope.cancel()
