"""vshare's extension of 9P2000.L ``VERSION_VSHARE_4``: a fid made and opened in one
request. Tlcreateat, a create in a directory fid whose file becomes a new fid, as a Twalk
clone and a Tlcreate would make it; Twalkopen, a Twalk of at most one name and a Tlopen of
the new fid. The checks are theirs; the fid walked from stays what it was, and an error
makes no fid."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from tests.gateway.conftest import GatewayFactory, Running
from tests.gateway.helpers import getattr_, open_, walk
from vshare import protocol as p
from vshare.gateway import session

pytestmark = pytest.mark.anyio

RDWR = p.DOTL_RDWR | p.DOTL_CREATE | p.DOTL_EXCL


async def test_the_gateway_agrees_to_vshare_4(gw: Running) -> None:
    async with gw.client() as c:
        assert c.opens_new_fids and c.feed and c.readdirplus and c.ordered


async def test_an_older_gateway_is_asked_for_less(
    gw: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway that does not know vshare.4 answers "9P2000.L" to it; the client asks
    for vshare.3 and creates as before (a clone and a Tlcreate)."""
    older = session.VSHARE_VERSIONS - {p.VERSION_VSHARE_4, p.VERSION_VSHARE_5}
    monkeypatch.setattr(session, "VSHARE_VERSIONS", older)
    async with gw.client() as c:
        assert c.feed and c.readdirplus and c.ordered
        assert not c.opens_new_fids


@pytest.mark.parametrize("inline_metadata", ["auto", "never"])
async def test_the_new_fid_is_the_open_file_and_the_directory_fid_stays(
    start_gateway: GatewayFactory, inline_metadata: str
) -> None:
    async with start_gateway(inline_metadata=inline_metadata) as gw, gw.client() as c:
        share = gw.share_dir("alpha")
        (share / "d").mkdir()
        root, _ = await c.attach("alpha")
        d = await walk(c, root, "d")
        dir_attrs = await getattr_(c, d)
        old = os.umask(0o077)  # modes arrive verbatim, whatever the gateway's umask
        try:
            new, new2 = c.new_fid(), c.new_fid()
            made = await c.call(p.Tlcreateat(d, new, "f", RDWR, 0o664, 0), p.Rlcreateat)
            made2 = await c.call(p.Tlcreateat(d, new2, "g", RDWR, 0o600, 0), p.Rlcreateat)
        finally:
            os.umask(old)
        assert made.iounit > 0 and made.qid != made2.qid
        # the new fid is the opened file: written, read back, stat'ed
        assert (await c.call(p.Twrite(new, 0, b"hello"), p.Rwrite)).count == 5
        assert bytes((await c.call(p.Tread(new, 0, 100), p.Rread)).data) == b"hello"
        attrs = await getattr_(c, new)
        assert attrs.qid == made.qid and attrs.size == 5
        assert stat.S_IMODE(attrs.mode) == 0o664
        assert stat.S_IMODE(os.lstat(share / "d" / "f").st_mode) == 0o664
        # the directory fid is still the directory: stat'ed, walked from, listed
        assert (await getattr_(c, d)).qid == dir_attrs.qid
        f = await walk(c, d, "f")
        assert (await getattr_(c, f)).qid == made.qid
        listing = await open_(c, d, flags=p.DOTL_RDONLY | p.DOTL_DIRECTORY)
        names = {e.name for e in p.unpack_dirents((await c.call(
            p.Treaddir(listing, 0, 8192), p.Rreaddir)).data)}  # fmt: skip
        assert {"f", "g"} <= names
        for fid in (new, new2, f, listing, d, root):
            await c.clunk(fid)
    assert (share / "d" / "f").read_bytes() == b"hello"
    assert gw.gateway.ctx.budgets.fids.used == 0  # the new fids and their links went back


async def test_a_refused_create_makes_no_fid(gw: Running) -> None:
    share = gw.share_dir("alpha")
    (share / "d").mkdir()
    (share / "d" / "there").write_bytes(b"x")
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        d = await walk(c, root, "d")
        file_fid = await walk(c, d, "there")
        opened = await open_(c, d, flags=p.DOTL_RDONLY | p.DOTL_DIRECTORY)
        n = c.new_fid()  # never made by any of these
        cases = [
            (p.Tlcreateat(d, n, "there", RDWR, 0o644, 0), errno.EEXIST),
            (p.Tlcreateat(d, n, "..", RDWR, 0o644, 0), errno.EINVAL),
            (p.Tlcreateat(d, n, "a/b", RDWR, 0o644, 0), errno.EINVAL),
            (p.Tlcreateat(file_fid, n, "x", RDWR, 0o644, 0), errno.ENOTDIR),
            (p.Tlcreateat(opened, n, "x", RDWR, 0o644, 0), errno.EBUSY),
            (p.Tlcreateat(d, d, "x", RDWR, 0o644, 0), errno.EBADF),  # newfid in use
            (p.Tlcreateat(d, p.NOFID, "x", RDWR, 0o644, 0), errno.EINVAL),
            (p.Tlcreateat(999, n, "x", RDWR, 0o644, 0), errno.EBADF),
        ]
        for msg, code in cases:
            with pytest.raises(OSError) as info:
                await c.rpc(msg)
            assert info.value.errno == code, msg
            with pytest.raises(OSError) as info:  # n was never made
                await c.rpc(p.Tgetattr(n, p.GETATTR_BASIC))
            assert info.value.errno == errno.EBADF, msg
        assert sorted(os.listdir(share / "d")) == ["there"]  # nothing made on the way
        ro_root, _ = await c.attach("beta")
        with pytest.raises(OSError) as info:
            await c.rpc(p.Tlcreateat(ro_root, n, "x", RDWR, 0o644, 0))
        assert info.value.errno == errno.EROFS
        assert not (gw.share_dir("beta") / "x").exists()


async def test_walkopen_opens_a_new_fid_and_leaves_the_old(gw: Running) -> None:
    share = gw.share_dir("alpha")
    (share / "d").mkdir()
    (share / "d" / "f").write_bytes(b"contents")
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        d = await walk(c, root, "d")
        f = await walk(c, d, "f")
        by_name, clone, listing = c.new_fid(), c.new_fid(), c.new_fid()
        r = await c.call(p.Twalkopen(d, by_name, p.DOTL_RDONLY, ("f",)), p.Rwalkopen)
        assert r.iounit > 0 and r.qid == (await getattr_(c, f)).qid
        assert bytes((await c.call(p.Tread(by_name, 0, 100), p.Rread)).data) == b"contents"
        # no name: a clone of the fid, opened (read-write here)
        await c.call(p.Twalkopen(f, clone, p.DOTL_RDWR, ()), p.Rwalkopen)
        await c.call(p.Twrite(clone, 0, b"C"), p.Rwrite)
        assert bytes((await c.call(p.Tread(by_name, 0, 100), p.Rread)).data) == b"Contents"
        # a directory, opened for listing; the fid it came from is still unopened
        await c.call(p.Twalkopen(d, listing, p.DOTL_RDONLY | p.DOTL_DIRECTORY, ()), p.Rwalkopen)
        names = {e.name for e in p.unpack_dirents((await c.call(
            p.Treaddir(listing, 0, 8192), p.Rreaddir)).data)}  # fmt: skip
        assert names >= {".", "..", "f"}
        g = await walk(c, d, "f")  # d can still be walked from: not opened
        for fid in (by_name, clone, listing, g, f, d, root):
            await c.clunk(fid)
    assert gw.gateway.ctx.budgets.fids.used == 0


async def test_a_refused_walkopen_makes_no_fid(gw: Running) -> None:
    share = gw.share_dir("alpha")
    (share / "d").mkdir()
    (share / "d" / "f").write_bytes(b"x")
    (share / "d" / "ro").write_bytes(b"x")
    os.chmod(share / "d" / "ro", 0o400)
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        d = await walk(c, root, "d")
        n = c.new_fid()
        cases = [
            (p.Twalkopen(d, n, p.DOTL_RDONLY, ("missing",)), errno.ENOENT),
            (p.Twalkopen(d, n, p.DOTL_RDONLY, ("..",)), None),  # fine: d's parent, the root
            (p.Twalkopen(d, n, p.DOTL_RDONLY, ("a/b",)), errno.EINVAL),
            (p.Twalkopen(d, n, p.DOTL_RDONLY, ("f", "g")), errno.EINVAL),  # one name at most
            (p.Twalkopen(d, n, p.DOTL_WRONLY | p.DOTL_TRUNC, ("f",)), errno.EINVAL),
            (p.Twalkopen(d, d, p.DOTL_RDONLY, ("f",)), errno.EINVAL),  # in place
            (p.Twalkopen(d, root, p.DOTL_RDONLY, ("f",)), errno.EBADF),  # newfid in use
            (p.Twalkopen(999, n, p.DOTL_RDONLY, ("f",)), errno.EBADF),
        ]
        for msg, code in cases:
            if code is None:
                await c.call(msg, p.Rwalkopen)
                await c.clunk(n)
                n = c.new_fid()
                continue
            with pytest.raises(OSError) as info:
                await c.rpc(msg)
            assert info.value.errno == code, msg
            with pytest.raises(OSError) as info:  # n was never made
                await c.rpc(p.Tgetattr(n, p.GETATTR_BASIC))
            assert info.value.errno == errno.EBADF, msg
        # an open that fails after the walk (a file of the read-only share opened for
        # writing) leaves no fid either
        ro_root, _ = await c.attach("beta")
        (gw.share_dir("beta") / "f").write_bytes(b"x")
        with pytest.raises(OSError) as info:
            await c.rpc(p.Twalkopen(ro_root, n, p.DOTL_RDWR, ("f",)))
        assert info.value.errno == errno.EROFS
        with pytest.raises(OSError) as info:
            await c.rpc(p.Tgetattr(n, p.GETATTR_BASIC))
        assert info.value.errno == errno.EBADF
        for fid in (d, root, ro_root):
            await c.clunk(fid)
    assert gw.gateway.ctx.budgets.fids.used == 0
