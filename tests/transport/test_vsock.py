"""vsock: the identity of an accepted connection is the peer CID the hypervisor stamped.

No real AF_VSOCK socket is made: ``_vsock._vsock_socket`` (the one function that makes
them) is replaced by the AF_UNIX stand-in of ``fakevsock.py``, whose accept reports the
``(cid, port)`` peer address a real vsock accept would.
"""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import pytest

from vshare.transport import Address, Connection, PeerIdentity, connect, listen
from vshare.transport._listen import Listener, _vsock_identity
from vshare.transport._vsock import vsock_identity

from .fakevsock import FakeVsockNet

pytestmark = pytest.mark.anyio


def test_identity_is_the_peer_cid() -> None:
    assert vsock_identity((3, 1024)) == PeerIdentity("vsock", cid=3, port=1024)
    assert str(vsock_identity((42, 5))) == "vsock cid=42"


@pytest.mark.parametrize(
    "peer", ["", "/tmp/x", (3,), ("3", 1), (True, 1), (-1, 5), (2**32, 1), (3, 1, 2), None]
)
def test_anything_but_a_cid_port_pair_is_refused(peer: object) -> None:
    with pytest.raises(ValueError):
        vsock_identity(peer)


async def test_listener_accepts_with_the_injected_cid(fake_vsock: FakeVsockNet) -> None:
    lst = listen("vsock://any:564")
    assert fake_vsock.made == 1
    assert lst.bound == Address("vsock", host="any", port=564)
    seen: list[PeerIdentity] = []

    async def echo(conn: Connection) -> None:
        seen.append(conn.identity)
        while data := await conn.receive(65536):
            await conn.send([b"<", data, b">"])
        await conn.aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lst.serve, echo, tg)
        for cid in (3, 7):
            fake_vsock.guest_cid = cid
            conn = await connect("vsock://2:564")  # what a guest dials: the host
            await conn.send([b"hi"])
            assert await conn.receive(100) == b"<hi>"
            await conn.aclose()
        tg.cancel_scope.cancel()
    lst.close()
    assert [(i.kind, i.cid) for i in seen] == [("vsock", 3), ("vsock", 7)]
    assert fake_vsock.made == 3


async def test_a_connection_without_a_vsock_peer_is_dropped(short_dir: Path) -> None:
    """A listener whose accept gives no (cid, port) pair (here: plain AF_UNIX) refuses the
    connection rather than guess an identity, and goes on accepting."""
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.bind(str(short_dir / "l"))
    raw.listen()
    lst = Listener(Address("vsock", host="any"), raw, _vsock_identity)
    handled: list[Connection] = []

    async def handler(conn: Connection) -> None:
        handled.append(conn)

    async with anyio.create_task_group() as tg:
        tg.start_soon(lst.serve, handler, tg)
        for _ in range(2):
            conn = await connect(f"unix://{short_dir / 'l'}")
            with anyio.fail_after(5):
                assert await conn.receive(10) == b""  # closed by the listener
            await conn.aclose()
        tg.cancel_scope.cancel()
    lst.close()
    assert handled == []


async def test_close_wakes_the_accept_loop(fake_vsock: FakeVsockNet) -> None:
    lst = listen("vsock://any:5000")

    async def handler(conn: Connection) -> None:
        raise AssertionError("no connection expected")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lst.serve, handler, tg)
            await anyio.sleep(0.05)
            lst.close()  # serve() returns; the task group can end


async def test_dialing_any_is_a_mistake(fake_vsock: FakeVsockNet) -> None:
    with pytest.raises(ValueError, match="dial a CID"):
        await connect("vsock://any:564")
    assert fake_vsock.made == 0
