"""Names are bytes: a name that is not UTF-8 works end to end (issue 20, item 7).

Linux allows any bytes but ``/`` and NUL in a name, and a guest's kernel client sends
them as they are. Such a name used to be a protocol error that closed the session (and
with it the guest's mount); now it is created, listed, opened, renamed and removed, and
reaches the disk as the very bytes sent.
"""

from __future__ import annotations

import os

import pytest

from vshare import protocol as p

from .conftest import GatewayFactory
from .helpers import create, listdir, read_file, walk

pytestmark = pytest.mark.anyio

LATIN1 = os.fsdecode(b"caf\xe9")  # "café" in Latin-1: not UTF-8
RAW = os.fsdecode(b"\xff\xfe-\x80")


@pytest.mark.parametrize("inline", ["auto", "never"])
async def test_non_utf8_names_end_to_end(start_gateway: GatewayFactory, inline: str) -> None:
    async with start_gateway(inline_metadata=inline) as gw, gw.client() as c:
        root, _ = await c.attach("alpha")
        back = gw.share_dir("alpha")
        fid = await create(c, root, LATIN1, b"latin-1 name")
        await c.clunk(fid)
        assert os.listdir(os.fsencode(back)) == [b"caf\xe9"]
        await c.call(p.Tmkdir(root, RAW, 0o755, 0), p.Rmkdir)
        await c.call(p.Tsymlink(root, "ln", LATIN1, 0), p.Rsymlink)
        names = {d.name for d in await listdir(c, root)} - {".", ".."}
        assert names == {LATIN1, RAW, "ln"}
        assert await read_file(c, root, LATIN1) == b"latin-1 name"
        link = await walk(c, root, "ln")
        assert (await c.call(p.Treadlink(link), p.Rreadlink)).target == LATIN1
        assert os.readlink(os.fsencode(back / "ln")) == b"caf\xe9"
        await c.clunk(link)
        await c.rpc(p.Trenameat(root, LATIN1, root, RAW + "x"))
        assert sorted(os.listdir(os.fsencode(back))) == sorted(
            [b"\xff\xfe-\x80", b"\xff\xfe-\x80x", b"ln"]
        )
        await c.rpc(p.Tunlinkat(root, RAW + "x", 0))
        await c.rpc(p.Tunlinkat(root, RAW, p.AT_REMOVEDIR))
        await c.rpc(p.Tunlinkat(root, "ln", 0))
        assert os.listdir(back) == []
        # The session is alive and well throughout.
        assert (await c.call(p.Tgetattr(root, p.GETATTR_ALL), p.Rgetattr)).qid.type == p.QTDIR
