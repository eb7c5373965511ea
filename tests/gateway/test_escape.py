"""The escape battery through the gateway: whatever a guest sends, nothing outside its
share is read or written. (The backend runs its own battery in vshare.testing.)"""

from __future__ import annotations

import errno
import os
import struct
import threading
import time
from pathlib import Path

import anyio
import pytest

from vshare import protocol as p
from vshare.transport import connect

from .conftest import SECRET, Running
from .helpers import create, getattr_, listdir, read_all, walk

pytestmark = pytest.mark.anyio


def snapshot(root: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(root))] = path.read_bytes()
    return out


async def test_dotdot_never_leaves_the_share(gw: Running) -> None:
    (gw.share_dir("alpha") / "sub").mkdir()
    async with gw.client() as c:
        root, root_qid = await c.attach("alpha")
        for names in (("..",), ("..", ".."), ("sub", "..", "..", ".."), ("..",) * 16):
            fid = await walk(c, root, *names)
            assert (await getattr_(c, fid)).qid == root_qid
        # "../secret.txt" as separate names: the root's ".." is the root, no secret there
        reply = await c.rpc(p.Twalk(root, c.new_fid(), ("..", "..", "secret.txt")))
        assert isinstance(reply, p.Rwalk) and len(reply.qids) == 2
        reply = await c.rpc(p.Twalk(root, c.new_fid(), ("..", "shares", "beta")))
        assert isinstance(reply, p.Rwalk) and len(reply.qids) == 1
        names = {e.name for e in await listdir(c, root)}
        assert names == {".", "..", "sub"}


@pytest.mark.parametrize("name", ["../secret.txt", "a/b", "/etc", "", "x\0y", "..\0"])
async def test_names_that_are_not_one_component(gw: Running, name: str) -> None:
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        for msg in (
            p.Twalk(root, c.new_fid(), (name,)),
            p.Tlcreate(await walk(c, root), name, p.DOTL_RDWR, 0o644, 0),
            p.Tmkdir(root, name, 0o755, 0),
            p.Tsymlink(root, name, "x", 0),
            p.Tunlinkat(root, name, 0),
            p.Trenameat(root, name, root, "x"),
        ):
            with pytest.raises(OSError) as info:
                await c.rpc(msg)
            assert info.value.errno in (errno.EINVAL, errno.ENOENT), type(msg).__name__
    assert (gw.volume / "secret.txt").read_bytes() == SECRET


async def test_symlinks_are_data_never_followed(gw: Running) -> None:
    share = gw.share_dir("alpha")
    (share / "abs").symlink_to(gw.volume / "secret.txt")
    (share / "rel").symlink_to("../../secret.txt")
    (share / "sib").symlink_to("../beta")
    (share / "dirlink").symlink_to("../..")
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        for name, target in (("abs", str(gw.volume / "secret.txt")),
                             ("rel", "../../secret.txt"), ("sib", "../beta")):  # fmt: skip
            fid = await walk(c, root, name)
            assert (await getattr_(c, fid)).qid.type == p.QTSYMLINK
            assert (await c.call(p.Treadlink(fid), p.Rreadlink)).target == target
            with pytest.raises(OSError) as info:
                await c.rpc(p.Tlopen(fid, p.DOTL_RDONLY))
            assert info.value.errno == errno.ELOOP
        # a symlink in the middle of a walk stops it
        for names in (("dirlink", "secret.txt"), ("sib", "readme.txt"), ("dirlink", "shares")):
            reply = await c.rpc(p.Twalk(root, c.new_fid(), names))
            assert isinstance(reply, p.Rwalk) and len(reply.qids) == 1, names
        # creating through a symlinked directory is refused
        with pytest.raises(OSError) as info:
            await c.rpc(p.Tlcreate(await walk(c, root, "dirlink"), "x", p.DOTL_RDWR, 0o644, 0))
        assert info.value.errno == errno.ENOTDIR
        # a guest-made symlink to outside is just as harmless
        await c.rpc(p.Tsymlink(root, "mine", "/etc/shadow", 0))
        with pytest.raises(OSError):
            await c.rpc(p.Tlopen(await walk(c, root, "mine"), p.DOTL_RDONLY))


async def test_directory_swapped_for_a_symlink_while_walking(gw: Running) -> None:
    """A host-side race: 'swap' alternates between a real directory and a symlink to the
    directory holding the secret. Walks + reads through it must never return the secret."""
    share = gw.share_dir("alpha")
    outside = gw.volume / "outside"
    outside.mkdir()
    (outside / "f").write_bytes(SECRET)
    real = share / "real"
    real.mkdir()
    (real / "f").write_bytes(b"harmless\n")
    swap = share / "swap"
    stop = threading.Event()

    def swapper() -> None:
        while not stop.is_set():
            tmp = share / "tmp-link"
            tmp.symlink_to(outside)
            os.replace(tmp, swap)  # swap is now a symlink to outside
            os.rename(swap, share / "gone")
            os.rename(real, swap)  # swap is now the real directory
            os.rename(swap, real)
            os.unlink(share / "gone")

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    reads = leaked = 0
    try:
        async with gw.client() as c:
            root, _ = await c.attach("alpha")
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                new = c.new_fid()
                try:
                    reply = await c.rpc(p.Twalk(root, new, ("swap", "f")))
                except OSError:
                    continue
                assert isinstance(reply, p.Rwalk)
                if len(reply.qids) < 2:
                    continue
                try:
                    await c.rpc(p.Tlopen(new, p.DOTL_RDONLY))
                    data = await read_all(c, new)
                    reads += 1
                    leaked += SECRET in data
                except OSError:
                    pass
                finally:
                    await c.clunk(new)
    finally:
        stop.set()
        thread.join()
    assert leaked == 0
    assert reads > 0, "the race never let a walk through: the test proved nothing"


async def test_no_way_to_another_share(gw: Running) -> None:
    async with gw.client() as c:
        alpha, _ = await c.attach("alpha")
        beta, _ = await c.attach("beta")
        f = await create(c, alpha, "mine", b"x")
        # hard link or rename across attachments (shares) is refused
        with pytest.raises(OSError) as info:
            await c.rpc(p.Tlink(beta, await walk(c, beta, "readme.txt"), "stolen"))
        assert info.value.errno in (errno.EXDEV, errno.EROFS)
        with pytest.raises(OSError) as info:
            await c.rpc(p.Trenameat(alpha, "mine", beta, "mine"))
        assert info.value.errno in (errno.EXDEV, errno.EROFS)
        with pytest.raises(OSError) as info:
            await c.rpc(p.Tlink(alpha, await walk(c, beta, "readme.txt"), "stolen"))
        assert info.value.errno == errno.EXDEV
        await c.clunk(f)
        for aname in ("alpha/../gamma", "../shares/gamma", "gamma;uid=0", "shares/gamma"):
            with pytest.raises(OSError):
                await c.attach(aname)
        # options after ";" are ignored: this is share alpha, not gamma
        _, qid = await c.attach("alpha;../gamma")
        assert qid == (await getattr_(c, alpha)).qid


async def test_setuid_bits_are_squashed_everywhere(gw: Running) -> None:
    share = gw.share_dir("alpha")
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        f = await walk(c, root)
        await c.rpc(p.Tlcreate(f, "suid", p.DOTL_RDWR, 0o4755, 0))
        await c.rpc(p.Tmkdir(root, "sgid", 0o2775, 0))
        await c.rpc(p.Tsetattr(f, p.SETATTR_MODE, 0o6777, 0, 0, 0, 0, 0, 0, 0))
        await c.rpc(p.Tmknod(root, "fifo", 0o10000 | 0o4777, 0, 0, 0))
    for name in ("suid", "sgid", "fifo"):
        mode = os.lstat(share / name).st_mode
        assert not mode & 0o6000, (name, oct(mode))


async def test_hostile_sizes_and_offsets(gw: Running) -> None:
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        f = await create(c, root, "f", b"abc")
        cases = [
            (p.Tread(f, 2**64 - 1, 10), errno.EINVAL),
            (p.Tread(f, 2**63, 10), errno.EINVAL),
            (p.Twrite(f, 2**64 - 2, b"x"), errno.EFBIG),
            (p.Twrite(f, 2**63 - 1, b"xy"), errno.EFBIG),
            (p.Tsetattr(f, p.SETATTR_SIZE, 0, 0, 0, 2**64 - 1, 0, 0, 0, 0), errno.EFBIG),
            (p.Txattrcreate(await walk(c, root, "f"), "user.big", 2**40, 0), errno.E2BIG),
        ]
        for msg, code in cases:
            with pytest.raises(OSError) as info:
                await c.rpc(msg)
            assert info.value.errno == code, msg
        d = await walk(c, root)
        await c.rpc(p.Tlopen(d, p.DOTL_RDONLY | p.DOTL_DIRECTORY))
        with pytest.raises(OSError):
            await c.rpc(p.Treaddir(d, 2**64 - 1, 4096))
        reply = await c.call(p.Treaddir(d, 0, 0xFFFFFFFF), p.Rreaddir)
        assert len(reply.data) <= c.msize
        assert (await c.call(p.Tread(f, 0, 0xFFFFFFFF), p.Rread)).data == b"abc"


async def raw_session(gw: Running, frames: bytes) -> bytes:
    conn = await connect(gw.uri)
    try:
        await conn.send([p.encode(0, p.Tversion(65536, "9P2000.L")), frames])
        got = b""
        with anyio.fail_after(5):
            while chunk := await conn.receive(65536):
                got += chunk
        return got
    finally:
        await conn.aclose()


@pytest.mark.parametrize(
    "frames",
    [
        struct.pack("<IBH", 0xFFFFFFFF, 118, 1),  # a frame claiming 4 GiB
        struct.pack("<IBHIIH", 7 + 10 + 17 * 3, 110, 1, 0, 1, 17) + b"\x01\x00a" * 17,
        struct.pack("<IBH", 7, 99, 1),  # unknown type
        struct.pack("<IBH", 7, 101, 1),  # an R-message sent to the server
        struct.pack("<IBHI", 11, 104, 1, 0),  # truncated attach
    ],
    ids=["4GiB", "17-names", "unknown-type", "reply-to-server", "truncated"],
)
async def test_hostile_frames_close_that_session_only(gw: Running, frames: bytes) -> None:
    async with gw.client() as bystander:
        root, _ = await bystander.attach("alpha")
        got = await raw_session(gw, frames)  # returns when the gateway hangs up
        _, reply = p.decode_frame(got)  # only the Rversion came back
        assert type(reply) is p.Rversion
        await bystander.clunk(await walk(bystander, root))  # the other session lives on
    assert gw.gateway.ctx.metrics.protocol_errors._value.get() == 1  # type: ignore[attr-defined]


async def test_other_tenants_data_stays_put(gw: Running) -> None:
    before = snapshot(gw.volume)
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        await c.clunk(await create(c, root, "ok", b"mine"))
    after = snapshot(gw.volume)
    assert {k: v for k, v in after.items() if not k.startswith("shares/alpha/")} == before
