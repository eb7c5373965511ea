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
