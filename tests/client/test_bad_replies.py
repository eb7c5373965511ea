"""Replies the client cannot use fail their request, never leave it waiting; a server that
keeps sending them loses its connection. The server here is a script on a Unix socket that
answers each request with what a test tells it to (no real server misbehaves on demand;
tests/fuse/test_ganesha.py is the real peer that sends Rerror)."""

from __future__ import annotations

import errno
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from vshare.client._client import MAX_VIOLATIONS, Client, ConnectionLost, open_client
from vshare.protocol import (
    FrameDecoder,
    Message,
    Rclunk,
    Rversion,
    Tclunk,
    Tgetattr,
    Tversion,
    encode,
)

Answer = Callable[[int, Message], bytes]


def _frame(msg_type: int, tag: int, body: bytes) -> bytes:
    return struct.pack("<IBH", 7 + len(body), msg_type, tag) + body


async def _serve(path: Path, answer: Answer) -> None:
    async def handle(stream: anyio.abc.SocketStream) -> None:
        decoder = FrameDecoder(accept="T")
        async with stream:
            while True:
                try:
                    data = await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                decoder.feed(data)
                for tag, msg in decoder:
                    if isinstance(msg, Tversion):
                        out = encode(tag, Rversion(msg.msize, "9P2000.L"))
                    else:
                        out = answer(tag, msg)
                    await stream.send(out)

    listener = await anyio.create_unix_listener(path)
    await listener.serve(handle)


async def _with_server(
    tmp_path: Path, answer: Answer, body: Callable[[Client], Awaitable[None]]
) -> None:
    sock = tmp_path / "s.sock"
    with anyio.fail_after(10):  # a hang fails the test
        async with anyio.create_task_group() as tg:
            tg.start_soon(_serve, sock, answer)
            await anyio.wait_all_tasks_blocked()
            async with open_client(f"unix://{sock}", msize=65536) as client:
                await body(client)
            tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_rerror_is_the_errno_it_carries(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        with pytest.raises(FileNotFoundError):
            await client.rpc(Tgetattr(1, 0x3FFF))
        assert client.violations == 0

    await _with_server(tmp_path, lambda tag, _: _frame(107, tag, struct.pack("<I", 2)), body)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda tag, _: encode(tag, Rclunk()), id="wrong-type"),
        pytest.param(lambda tag, _: _frame(99, tag, b"\x01\x02"), id="unknown-type"),
        pytest.param(lambda tag, _: _frame(25, tag, b"\x01"), id="short-body"),
    ],
)
async def test_unusable_reply_is_eio_then_the_connection_closes(
    tmp_path: Path, answer: Answer
) -> None:
    async def body(client: Client) -> None:
        for _ in range(MAX_VIOLATIONS - 1):
            with pytest.raises(OSError) as err:
                await client.rpc(Tgetattr(1, 0x3FFF))
            assert err.value.errno == errno.EIO
        assert client.alive
        with pytest.raises(ConnectionLost):  # the last straw: closed, callers reconnect
            await client.rpc(Tgetattr(1, 0x3FFF))
        assert not client.alive

    await _with_server(tmp_path, answer, body)


@pytest.mark.anyio
async def test_reply_to_no_request_is_dropped(tmp_path: Path) -> None:
    def answer(tag: int, msg: Message) -> bytes:
        # A reply on a tag nothing waits on, then the real one.
        return encode(tag ^ 0x100, Rclunk()) + encode(tag, Rclunk())

    async def body(client: Client) -> None:
        await client.rpc(Tclunk(1))
        assert client.violations == 1
        assert client.alive

    await _with_server(tmp_path, answer, body)
