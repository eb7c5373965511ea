"""Pipelined requests on one fid keep their order; one fid number stands for one fid.

Raw frames sent back to back, without waiting for replies, as a client that pipelines
dependent requests does (``Twalk(newfid=F)`` then ``Tgetattr(F)``). Most cases run with
``inline_metadata = "never"``, so that every request really runs as a task: answered on the
event loop, requests are in order anyway.
"""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from vshare import protocol as p
from vshare.transport import Connection, connect

from .conftest import GatewayFactory, Running

pytestmark = pytest.mark.anyio

MSIZE = 1 << 16
INLINE_MODES = ["never", "auto"]


class Raw:
    """One connection, version negotiated; frames go out in one send, replies come by tag."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.decoder = p.FrameDecoder(accept="R")
        self.tags = iter(range(1, 0xFFFF))

    async def pipeline(self, msgs: Sequence[p.Message]) -> list[p.Message]:
        """Send ``msgs`` back to back; their replies, in the order of ``msgs``."""
        tags = [next(self.tags) for _ in msgs]
        await self.conn.send([p.encode(t, m) for t, m in zip(tags, msgs, strict=True)])
        got: dict[int, p.Message] = {}
        with anyio.fail_after(10):
            while len(got) < len(msgs):
                data = await self.conn.receive(1 << 20)
                assert data, "the gateway closed the connection"
                self.decoder.feed(data)
                for tag, reply in self.decoder:
                    assert tag not in got, f"two replies to tag {tag}"
                    got[tag] = reply
        return [got[t] for t in tags]


@asynccontextmanager
async def raw(gw: Running) -> AsyncIterator[Raw]:
    conn = await connect(gw.uri)
    try:
        client = Raw(conn)
        await conn.send([p.encode(p.NOTAG, p.Tversion(MSIZE, "9P2000.L"))])
        client.decoder.feed(await conn.receive(MSIZE))
        assert isinstance(next(iter(client.decoder))[1], p.Rversion)
        yield client
    finally:
        await conn.aclose()


def ecode(reply: p.Message) -> int | None:
    return reply.ecode if isinstance(reply, p.Rlerror) else None


def fds_into(path: Path) -> int:
    """fds of this process that refer to something under ``path``."""
    count = 0
    prefix = str(path)
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target == prefix or target.startswith(prefix + "/"):
            count += 1
    return count


async def sessions_ended(gw: Running) -> None:
    with anyio.fail_after(5):
        while gw.gateway.sessions:
            await anyio.sleep(0.01)


@pytest.mark.parametrize("inline_metadata", INLINE_MODES)
async def test_walk_then_getattr_pipelined(
    start_gateway: GatewayFactory, inline_metadata: str
) -> None:
    async with start_gateway(inline_metadata=inline_metadata) as gw:
        (gw.share_dir("alpha") / "f").write_bytes(b"12345")
        async with raw(gw) as c:
            attach, walk, getattr_ = await c.pipeline([
                p.Tattach(0, p.NOFID, "", "alpha", p.NOFID),
                p.Twalk(0, 1, ("f",)),
                p.Tgetattr(1, p.GETATTR_BASIC),
            ])  # fmt: skip
            assert isinstance(attach, p.Rattach)
            assert isinstance(walk, p.Rwalk)
            assert isinstance(getattr_, p.Rgetattr), getattr_
            assert getattr_.size == 5 and getattr_.qid == walk.qids[0]


@pytest.mark.parametrize("inline_metadata", INLINE_MODES)
async def test_clone_then_open_or_create_then_getattr_pipelined(
    start_gateway: GatewayFactory, inline_metadata: str
) -> None:
    async with start_gateway(inline_metadata=inline_metadata) as gw:
        (gw.share_dir("alpha") / "f").write_bytes(b"abc")
        async with raw(gw) as c:
            assert isinstance((await c.pipeline([p.Tattach(0, p.NOFID, "", "alpha", 0)]))[0],
                              p.Rattach)  # fmt: skip
            replies = await c.pipeline([
                p.Twalk(0, 1, ("f",)), p.Tlopen(1, p.DOTL_RDONLY), p.Tread(1, 0, 100),
                p.Twalk(0, 2, ()), p.Tlcreate(2, "new", p.DOTL_RDWR, 0o640, 0),
                p.Tgetattr(2, p.GETATTR_BASIC), p.Twrite(2, 0, b"written"),
                p.Tclunk(2), p.Tgetattr(2, p.GETATTR_BASIC),
            ])  # fmt: skip
            # (requests that change no fid are not ordered: a write and a getattr sent
            # together may be answered in either order, as 9P allows)
            walk, lopen, read, clone, lcreate, getattr_, write, clunk, gone = replies
            assert isinstance(walk, p.Rwalk) and isinstance(lopen, p.Rlopen)
            assert isinstance(read, p.Rread) and bytes(read.data) == b"abc"
            assert isinstance(clone, p.Rwalk) and isinstance(lcreate, p.Rlcreate)
            assert isinstance(write, p.Rwrite) and write.count == 7
            assert isinstance(getattr_, p.Rgetattr), getattr_
            assert getattr_.qid == lcreate.qid and getattr_.size in (0, 7)
            assert isinstance(clunk, p.Rclunk)
            assert ecode(gone) == errno.EBADF
    assert (gw.share_dir("alpha") / "new").read_bytes() == b"written"


@pytest.mark.parametrize("inline_metadata", INLINE_MODES)
async def test_a_failed_creation_leaves_no_fid(
    start_gateway: GatewayFactory, inline_metadata: str
) -> None:
    async with start_gateway(inline_metadata=inline_metadata) as gw, raw(gw) as c:
        first, walk, getattr_, attach, after = await c.pipeline([
            p.Tattach(0, p.NOFID, "", "alpha", 0),
            p.Twalk(0, 1, ("missing",)), p.Tgetattr(1, p.GETATTR_BASIC),
            p.Tattach(2, p.NOFID, "", "gamma", 0),  # refused: no rule for us
            p.Tgetattr(2, p.GETATTR_BASIC),
        ])  # fmt: skip
        assert isinstance(first, p.Rattach)
        assert ecode(walk) == errno.ENOENT
        assert ecode(getattr_) == errno.EBADF
        assert ecode(attach) == errno.EACCES
        assert ecode(after) == errno.EBADF


@pytest.mark.parametrize("inline_metadata", INLINE_MODES)
async def test_duplicate_pipelined_attach_one_wins_and_nothing_leaks(
    start_gateway: GatewayFactory, inline_metadata: str
) -> None:
    async with start_gateway(inline_metadata=inline_metadata) as gw:
        share = gw.share_dir("alpha")
        baseline = fds_into(gw.volume)
        async with raw(gw) as c:
            replies = await c.pipeline([p.Tattach(0, p.NOFID, "", "alpha", 0)] * 3)
            assert sum(isinstance(r, p.Rattach) for r in replies) == 1
            assert [ecode(r) for r in replies[1:]] == [errno.EBADF] * 2
            assert isinstance(replies[0], p.Rattach)
            # one fid 0, and it works; a fid number can be reused once clunked
            more = await c.pipeline([
                p.Tgetattr(0, p.GETATTR_BASIC), p.Tclunk(0),
                p.Tattach(0, p.NOFID, "", "alpha", 0), p.Tattach(0, p.NOFID, "", "alpha", 0),
            ])  # fmt: skip
            assert isinstance(more[0], p.Rgetattr) and isinstance(more[1], p.Rclunk)
            assert isinstance(more[2], p.Rattach) and ecode(more[3]) == errno.EBADF
            assert gw.gateway.ctx.metrics.fids._value.get() == 1  # type: ignore[attr-defined]
            assert fds_into(share) > 0
        await sessions_ended(gw)
        assert gw.gateway.ctx.metrics.fids._value.get() == 0  # type: ignore[attr-defined]
        assert fds_into(gw.volume) == baseline


@pytest.mark.parametrize("inline_metadata", INLINE_MODES)
async def test_pipelined_walks_to_one_newfid(
    start_gateway: GatewayFactory, inline_metadata: str
) -> None:
    async with start_gateway(inline_metadata=inline_metadata) as gw:
        (gw.share_dir("alpha") / "a").write_bytes(b"a")
        (gw.share_dir("alpha") / "b").write_bytes(b"bb")
        baseline = fds_into(gw.volume)
        async with raw(gw) as c:
            _, wa, wb, xw, getattr_ = await c.pipeline([
                p.Tattach(0, p.NOFID, "", "alpha", 0),
                p.Twalk(0, 5, ("a",)), p.Twalk(0, 5, ("b",)), p.Txattrwalk(0, 5, ""),
                p.Tgetattr(5, p.GETATTR_BASIC),
            ])  # fmt: skip
            assert isinstance(wa, p.Rwalk)
            assert ecode(wb) == errno.EBADF and ecode(xw) == errno.EBADF
            assert isinstance(getattr_, p.Rgetattr) and getattr_.size == 1
        await sessions_ended(gw)
        assert fds_into(gw.volume) == baseline


@pytest.mark.parametrize("inline_metadata", INLINE_MODES)
async def test_walk_in_place_and_clunk_wait_for_the_requests_before_them(
    start_gateway: GatewayFactory, inline_metadata: str
) -> None:
    async with start_gateway(inline_metadata=inline_metadata) as gw:
        (gw.share_dir("alpha") / "d").mkdir()
        (gw.share_dir("alpha") / "d" / "f").write_bytes(b"xyz")
        async with raw(gw) as c:
            replies = await c.pipeline([
                p.Tattach(0, p.NOFID, "", "alpha", 0),
                p.Twalk(0, 1, ()),  # a clone of the root...
                p.Twalk(1, 2, ("d",)),  # ...walked from, then moved in place
                p.Twalk(1, 1, ("d", "f")),
                p.Tgetattr(1, p.GETATTR_BASIC),
                p.Twalk(2, 3, ("f",)), p.Tclunk(2), p.Tgetattr(3, p.GETATTR_BASIC),
            ])  # fmt: skip
            assert all(ecode(r) is None for r in replies), replies
            assert replies[4].size == 3 and replies[7].size == 3  # type: ignore[attr-defined]


async def test_many_sessions_pipelining_leave_no_fd_behind(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(inline_metadata="never") as gw:
        (gw.share_dir("alpha") / "f").write_bytes(b"x")
        baseline = fds_into(gw.volume)
        for _ in range(5):
            conn = await connect(gw.uri)
            frames = [p.encode(0, p.Tversion(MSIZE, "9P2000.L"))]
            frames += [p.encode(1 + i, p.Tattach(0, p.NOFID, "", "alpha", 0)) for i in range(3)]
            frames += [p.encode(10 + i, p.Twalk(0, 1, ("f",))) for i in range(3)]
            frames += [p.encode(20, p.Tlopen(1, p.DOTL_RDONLY)), p.encode(21, p.Tclunk(0))]
            await conn.send(frames)
            await conn.aclose()  # gone before (most of) the replies
        await sessions_ended(gw)
        assert gw.gateway.ctx.metrics.fids._value.get() == 0  # type: ignore[attr-defined]
        assert fds_into(gw.volume) == baseline


async def test_send_turn_is_fifo_and_survives_cancelled_waiters() -> None:
    from vshare.transport import SendTurn

    turn = SendTurn()
    order: list[int] = []
    await turn.acquire()  # uncontended: no waiting
    cancel = anyio.CancelScope()

    async def sender(i: int) -> None:
        await turn.acquire()
        order.append(i)
        await anyio.sleep(0)
        turn.release()

    async def cancelled_sender() -> None:
        with cancel:
            await sender(42)

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(sender, i)
        await anyio.sleep(0.01)
        tg.start_soon(cancelled_sender)
        await anyio.sleep(0.01)
        for i in range(3, 5):
            tg.start_soon(sender, i)
        await anyio.sleep(0.01)
        cancel.cancel()  # gives up its place while waiting
        await anyio.sleep(0.01)
        assert order == []
        turn.release()
    assert order == [0, 1, 2, 3, 4]
    await turn.acquire()  # free again
    turn.release()
