"""Treaddirplus, vshare's extension of 9P2000.L (``VERSION_VSHARE_2``): a listing whose
entries carry the attributes a Twalk + Tgetattr of each would have given, ownership
squashed alike, bounded per reply, with the end of the directory said in the reply."""

from __future__ import annotations

import errno
import os

import pytest

from tests.gateway.conftest import GatewayFactory, Running
from tests.gateway.helpers import getattr_, listdir, open_, walk
from vshare import protocol as p
from vshare.client import Client
from vshare.gateway.ops_io import INLINE_LISTING_MAX, READDIRPLUS_MAX

pytestmark = pytest.mark.anyio


async def listing_plus(
    c: Client, dir_fid: int, count: int = 1 << 16
) -> tuple[list[tuple[p.Dirent, p.Rgetattr | None]], int]:
    """Every entry with its attributes, and how many replies it took."""
    out: list[tuple[p.Dirent, p.Rgetattr | None]] = []
    offset, replies = 0, 0
    while True:
        reply = await c.call(p.Treaddirplus(dir_fid, offset, count), p.Rreaddirplus)
        replies += 1
        batch = p.unpack_dirents_plus(reply.data)
        out += batch
        if reply.end:
            return out, replies
        assert batch, "a reply with no entries must say the end"
        offset = batch[-1][0].offset


async def test_the_gateway_agrees_to_vshare_2(gw: Running) -> None:
    async with gw.client() as c:
        assert c.readdirplus and c.ordered


async def test_entries_carry_what_walk_and_getattr_give(gw: Running) -> None:
    share = gw.share_dir("alpha")
    (share / "file").write_bytes(b"12345")
    (share / "dir").mkdir()
    os.symlink("/etc/passwd", share / "link")  # stat'ed itself, never followed
    os.mkfifo(share / "fifo")
    async with gw.client() as c:
        root, root_qid = await c.attach("alpha")
        d = await open_(c, root, flags=p.DOTL_RDONLY | p.DOTL_DIRECTORY)
        entries, _ = await listing_plus(c, d)
        by_name = {e.name: (e, a) for e, a in entries}
        assert set(by_name) == {".", "..", "file", "dir", "link", "fifo"}
        assert by_name["."][1] is None and by_name[".."][1] is None
        assert by_name[".."][0].qid == root_qid  # nothing above the share is revealed
        for name in ("file", "dir", "link", "fifo"):
            entry, attr = by_name[name]
            fid = await walk(c, root, name)
            want = await getattr_(c, fid)
            await c.clunk(fid)
            assert attr is not None
            assert attr.qid == want.qid == entry.qid
            # the times of a directory may move between the two requests: not compared
            assert (attr.mode, attr.uid, attr.gid, attr.size, attr.nlink) == (
                want.mode, want.uid, want.gid, want.size, want.nlink,
            )  # fmt: skip
            assert attr.mtime_sec == want.mtime_sec and attr.valid == want.valid
        assert (by_name["file"][1] or want).size == 5
        # the share squashes ownership (uid 1234, gid 4321), the listing too
        assert {(a.uid, a.gid) for _, a in entries if a is not None} == {(1234, 4321)}


async def test_a_large_directory_takes_bounded_replies_and_lists_each_name_once(
    gw: Running,
) -> None:
    share = gw.share_dir("alpha")
    n = READDIRPLUS_MAX * 2 + 100
    for i in range(n):
        (share / f"f{i:05d}").write_bytes(b"x" * (i % 3))
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        d = await open_(c, root, flags=p.DOTL_RDONLY | p.DOTL_DIRECTORY)
        entries, replies = await listing_plus(c, d, count=4 << 20)
        names = [e.name for e, _ in entries if e.name not in (".", "..")]
        assert sorted(names) == [f"f{i:05d}" for i in range(n)]
        assert replies == 3  # at most READDIRPLUS_MAX entries a reply, however large count
        sizes = {e.name: a.size for e, a in entries if a is not None}
        assert all(sizes[f"f{i:05d}"] == i % 3 for i in range(n))
        # a count too small for one entry with its attributes: nothing, and not the end
        tiny = await c.call(p.Treaddirplus(d, 0, 100), p.Rreaddirplus)
        assert bytes(tiny.data) == b"" and tiny.end == 0


def _on_loop(gw: Running, op: str) -> float:
    registry = gw.gateway.ctx.metrics.registry
    return registry.get_sample_value("vshare_requests_on_loop_total", {"op": op}) or 0.0


@pytest.mark.parametrize("plus", [True, False])
async def test_a_small_directory_is_listed_on_the_loop_a_large_one_in_a_thread(
    gw: Running, plus: bool
) -> None:
    """Where metadata is cheap, a listing from the start of a directory that ends within
    INLINE_LISTING_MAX entries is answered on the event loop; a larger one is listed in a
    thread, whole, each name once, the same as it would have been. A Treaddir (no end
    flag) asked again from where the listing ended is answered on the loop too, from what
    the fid remembers; a Treaddirplus says the end and is not asked again."""
    small, large = gw.share_dir("alpha") / "small", gw.share_dir("alpha") / "large"
    small.mkdir()
    large.mkdir()
    for i in range(5):
        (small / f"s{i}").write_bytes(b"s")
    n = INLINE_LISTING_MAX + 10
    for i in range(n):
        (large / f"l{i:03d}").write_bytes(b"l" * (i % 4))
    op = "readdirplus" if plus else "readdir"
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        listed: dict[str, list[str]] = {}
        for name in ("small", "large"):
            d = await open_(c, root, name, flags=p.DOTL_RDONLY | p.DOTL_DIRECTORY)
            before = _on_loop(gw, op)
            if plus:
                entries, _ = await listing_plus(c, d)
                names = [e.name for e, _ in entries]
                assert all(
                    a is not None and a.size == (int(e.name[1:]) % 4 if name == "large" else 1)
                    for e, a in entries
                    if e.name not in (".", "..")
                )
            else:
                names = [e.name for e in await listdir(c, root, name)]
            listed[name] = sorted(x for x in names if x not in (".", ".."))
            on_loop = _on_loop(gw, op) - before
            want = (1 if name == "small" else 0) + (0 if plus else 1)
            assert on_loop == want, (name, on_loop)
            await c.clunk(d)
    assert listed["small"] == [f"s{i}" for i in range(5)]
    assert listed["large"] == [f"l{i:03d}" for i in range(n)]


async def test_only_open_directories_list(gw: Running) -> None:
    (gw.share_dir("alpha") / "file").write_bytes(b"")
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        with pytest.raises(OSError) as info:
            await c.rpc(p.Treaddirplus(root, 0, 4096))  # walked, not opened
        assert info.value.errno == errno.EBADF
        f = await open_(c, root, "file")
        with pytest.raises(OSError) as info:
            await c.rpc(p.Treaddirplus(f, 0, 4096))
        assert info.value.errno == errno.ENOTDIR


async def test_the_gateway_says_which_xattr_namespaces_it_shows(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(xattr_namespaces=("user.", "trusted.")) as gw, gw.client() as c:
        root, _ = await c.attach("alpha")
        xfid = c.new_fid()
        size = (await c.call(p.Txattrwalk(root, xfid, p.XATTR_NAMESPACES_NAME), p.Rxattrwalk)).size
        data = bytes((await c.call(p.Tread(xfid, 0, 4096), p.Rread)).data)
        assert len(data) == size and data == b"user.\0trusted.\0"
        # and the names outside them read as absent, as the client then assumes
        with pytest.raises(OSError) as info:
            await c.call(p.Txattrwalk(root, c.new_fid(), "security.selinux"), p.Rxattrwalk)
        assert info.value.errno == errno.ENODATA


async def test_getattrat_is_a_walk_and_getattr_without_the_fid(gw: Running) -> None:
    share = gw.share_dir("alpha")
    (share / "d").mkdir()
    (share / "d" / "file").write_bytes(b"1234567")
    os.symlink("/etc/passwd", share / "d" / "link")
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        d = await walk(c, root, "d")
        for name in ("file", "link"):
            got = await c.call(p.Tgetattrat(d, name, p.GETATTR_ALL), p.Rgetattrat)
            fid = await walk(c, d, name)
            want = await getattr_(c, fid)
            await c.clunk(fid)
            assert tuple(got) == tuple(want), name  # squashed alike, the symlink itself
        assert (await c.call(p.Tgetattrat(d, "file", p.GETATTR_ALL), p.Rgetattrat)).size == 7
        for name, code in (("missing", errno.ENOENT), ("..", errno.EINVAL), ("a/b", errno.EINVAL)):
            with pytest.raises(OSError) as info:
                await c.rpc(p.Tgetattrat(d, name, p.GETATTR_ALL))
            assert info.value.errno == code, name
        f = await walk(c, d, "file")
        with pytest.raises(OSError) as info:
            await c.rpc(p.Tgetattrat(f, "x", p.GETATTR_ALL))
        assert info.value.errno == errno.ENOTDIR
        # at the share root, ".." is refused like any walk above it: nothing is revealed
        with pytest.raises(OSError) as info:
            await c.rpc(p.Tgetattrat(root, "..", p.GETATTR_ALL))
        assert info.value.errno == errno.EINVAL
