"""Quota and files unlinked while held (issue 20): an unlinked file's bytes stay counted
until the last fid of any session holding it is clunked (its blocks are freed only then).

The quota counts apparent sizes (quota.py), so 700 MiB is a 256 KiB write that ends there:
the same accounting as 700 MiB of data, at the cost of 256 KiB of disk."""

from __future__ import annotations

import errno

import pytest

from vshare import protocol as p
from vshare.client import Client

from .conftest import GatewayFactory, Running
from .helpers import create, open_
from .test_live import one_gib_alpha

pytestmark = pytest.mark.anyio
MiB = 1 << 20


async def grow(c: Client, fid: int, size: int) -> None:
    """Make the file ``size`` bytes long, its last 256 KiB written."""
    reply = await c.rpc(p.Twrite(fid, size - MiB // 4, b"x" * (MiB // 4)))
    assert isinstance(reply, p.Rwrite) and reply.count == MiB // 4


async def edquot(c: Client, fid: int, size: int) -> bool:
    try:
        await grow(c, fid, size)
    except OSError as e:
        assert e.errno == errno.EDQUOT
        return True
    return False


def used(gw: Running) -> int:
    return next(iter(gw.gateway.ctx._usage.values())).used


async def test_an_unlinked_file_counts_until_its_last_fid_of_any_session_goes(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(shares=one_gib_alpha()) as gw, gw.client() as a, gw.client() as b:
        root_a, _ = await a.attach("alpha")
        root_b, _ = await b.attach("alpha")
        big = await create(a, root_a, "big")
        await grow(a, big, 700 * MiB)
        other = await open_(b, root_b, "big", flags=p.DOTL_RDONLY)  # another session's
        await a.call(p.Tunlinkat(root_a, "big", 0), p.Runlinkat)
        assert not (gw.share_dir("alpha") / "big").exists()
        assert used(gw) == 700 * MiB
        # writes to the unlinked file still count, and still grow it
        await grow(a, big, 720 * MiB)
        assert used(gw) == 720 * MiB
        more = await create(a, root_a, "more")
        assert await edquot(a, more, 500 * MiB)
        await a.clunk(big)
        assert await edquot(a, more, 500 * MiB)  # b still holds it
        await b.clunk(other)
        assert used(gw) == 0
        assert not await edquot(a, more, 500 * MiB)
        assert used(gw) == 500 * MiB


async def test_tremove_of_a_held_file_and_a_rescan(start_gateway: GatewayFactory) -> None:
    async with start_gateway(shares=one_gib_alpha()) as gw, gw.client() as c:
        root, _ = await c.attach("alpha")
        f = await create(c, root, "f")
        await grow(c, f, 700 * MiB)
        g = await open_(c, root, "f", flags=p.DOTL_RDONLY)
        await c.call(p.Tremove(f), p.Rremove)  # clunks f; g holds the file
        assert used(gw) == 700 * MiB
        # a scan (at an attach, when the last is old) cannot see the file: it adds it
        usage = next(iter(gw.gateway.ctx._usage.values()))
        usage.scanned_at = None
        async with gw.client() as other:
            await other.attach("alpha")
        assert used(gw) == 700 * MiB
        await c.clunk(g)
        assert used(gw) == 0
        h = await create(c, root, "h")
        assert not await edquot(c, h, 1000 * MiB)
