"""Modes and owners of what guests create.

A guest's kernel has applied the guest's umask before the mode goes on the wire, so the
mode of Tlcreate/Tmkdir/Tmknod must arrive on disk verbatim, whatever the gateway's own
umask. In ``passthrough`` ownership, what an attachment creates belongs to the attach's
``n_uname`` and to the request's gid (the Linux client's ``access=user``); in ``squash``
ownership, to the gateway's user.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from vshare import protocol as p
from vshare.client import Client

from .conftest import GatewayFactory
from .helpers import walk

pytestmark = pytest.mark.anyio


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize("ownership", ["squash", "passthrough"])
@pytest.mark.parametrize("inline_metadata", ["auto", "never"])
async def test_modes_arrive_verbatim_whatever_the_gateway_umask(
    start_gateway: GatewayFactory, umask_022: None, ownership: str, inline_metadata: str
) -> None:
    async with (
        start_gateway(ownership=ownership, inline_metadata=inline_metadata) as gw,
        gw.client() as c,
    ):
        root, _ = await c.attach("alpha")
        gid = os.getgid()
        fid = await walk(c, root)
        await c.call(p.Tlcreate(fid, "f", p.DOTL_RDWR, 0o620, gid), p.Rlcreate)
        await c.call(p.Tmkdir(root, "d", stat.S_IFDIR | 0o777, gid), p.Rmkdir)
        await c.call(p.Tmknod(root, "fifo", stat.S_IFIFO | 0o666, 0, 0, gid), p.Rmknod)
        await c.call(p.Tmkdir(root, "private", 0o700, gid), p.Rmkdir)
    share = gw.share_dir("alpha")
    assert _mode(share / "f") == 0o620
    assert _mode(share / "d") == 0o777
    assert _mode(share / "fifo") == 0o666
    assert _mode(share / "private") == 0o700


def _owner(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


async def _make_each_kind(c: Client, root: int, gid: int, mode: int = 0o644) -> None:
    fid = await walk(c, root)
    await c.call(p.Tlcreate(fid, "f", p.DOTL_RDWR, mode, gid), p.Rlcreate)
    await c.call(p.Tmkdir(root, "d", stat.S_IFDIR | 0o755, gid), p.Rmkdir)
    await c.call(p.Tmknod(root, "fifo", stat.S_IFIFO | 0o644, 0, 0, gid), p.Rmknod)
    await c.call(p.Tsymlink(root, "link", "f", gid), p.Rsymlink)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


@needs_root
@pytest.mark.parametrize("inline_metadata", ["auto", "never"])
async def test_passthrough_the_attaching_user_owns_what_it_creates(
    start_gateway: GatewayFactory, inline_metadata: str
) -> None:
    async with (
        start_gateway(ownership="passthrough", inline_metadata=inline_metadata) as gw,
        gw.client() as c,
    ):
        root, _ = await c.attach("alpha", uname="alice", n_uname=1234)
        await _make_each_kind(c, root, 4321)
    share = gw.share_dir("alpha")
    for name in ("f", "d", "fifo", "link"):
        assert _owner(share / name) == (1234, 4321), name


@needs_root
async def test_passthrough_without_n_uname_gives_the_gid_only(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(ownership="passthrough") as gw, gw.client() as c:
        root, _ = await c.attach("alpha")  # n_uname = 0xFFFFFFFF: none given
        await _make_each_kind(c, root, 4321)
    share = gw.share_dir("alpha")
    for name in ("f", "d", "fifo", "link"):
        assert _owner(share / name) == (os.geteuid(), 4321), name


@needs_root
async def test_passthrough_chown_keeps_the_set_id_bits_asked_for(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(ownership="passthrough") as gw, gw.client() as c:
        root, _ = await c.attach("alpha", n_uname=1234)
        fid = await walk(c, root)
        await c.call(p.Tlcreate(fid, "f", p.DOTL_RDWR, 0o6755, 4321), p.Rlcreate)
    path = gw.share_dir("alpha") / "f"
    assert _owner(path) == (1234, 4321)
    assert _mode(path) == 0o6755


async def test_squash_ignores_n_uname_and_gid(start_gateway: GatewayFactory) -> None:
    async with start_gateway() as gw, gw.client() as c:
        root, _ = await c.attach("alpha", n_uname=1234)
        await _make_each_kind(c, root, 4321, mode=0o6755)
    share = gw.share_dir("alpha")
    for name in ("f", "d", "fifo", "link"):
        assert _owner(share / name) == (os.geteuid(), os.getegid()), name
    assert _mode(share / "f") == 0o755  # set-id bits squashed
