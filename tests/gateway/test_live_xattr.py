"""An extended-attribute write spans requests (Txattrcreate, Twrite, Tclunk): a rule that
becomes read-only meanwhile stops it where it takes effect, at Tclunk (issue 20)."""

from __future__ import annotations

import errno
import os

import pytest

from vshare import protocol as p
from vshare.policy import AccessRule, Level

from .conftest import Running, base_config
from .helpers import create, walk
from .test_live import shares_with

pytestmark = pytest.mark.anyio
ME = str(os.getuid())
READ_ONLY = (AccessRule("user", ME, Level.RO),)


async def test_xattr_write_committed_after_rw_to_ro_is_refused(gw: Running) -> None:
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        await c.clunk(await create(c, root, "f"))
        fid = await walk(c, root, "f")
        await c.call(p.Txattrcreate(fid, "user.color", 4, 0), p.Rxattrcreate)
        await c.call(p.Twrite(fid, 0, b"bl"), p.Rwrite)
        gw.gateway.set_shares(shares_with("alpha", access=READ_ONLY))
        with pytest.raises(OSError) as info:  # the rest of the value: refused at once
            await c.call(p.Twrite(fid, 2, b"ue"), p.Rwrite)
        assert info.value.errno == errno.EROFS
        with pytest.raises(OSError) as info:  # and the commit
            await c.call(p.Tclunk(fid), p.Rclunk)
        assert info.value.errno == errno.EROFS
        assert "user.color" not in os.listxattr(gw.share_dir("alpha") / "f")
        # the fid is gone all the same
        with pytest.raises(OSError) as info:
            await c.call(p.Tgetattr(fid, p.GETATTR_BASIC), p.Rgetattr)
        assert info.value.errno == errno.EBADF


async def test_xattr_written_under_rw_committed_after_ro_is_refused(gw: Running) -> None:
    """Every byte written while rw, the rule changes before Tclunk: nothing is set."""
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        await c.clunk(await create(c, root, "g"))
        fid = await walk(c, root, "g")
        await c.call(p.Txattrcreate(fid, "user.color", 4, 0), p.Rxattrcreate)
        await c.call(p.Twrite(fid, 0, b"blue"), p.Rwrite)
        gw.gateway.set_shares(shares_with("alpha", access=READ_ONLY))
        with pytest.raises(OSError) as info:
            await c.call(p.Tclunk(fid), p.Rclunk)
        assert info.value.errno == errno.EROFS
        assert "user.color" not in os.listxattr(gw.share_dir("alpha") / "g")
        gw.gateway.set_shares(base_config().shares)  # rw again: the same write works
        fid = await walk(c, root, "g")
        await c.call(p.Txattrcreate(fid, "user.color", 4, 0), p.Rxattrcreate)
        await c.call(p.Twrite(fid, 0, b"blue"), p.Rwrite)
        await c.call(p.Tclunk(fid), p.Rclunk)
        assert os.getxattr(gw.share_dir("alpha") / "g", "user.color") == b"blue"
