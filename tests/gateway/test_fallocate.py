"""vshare's extension of 9P2000.L ``VERSION_VSHARE_5``: Tfallocate, fallocate(2) of an open
fid. In a share with a size, growth is charged as a write's (EDQUOT before anything is
allocated), and space kept beyond the end of a file (KEEP_SIZE), which the quota's
apparent sizes would not show, is refused."""

from __future__ import annotations

import errno
import os

import pytest

from vshare import protocol as p
from vshare.client import Client
from vshare.gateway import session

from .conftest import GatewayFactory, Running
from .helpers import create, open_
from .test_live import one_gib_alpha
from .test_quota_open import used

pytestmark = pytest.mark.anyio
GiB = 1 << 30
KEEP, PUNCH, ZERO = p.FALLOC_KEEP_SIZE, p.FALLOC_PUNCH_HOLE, p.FALLOC_ZERO_RANGE


async def fallocate(c: Client, fid: int, mode: int, offset: int, length: int) -> int:
    """0, or the errno the gateway answered."""
    try:
        await c.call(p.Tfallocate(fid, mode, offset, length), p.Rfallocate)
    except OSError as exc:
        return exc.errno or -1
    return 0


async def test_the_gateway_agrees_to_vshare_5_and_an_older_one_is_asked_for_less(
    gw: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with gw.client() as c:
        assert c.fallocates and c.opens_new_fids and c.feed
    monkeypatch.setattr(session, "VSHARE_VERSIONS", session.VSHARE_VERSIONS - {p.VERSION_VSHARE_5})
    async with gw.client() as c:
        assert c.opens_new_fids and not c.fallocates


async def test_modes_reach_the_file(gw: Running) -> None:
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        f = await create(c, root, "f", b"x" * 8192)
        assert await fallocate(c, f, 0, 0, 1 << 20) == 0
        assert await fallocate(c, f, KEEP, 1 << 20, 1 << 20) == 0
        assert await fallocate(c, f, PUNCH | KEEP, 0, 4096) == 0
        assert await fallocate(c, f, ZERO, (1 << 20) - 10, 20) == 0
        host = gw.share_dir("alpha") / "f"
        st = os.stat(host)
        assert st.st_size == (1 << 20) + 10
        assert st.st_blocks * 512 >= (2 << 20) - 4096  # KEEP_SIZE allocated past the end
        assert host.read_bytes() == bytes(4096) + b"x" * 4096 + bytes(st.st_size - 8192)
        # Linux's refusals, and ours
        assert await fallocate(c, f, PUNCH, 0, 10) == errno.EOPNOTSUPP  # without KEEP_SIZE
        assert await fallocate(c, f, 0x08, 0, 10) == errno.EOPNOTSUPP  # COLLAPSE_RANGE
        assert await fallocate(c, f, 0, 0, 0) == errno.EINVAL
        assert await fallocate(c, f, 0, (1 << 63) - 5, 10) == errno.EFBIG
        ro = await open_(c, root, "f", flags=p.DOTL_RDONLY)
        assert await fallocate(c, ro, 0, 0, 10) == errno.EBADF
        walked = await open_(c, root)  # the directory, opened
        assert await fallocate(c, walked, 0, 0, 10) in (errno.EBADF, errno.EISDIR)


async def test_the_quota_holds(start_gateway: GatewayFactory) -> None:
    async with start_gateway(shares=one_gib_alpha()) as gw, gw.client() as c:
        root, _ = await c.attach("alpha")
        f = await create(c, root, "f")
        # apparent size counts: the file is made 1 GiB - 8 KiB long for nothing
        await c.call(p.Tsetattr(f, p.SETATTR_SIZE, 0, 0, 0, GiB - 8192, 0, 0, 0, 0), p.Rsetattr)
        assert used(gw) == GiB - 8192
        assert await fallocate(c, f, 0, GiB - 8192, 16384) == errno.EDQUOT
        assert os.stat(gw.share_dir("alpha") / "f").st_size == GiB - 8192  # nothing done
        assert await fallocate(c, f, 0, GiB - 12288, 4096) == 0  # within the size
        assert await fallocate(c, f, 0, GiB - 8192, 8192) == 0  # exactly full
        assert used(gw) == GiB
        assert await fallocate(c, f, KEEP, GiB, 4096) == errno.EOPNOTSUPP  # past the end
        assert await fallocate(c, f, KEEP, GiB - 4096, 4096) == 0
        assert await fallocate(c, f, PUNCH | KEEP, GiB - 8192, 8192) == 0
        assert await fallocate(c, f, ZERO, GiB - 100, 200) == errno.EDQUOT
        assert await fallocate(c, f, ZERO | KEEP, GiB - 100, 100) == 0
        assert used(gw) == GiB
        assert os.stat(gw.share_dir("alpha") / "f").st_size == GiB
