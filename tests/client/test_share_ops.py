"""The os-like client API, one suite run against the gateway and against diod."""

from __future__ import annotations

import errno
import hashlib
import os
import stat

import anyio
import pytest

from vshare import protocol as p
from vshare.client import AsyncShare, Share, open_client
from vshare.protocol import LOCK_TYPE_UNLCK, LOCK_TYPE_WRLCK

from .conftest import Server

pytestmark = pytest.mark.anyio


async def test_write_read_roundtrip_larger_than_msize(share: AsyncShare, server: Server) -> None:
    data = hashlib.sha256(b"x").digest() * (3 * share.msize // 32 + 7)  # > 3 frames
    assert await share.write_bytes("big.bin", data) == len(data)
    assert (server.root / "big.bin").read_bytes() == data
    assert await share.read_bytes("/big.bin") == data
    async with await share.open("big.bin", "rb") as f:
        assert await f.pread(10, 5) == data[5:15]
        await f.seek(-4, os.SEEK_END)
        assert await f.read() == data[-4:]
        assert await f.read(10) == b""


async def test_open_modes_and_errnos(share: AsyncShare, server: Server) -> None:
    with pytest.raises(FileNotFoundError):
        await share.open("nope.txt", "rb")
    await share.write_bytes("a.txt", b"hello")
    with pytest.raises(FileExistsError):
        await share.open("a.txt", "xb")
    async with await share.open("a.txt", "ab") as f:
        await f.write(b" world")
    assert (server.root / "a.txt").read_bytes() == b"hello world"
    async with await share.open("a.txt", "r+b") as f:
        await f.seek(6)
        await f.write(b"WORLD")
        await f.seek(0)
        assert await f.read() == b"hello WORLD"
    async with await share.open("a.txt", "wb") as f:  # truncates
        await f.write(b"new")
    assert await share.read_bytes("a.txt") == b"new"
    with pytest.raises(ValueError):
        await share.open("a.txt", "rt")


async def test_stat_listdir_scandir(share: AsyncShare, server: Server) -> None:
    (server.root / "d").mkdir()
    (server.root / "d" / "f1").write_bytes(b"12345")
    (server.root / "d" / "sub").mkdir()
    os.symlink("f1", server.root / "d" / "ln")
    st = await share.stat("d/f1")
    assert stat.S_ISREG(st.st_mode) and st.st_size == 5
    assert st.st_ino == st.qid.path
    assert abs(st.st_mtime - (server.root / "d" / "f1").stat().st_mtime) < 1e-3
    assert stat.S_ISLNK((await share.stat("d/ln")).st_mode)  # lstat: not followed
    assert sorted(await share.listdir("d")) == ["f1", "ln", "sub"]
    entries = {e.name: e for e in await share.scandir("/d")}
    assert entries["sub"].is_dir() and entries["f1"].is_file() and entries["ln"].is_symlink()
    assert entries["f1"].stat is not None and entries["f1"].stat.st_size == 5
    assert entries["f1"].path == "/d/f1"
    with pytest.raises(OSError) as info:
        await share.listdir("d/f1")
    assert info.value.errno == errno.ENOTDIR


async def test_directory_many_entries(share: AsyncShare, server: Server) -> None:
    d = server.root / "many"
    d.mkdir()
    for i in range(1500):
        (d / f"file-with-a-long-name-{i:05}").touch()
    names = await share.listdir("many")
    assert len(names) == 1500 and len(set(names)) == 1500


async def test_mkdir_rmdir_unlink_rename(share: AsyncShare, server: Server) -> None:
    st = await share.mkdir("x", 0o750)
    assert stat.S_ISDIR(st.st_mode)
    assert (server.root / "x").is_dir()
    with pytest.raises(FileExistsError):
        await share.mkdir("x")
    await share.write_bytes("x/f", b"1")
    with pytest.raises(OSError) as info:
        await share.rmdir("x")
    assert info.value.errno == errno.ENOTEMPTY
    await share.rename("x/f", "g")
    assert (server.root / "g").read_bytes() == b"1"
    assert not (server.root / "x" / "f").exists()
    await share.write_bytes("h", b"2")
    await share.rename("h", "g")  # replaces
    assert (server.root / "g").read_bytes() == b"2"
    await share.rmdir("x")
    await share.unlink("g")
    assert sorted(os.listdir(server.root)) == []
    with pytest.raises(FileNotFoundError):
        await share.unlink("g")
    await share.makedirs("p/q/r")
    assert (server.root / "p" / "q" / "r").is_dir()


async def test_symlink_readlink_link_mknod(share: AsyncShare, server: Server) -> None:
    await share.write_bytes("t", b"target")
    await share.symlink("t", "s")
    assert os.readlink(server.root / "s") == "t"
    assert await share.readlink("s") == "t"
    await share.link("t", "hard")
    assert (await share.stat("t")).st_nlink == 2
    assert (server.root / "hard").stat().st_ino == (server.root / "t").stat().st_ino
    await share.mknod("fifo", 0o600 | stat.S_IFIFO)
    assert stat.S_ISFIFO((server.root / "fifo").lstat().st_mode)


async def test_setattr_chmod_truncate_utime(share: AsyncShare, server: Server) -> None:
    await share.write_bytes("f", b"0123456789")
    await share.chmod("f", 0o640)
    assert stat.S_IMODE((server.root / "f").stat().st_mode) == 0o640
    await share.truncate("f", 4)
    assert (server.root / "f").read_bytes() == b"0123"
    await share.truncate("f", 1 << 33)  # sparse, past 4 GiB
    assert (await share.stat("f")).st_size == 1 << 33
    await share.utime("f", ns=(1_000_000_001, 2_000_000_002))
    st = (server.root / "f").stat()
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_001, 2_000_000_002)


async def test_offsets_past_4gib(share: AsyncShare, server: Server) -> None:
    async with await share.open("sparse", "wb") as f:
        await f.pwrite(b"far away", 5 << 30)
    assert (server.root / "sparse").stat().st_size == (5 << 30) + 8
    async with await share.open("sparse", "rb") as f:
        assert await f.pread(8, 5 << 30) == b"far away"
        assert await f.pread(4, 1 << 20) == b"\0\0\0\0"


async def test_xattrs(share: AsyncShare, server: Server) -> None:
    await share.write_bytes("f", b"")
    await share.setxattr("f", "user.color", b"blue")
    assert os.getxattr(server.root / "f", "user.color") == b"blue"
    assert await share.getxattr("f", "user.color") == b"blue"
    assert "user.color" in await share.listxattr("f")
    with pytest.raises(FileExistsError):
        await share.setxattr("f", "user.color", b"red", os.XATTR_CREATE)
    await share.removexattr("f", "user.color")
    with pytest.raises(OSError) as info:
        await share.getxattr("f", "user.color")
    assert info.value.errno == errno.ENODATA


async def test_locks(share: AsyncShare, server: Server) -> None:
    if server.kind == "diod":
        pytest.skip("diod takes POSIX locks with fcntl in its one process: owners never conflict")
    await share.write_bytes("l", b"x")
    a = await share.open("l", "r+b")
    b = await share.open("l", "r+b")
    try:
        await a.lock("w", owner=1)
        with pytest.raises(BlockingIOError):
            await b.lock("w", owner=2)
        held = await b.getlock("w")
        assert held.type == LOCK_TYPE_WRLCK
        await a.lock("u", owner=1)
        await b.lock("w", owner=2)
        assert (await a.getlock("w")).type in (LOCK_TYPE_WRLCK, LOCK_TYPE_UNLCK)
    finally:
        await a.close()
        await b.close()


async def test_statfs(share: AsyncShare, server: Server) -> None:
    st = await share.statfs()
    local = os.statvfs(server.root)
    assert st.f_bsize > 0 and st.f_blocks > 0
    assert st.f_namemax == local.f_namemax


async def test_paths_deep_walks_and_dotdot(share: AsyncShare, server: Server) -> None:
    names = [f"d{i}" for i in range(40)]  # three Twalks of ≤ 16 names
    (server.root.joinpath(*names)).mkdir(parents=True)
    (server.root.joinpath(*names) / "leaf").write_bytes(b"deep")
    assert await share.read_bytes("/".join([*names, "leaf"])) == b"deep"
    assert await share.read_bytes("d0/../d0/./d1/" + "/".join(names[2:]) + "/leaf") == b"deep"
    with pytest.raises(FileNotFoundError):
        await share.read_bytes("/".join([*names[:20], "missing", *names[21:]]))
    for bad in ("..", "../x", "d0/../../x"):
        with pytest.raises(OSError) as info:
            await share.stat(bad)
        assert info.value.errno == errno.EINVAL


async def test_many_requests_in_flight_and_fids_recycled(share: AsyncShare, server: Server) -> None:
    for i in range(64):
        (server.root / f"f{i}").write_bytes(str(i).encode())
    results: dict[int, bytes] = {}

    async def one(i: int) -> None:
        results[i] = await share.read_bytes(f"f{i}")

    for _ in range(3):
        async with anyio.create_task_group() as tg:
            for i in range(64):
                tg.start_soon(one, i)
    assert results == {i: str(i).encode() for i in range(64)}
    session = share._session
    assert session is not None
    # Three rounds of 64 opens reused the fid numbers of the first round.
    assert session.client._next_fid <= 64 * 2 + 2


async def test_readonly_share_is_erofs(start_gateway: object) -> None:
    from vshare.client import open_share

    async with start_gateway() as gw, open_share(gw.uri, "beta") as s:  # type: ignore[attr-defined]
        assert await s.read_bytes("readme.txt") == b"read only\n"
        with pytest.raises(OSError) as info:
            await s.write_bytes("new.txt", b"x")
        assert info.value.errno == errno.EROFS


async def test_absent_gateway_and_denied_share(tmp_path: object, start_gateway: object) -> None:
    from vshare.client import open_share

    with pytest.raises(OSError) as info:
        async with open_share(f"unix://{tmp_path}/none.sock", "alpha"):
            pass
    assert info.value.errno in (errno.ENOENT, errno.ECONNREFUSED)
    assert "none.sock" in str(info.value)
    async with start_gateway() as gw:  # type: ignore[attr-defined]
        with pytest.raises(OSError) as info:
            async with open_share(gw.uri, "gamma"):
                pass
        assert info.value.errno in (errno.EACCES, errno.EPERM, errno.ENOENT)


async def test_blocking_facade(start_gateway: object) -> None:
    async with start_gateway() as gw:  # type: ignore[attr-defined]

        def script() -> tuple[bytes, list[str], int]:
            with Share(gw.uri, "alpha") as s:
                s.write_bytes("b.txt", b"blocking")
                s.mkdir("dir")
                with s.open("dir/c.bin", "wb") as f:
                    f.write(b"abc")
                    f.pwrite(b"Z", 1)
                return s.read_bytes("b.txt"), sorted(s.listdir("/")), s.stat("dir/c.bin").st_size

        data, names, size = await anyio.to_thread.run_sync(script)
        assert data == b"blocking" and names == ["b.txt", "dir"] and size == 3
        assert (gw.share_dir("alpha") / "dir" / "c.bin").read_bytes() == b"aZc"


async def test_clunks_are_not_waited_for_but_fids_wait_for_their_reply(
    share: AsyncShare, server: Server
) -> None:
    """A stat is walk + getattr; its Tclunk goes out without a wait. The fid number comes
    back into use only after the server answered the clunk: many concurrent stats never
    reuse a fid the server still holds (it would answer a walk to it with an error)."""
    (server.root / "f").write_bytes(b"x")
    session = share._session
    assert session is not None
    client = session.client

    async def stats() -> None:
        for _ in range(20):
            assert (await share.stat("f")).st_size == 1

    async with anyio.create_task_group() as tg:
        for _ in range(16):
            tg.start_soon(stats)
    with anyio.fail_after(5):  # every Rclunk arrives and frees its fid and tag
        while client._unwaited_clunks:
            await anyio.sleep(0.01)
    # 320 stats, ≤ 16 in flight: fids were recycled, not minted one per stat.
    assert client._next_fid < 64


async def test_order_per_fid_is_negotiated(server: Server) -> None:
    """The gateway agrees to 9P2000.L.vshare (requests on one fid kept in order, so the
    client may pipeline a walk and a getattr of its new fid); diod does not (it runs
    requests on several threads) and gets plain 9P2000.L, with dependent requests sent
    one after the other — the same answers either way."""
    async with open_client(server.uri) as c:
        assert c.ordered is (server.kind == "gateway")
        root, _ = await c.attach(server.share, n_uname=server.n_uname)
        (server.root / "f").write_bytes(b"x" * 3)
        fid = c.new_fid()
        walk, attr = await c.pipeline([p.Twalk(root, fid, ("f",)), p.Tgetattr(fid, p.GETATTR_ALL)])
        assert isinstance(walk, p.Rwalk) and isinstance(attr, p.Rgetattr)
        assert attr.size == 3
        missing = c.new_fid()
        walk, attr = await c.pipeline(
            [p.Twalk(root, missing, ("nope",)), p.Tgetattr(missing, p.GETATTR_ALL)]
        )
        assert isinstance(walk, OSError) and walk.errno == errno.ENOENT
        assert isinstance(attr, OSError)
