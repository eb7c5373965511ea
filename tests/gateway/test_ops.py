"""Every 9P2000.L operation through a real gateway on a real socket."""

from __future__ import annotations

import errno
import os
import stat
import time

import anyio
import pytest

from vshare import protocol as p

from .conftest import GatewayFactory, Running
from .helpers import create, getattr_, listdir, open_, read_all, read_file, walk

pytestmark = pytest.mark.anyio


async def test_version_negotiates_msize_down_and_refuses_other_versions(gw: Running) -> None:
    async with gw.client(msize=8 * 1024 * 1024) as c:
        assert c.msize == gw.gateway.config.msize == 1024 * 1024 + 24
        reply = await c.rpc(p.Tversion(8192, "9P2000.u"), tag=p.NOTAG)
        assert reply == p.Rversion(8192, "unknown")
        assert type(reply) is p.Rversion
        # until a 9P2000.L version is agreed, nothing else is served
        with pytest.raises(OSError) as info:
            await c.attach("alpha")
        assert info.value.errno == errno.EPROTO
        reply = await c.rpc(p.Tversion(65536, "9P2000.L"), tag=p.NOTAG)
        assert reply == p.Rversion(65536, "9P2000.L")


async def test_msize_up_to_1mib_plus_header(start_gateway: GatewayFactory) -> None:
    async with start_gateway(msize=1024 * 1024 + 24) as gw, gw.client(msize=4 << 20) as c:
        assert c.msize == 1024 * 1024 + 24
        root, _ = await c.attach("alpha")
        fid = await create(c, root, "big", os.urandom(1 << 20))
        reply = await c.rpc(p.Tread(fid, 0, 1 << 20))
        assert isinstance(reply, p.Rread) and len(reply.data) == 1 << 20


async def test_attach_by_name_and_id_with_wsl_options(gw: Running) -> None:
    async with gw.client() as c:
        _, q1 = await c.attach("alpha")
        _, q2 = await c.attach("id-alpha;uid=1000;gid=1000")
        assert q1 == q2 and q1.type == p.QTDIR


@pytest.mark.parametrize("aname", ["gamma", "nosuch", "", "shares/alpha", "../alpha"])
async def test_attach_refused_without_a_rule_or_share(gw: Running, aname: str) -> None:
    async with gw.client() as c:
        with pytest.raises(OSError) as info:
            await c.attach(aname)
        assert info.value.errno == errno.EACCES


async def test_uname_grants_nothing(gw: Running) -> None:
    async with gw.client() as c:
        for uname, n_uname in (("root", 0), ("99999", 99999), ("id-gamma", 0)):
            with pytest.raises(OSError):
                await c.attach("gamma", uname=uname, n_uname=n_uname)


async def test_walk_semantics(gw: Running) -> None:
    (gw.share_dir("alpha") / "a" / "b").mkdir(parents=True)
    async with gw.client() as c:
        root, root_qid = await c.attach("alpha")
        # nwname 0 clones
        clone = await walk(c, root)
        assert (await getattr_(c, clone)).qid == root_qid
        # a full walk
        reply = await c.rpc(p.Twalk(root, c.new_fid(), ("a", "b")))
        assert isinstance(reply, p.Rwalk) and len(reply.qids) == 2
        # a partial walk returns the qids walked and does not create newfid
        newfid = c.new_fid()
        reply = await c.rpc(p.Twalk(root, newfid, ("a", "nope", "x")))
        assert isinstance(reply, p.Rwalk) and len(reply.qids) == 1
        with pytest.raises(OSError) as info:
            await c.rpc(p.Tclunk(newfid))
        assert info.value.errno == errno.EBADF
        # the first name failing is an error
        with pytest.raises(OSError) as info:
            await c.rpc(p.Twalk(root, c.new_fid(), ("nope",)))
        assert info.value.errno == errno.ENOENT
        # walking an open fid in place is an error; from it to a new fid is allowed
        # (diod allows it and diodls -l relies on it), and the new fid is not open
        opened = await open_(c, root, "a", flags=p.DOTL_RDONLY | p.DOTL_DIRECTORY)
        with pytest.raises(OSError) as info:
            await c.rpc(p.Twalk(opened, opened, ("b",)))
        assert info.value.errno == errno.EBUSY
        child = await walk(c, opened, "b")
        with pytest.raises(OSError) as info:
            await c.rpc(p.Treaddir(child, 0, 4096))
        assert info.value.errno == errno.EBADF
        xfid = c.new_fid()
        await c.rpc(p.Txattrwalk(root, xfid, ""))
        with pytest.raises(OSError) as info:
            await c.rpc(p.Twalk(xfid, c.new_fid(), ("a",)))
        assert info.value.errno == errno.EBUSY
        # newfid in use
        with pytest.raises(OSError):
            await c.rpc(p.Twalk(root, clone, ()))
        # fid == newfid walks in place
        await c.rpc(p.Twalk(clone, clone, ("a",)))
        assert (await getattr_(c, clone)).qid == reply_qid(reply)


def reply_qid(reply: p.Message) -> p.Qid:
    assert isinstance(reply, p.Rwalk)
    return reply.qids[0]


async def test_create_write_read_append_truncate(gw: Running) -> None:
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        fid = await create(c, root, "f.txt", b"hello ")
        await c.rpc(p.Twrite(fid, 6, b"world"))
        assert await read_all(c, fid) == b"hello world"
        await c.clunk(fid)
        assert (gw.share_dir("alpha") / "f.txt").read_bytes() == b"hello world"
        app = await open_(c, root, "f.txt", flags=p.DOTL_WRONLY | p.DOTL_APPEND)
        await c.rpc(p.Twrite(app, 0, b"!"))
        await c.clunk(app)
        assert await read_file(c, root, "f.txt") == b"hello world!"
        tr = await open_(c, root, "f.txt", flags=p.DOTL_WRONLY | p.DOTL_TRUNC)
        await c.clunk(tr)
        assert await read_file(c, root, "f.txt") == b""
        # lcreate of an existing name
        dup = await walk(c, root)
        with pytest.raises(OSError) as info:
            await c.rpc(p.Tlcreate(dup, "f.txt", p.DOTL_RDWR, 0o644, 0))
        assert info.value.errno == errno.EEXIST


async def test_read_and_write_mode_checks(gw: Running) -> None:
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        await c.clunk(await create(c, root, "f", b"data"))
        ro = await open_(c, root, "f")
        with pytest.raises(OSError) as info:
            await c.rpc(p.Twrite(ro, 0, b"x"))
        assert info.value.errno == errno.EBADF
        unopened = await walk(c, root, "f")
        with pytest.raises(OSError) as info:
            await c.rpc(p.Tread(unopened, 0, 10))
        assert info.value.errno == errno.EBADF
        d = await open_(c, root, flags=p.DOTL_RDONLY | p.DOTL_DIRECTORY)
        with pytest.raises(OSError) as info:
            await c.rpc(p.Tread(d, 0, 10))
        assert info.value.errno == errno.EISDIR
        # a read past EOF returns no data; a huge count is capped at msize
        assert (await c.call(p.Tread(ro, 1 << 40, 10), p.Rread)).data == b""
        reply = await c.call(p.Tread(ro, 0, 0xFFFFFFFF), p.Rread)
        assert bytes(reply.data) == b"data"


async def test_getattr_reports_honestly_and_squashes_owner(gw: Running) -> None:
    path = gw.share_dir("alpha") / "g"
    path.write_bytes(b"12345")
    os.utime(path, ns=(1_000_000_001, 2_000_000_002))
    st = os.stat(path)
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        a = await getattr_(c, await walk(c, root, "g"))
        assert a.valid & p.GETATTR_BASIC == p.GETATTR_BASIC
        assert (a.mode, a.size, a.nlink) == (st.st_mode, 5, 1)
        assert (a.atime_sec, a.atime_nsec, a.mtime_sec, a.mtime_nsec) == (1, 1, 2, 2)
        assert (a.uid, a.gid) == (1234, 4321)  # the share's configured owner
        assert a.qid.type == p.QTFILE


async def test_setattr_mode_size_and_times(gw: Running) -> None:
    path = gw.share_dir("alpha") / "s"
    path.write_bytes(b"0123456789")
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        fid = await walk(c, root, "s")
        v = p.SETATTR_MODE | p.SETATTR_SIZE | p.SETATTR_ATIME | p.SETATTR_ATIME_SET
        v |= p.SETATTR_MTIME | p.SETATTR_MTIME_SET
        await c.rpc(p.Tsetattr(fid, v, 0o6751, 0, 0, 4, 100, 5, 200, 7))
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o751  # setuid and setgid squashed
        assert st.st_size == 4
        assert (st.st_atime_ns, st.st_mtime_ns) == (100_000_000_005, 200_000_000_007)
        # times without *_SET mean "now"
        await c.rpc(p.Tsetattr(fid, p.SETATTR_MTIME, 0, 0, 0, 0, 0, 0, 0, 0))
        assert abs(os.stat(path).st_mtime - time.time()) < 5
        # chown in squash mode is accepted and ignored
        await c.rpc(p.Tsetattr(fid, p.SETATTR_UID | p.SETATTR_GID, 0, 0, 0, 0, 0, 0, 0, 0))
        assert os.stat(path).st_uid == os.getuid()


async def test_directories_links_and_renames(gw: Running) -> None:
    share = gw.share_dir("alpha")
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        q = await c.call(p.Tmkdir(root, "d1", 0o755, 0), p.Rmkdir)
        assert q.qid.type == p.QTDIR and (share / "d1").is_dir()
        await c.rpc(p.Tmkdir(root, "d2", 0o755, 0))
        f = await create(c, await walk(c, root, "d1"), "x", b"X")
        await c.clunk(f)
        # hard link
        d2 = await walk(c, root, "d2")
        await c.rpc(p.Tlink(d2, await walk(c, root, "d1", "x"), "hard"))
        assert os.stat(share / "d2" / "hard").st_nlink == 2
        # symlink + readlink: the target is data
        s = await c.call(p.Tsymlink(root, "sl", "d1/x", 0), p.Rsymlink)
        assert s.qid.type == p.QTSYMLINK
        rl = await c.call(p.Treadlink(await walk(c, root, "sl")), p.Rreadlink)
        assert rl.target == "d1/x"
        # renameat across directories, rename of a fid
        d1 = await walk(c, root, "d1")
        await c.rpc(p.Trenameat(d1, "x", d2, "y"))
        assert (share / "d2" / "y").read_bytes() == b"X"
        y = await walk(c, root, "d2", "y")
        await c.rpc(p.Trename(y, d1, "back"))
        assert (share / "d1" / "back").exists()
        # unlinkat, with and without AT_REMOVEDIR
        with pytest.raises(OSError) as info:
            await c.rpc(p.Tunlinkat(root, "d1", p.AT_REMOVEDIR))
        assert info.value.errno == errno.ENOTEMPTY
        await c.rpc(p.Tunlinkat(d1, "back", 0))
        await c.rpc(p.Tunlinkat(root, "d1", p.AT_REMOVEDIR))
        assert not (share / "d1").exists()
        # Tremove removes the file and clunks the fid
        hard = await walk(c, root, "d2", "hard")
        await c.rpc(p.Tremove(hard))
        assert not (share / "d2" / "hard").exists()
        with pytest.raises(OSError):
            await c.rpc(p.Tclunk(hard))


@pytest.mark.parametrize("mover", ["another fid", "the host"])
async def test_rename_of_a_fid_whose_file_moved_is_estale(gw: Running, mover: str) -> None:
    """Trename, like Tremove, only acts on the fid's remembered name while it still names
    the fid's file: moved away (and something else put there), the fid is stale."""
    share = gw.share_dir("alpha")
    (share / "d").mkdir()
    (share / "d" / "a").write_bytes(b"mine")
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        d = await walk(c, root, "d")
        f = await walk(c, root, "d", "a")
        if mover == "another fid":
            await c.call(p.Trenameat(d, "a", root, "moved"), p.Rrenameat)
            await c.clunk(await create(c, d, "a", b"someone else's"))
        else:
            os.rename(share / "d" / "a", share / "moved")
            (share / "d" / "a").write_bytes(b"someone else's")
        other_ino = os.stat(share / "d" / "a").st_ino
        with pytest.raises(OSError) as info:
            await c.rpc(p.Trename(f, root, "renamed"))
        assert info.value.errno == errno.ESTALE
        assert (share / "d" / "a").read_bytes() == b"someone else's"
        assert os.stat(share / "d" / "a").st_ino == other_ino
        assert (share / "moved").read_bytes() == b"mine"
        assert not (share / "renamed").exists()
        # the fid is still usable, and still the file it was walked to
        assert (await getattr_(c, f)).qid.path == os.stat(share / "moved").st_ino


async def test_mknod_fifo_and_socket_but_never_devices(gw: Running) -> None:
    share = gw.share_dir("alpha")
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        await c.rpc(p.Tmknod(root, "fifo", stat.S_IFIFO | 0o644, 0, 0, 0))
        assert stat.S_ISFIFO(os.lstat(share / "fifo").st_mode)
        await c.rpc(p.Tmknod(root, "sock", stat.S_IFSOCK | 0o644, 0, 0, 0))
        assert stat.S_ISSOCK(os.lstat(share / "sock").st_mode)
        for kind, name in ((stat.S_IFCHR, "null"), (stat.S_IFBLK, "sda")):
            with pytest.raises(OSError) as info:
                await c.rpc(p.Tmknod(root, name, kind | 0o666, 1, 3, 0))
            assert info.value.errno == errno.EPERM
            assert not os.path.lexists(share / name)


async def test_readdir_offsets_are_stable_cookies(gw: Running) -> None:
    share = gw.share_dir("alpha")
    for i in range(300):
        (share / f"f{i:04d}").write_bytes(b"")
    async with gw.client() as c:
        root, root_qid = await c.attach("alpha")
        entries = await listdir(c, root, count=700)  # several entries per reply, many replies
        names = [e.name for e in entries]
        assert sorted(names) == sorted([".", "..", *(f"f{i:04d}" for i in range(300))])
        assert len(set(names)) == len(names)
        dotdot = next(e for e in entries if e.name == "..")
        assert dotdot.qid == root_qid  # nothing above the share is revealed
        # resume from the middle with a different count: the same continuation
        mid = entries[150].offset
        d = await open_(c, root, flags=p.DOTL_RDONLY | p.DOTL_DIRECTORY)
        rest = p.unpack_dirents((await c.call(p.Treaddir(d, mid, 1 << 16), p.Rreaddir)).data)
        assert [e.name for e in rest[:10]] == names[151:161]
        # whole entries only: a count too small for one entry returns nothing
        tiny = await c.call(p.Treaddir(d, 0, 10), p.Rreaddir)
        assert bytes(tiny.data) == b""


async def test_readdir_while_the_directory_changes(gw: Running) -> None:
    share = gw.share_dir("alpha")
    for i in range(200):
        (share / f"keep{i:03d}").write_bytes(b"")
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        d = await open_(c, root, flags=p.DOTL_RDONLY | p.DOTL_DIRECTORY)
        seen: list[str] = []
        offset = 0
        n = 0
        while True:
            reply = await c.call(p.Treaddir(d, offset, 600), p.Rreaddir)
            entries = p.unpack_dirents(reply.data)
            if not entries:
                break
            seen.extend(e.name for e in entries)
            offset = entries[-1].offset
            (share / f"new{n}").write_bytes(b"")
            if n % 3 == 0:
                (share / f"new{n}").unlink()
            n += 1
        keep = [s for s in seen if s.startswith("keep")]
        assert sorted(keep) == [f"keep{i:03d}" for i in range(200)]
        assert len(set(seen)) == len(seen)


async def test_statfs_and_fsync(gw: Running) -> None:
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        s = await c.call(p.Tstatfs(root), p.Rstatfs)
        vfs = os.statvfs(gw.share_dir("alpha"))
        assert s.bsize == vfs.f_bsize and s.blocks == vfs.f_blocks and s.namelen == 255
        fid = await create(c, root, "sync", b"abc")
        await c.rpc(p.Tfsync(fid, 0))
        await c.rpc(p.Tfsync(fid, 1))
        with pytest.raises(OSError) as info:
            await c.rpc(p.Tfsync(await walk(c, root, "sync"), 0))
        assert info.value.errno == errno.EBADF


async def test_xattrs_user_namespace_only(gw: Running) -> None:
    share = gw.share_dir("alpha")
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        await c.clunk(await create(c, root, "x", b""))

        async def setx(name: str, value: bytes, flags: int = 0) -> None:
            fid = await walk(c, root, "x")
            await c.rpc(p.Txattrcreate(fid, name, len(value), flags))
            if value:
                await c.rpc(p.Twrite(fid, 0, value))
            await c.clunk(fid)

        async def getx(name: str) -> bytes:
            fid = c.new_fid()
            size = (
                await c.call(p.Txattrwalk(await walk(c, root, "x"), fid, name), p.Rxattrwalk)
            ).size
            data = bytes((await c.call(p.Tread(fid, 0, size), p.Rread)).data) if size else b""
            await c.clunk(fid)
            return data

        await setx("user.color", b"blue")
        assert os.getxattr(share / "x", "user.color") == b"blue"
        assert await getx("user.color") == b"blue"
        assert b"user.color\0" in await getx("")
        with pytest.raises(OSError) as info:
            await setx("user.color", b"red", os.XATTR_CREATE)
        assert info.value.errno == errno.EEXIST
        for name in ("trusted.evil", "security.selinux", "system.posix_acl_access"):
            fid = await walk(c, root, "x")
            with pytest.raises(OSError) as info:
                await c.rpc(p.Txattrcreate(fid, name, 3, 0))
            assert info.value.errno == errno.EOPNOTSUPP
            with pytest.raises(OSError) as info:
                await getx(name)
            assert info.value.errno == errno.ENODATA
        assert not [n for n in os.listxattr(share / "x") if not n.startswith("user.")]
        await setx("user.color", b"")  # size 0: remove (what Linux sends for removexattr)
        assert "user.color" not in os.listxattr(share / "x")


async def test_locks_conflict_between_sessions(gw: Running) -> None:
    async with gw.client() as a, gw.client() as b:
        ra, _ = await a.attach("alpha")
        rb, _ = await b.attach("alpha")
        fa = await create(a, ra, "lockme", b"x" * 100)
        fb = await open_(b, rb, "lockme", flags=p.DOTL_RDWR)
        ok = await a.call(p.Tlock(fa, p.LOCK_TYPE_WRLCK, 0, 0, 50, 1, "guest-a"), p.Rlock)
        assert ok.status == p.LOCK_SUCCESS
        blocked = await b.call(p.Tlock(fb, p.LOCK_TYPE_RDLCK, 0, 10, 5, 1, "guest-b"), p.Rlock)
        assert blocked.status == p.LOCK_BLOCKED
        free = await b.call(p.Tlock(fb, p.LOCK_TYPE_WRLCK, 0, 50, 0, 1, "guest-b"), p.Rlock)
        assert free.status == p.LOCK_SUCCESS
        who = await b.call(p.Tgetlock(fb, p.LOCK_TYPE_RDLCK, 0, 100, 1, "guest-b"), p.Rgetlock)
        assert (who.type, who.start, who.length, who.client_id) == (
            p.LOCK_TYPE_WRLCK,
            0,
            50,
            "guest-a",
        )
        # the same owner may re-lock (downgrade); unlock frees the range for others
        await a.rpc(p.Tlock(fa, p.LOCK_TYPE_UNLCK, 0, 0, 50, 1, "guest-a"))
        again = await b.call(p.Tlock(fb, p.LOCK_TYPE_RDLCK, 0, 10, 5, 1, "guest-b"), p.Rlock)
        assert again.status == p.LOCK_SUCCESS
    # a session that ends drops its locks
    async with gw.client() as c:
        rc, _ = await c.attach("alpha")
        fc = await open_(c, rc, "lockme", flags=p.DOTL_RDWR)
        ok = await c.call(p.Tlock(fc, p.LOCK_TYPE_WRLCK, 0, 0, 0, 1, "guest-c"), p.Rlock)
        assert ok.status == p.LOCK_SUCCESS


async def test_readonly_share_refuses_every_write(gw: Running) -> None:
    share = gw.share_dir("beta")
    async with gw.client() as c:
        root, _ = await c.attach("beta")
        assert await read_file(c, root, "readme.txt") == b"read only\n"
        attempts = [
            p.Tlcreate(await walk(c, root), "new", p.DOTL_RDWR, 0o644, 0),
            p.Tmkdir(root, "d", 0o755, 0),
            p.Tsymlink(root, "l", "readme.txt", 0),
            p.Tunlinkat(root, "readme.txt", 0),
            p.Tsetattr(await walk(c, root, "readme.txt"), p.SETATTR_SIZE, 0, 0, 0, 0, 0, 0, 0, 0),
            p.Tlopen(await walk(c, root, "readme.txt"), p.DOTL_WRONLY),
            p.Tlopen(await walk(c, root, "readme.txt"), p.DOTL_RDONLY | p.DOTL_TRUNC),
            p.Txattrcreate(await walk(c, root, "readme.txt"), "user.x", 1, 0),
            p.Trenameat(root, "readme.txt", root, "moved"),
        ]
        for msg in attempts:
            with pytest.raises(OSError) as info:
                await c.rpc(msg)
            assert info.value.errno == errno.EROFS, type(msg).__name__
    assert sorted(os.listdir(share)) == ["readme.txt"]
    assert (share / "readme.txt").read_text() == "read only\n"


async def test_flush_is_answered_after_the_original(start_gateway: GatewayFactory) -> None:
    """Rflush comes after the flushed request's reply if that reply is sent at all, and a
    flushed request is answered at most once. Raw frames, so the order on the wire shows."""
    from vshare.transport import connect

    async with start_gateway(share_threads=1) as gw:
        (gw.share_dir("alpha") / "big").write_bytes(b"z" * (1 << 20))
        conn = await connect(gw.uri)
        dec = p.FrameDecoder(accept="R")

        async def send(tag: int, msg: p.Message) -> None:
            await conn.send([p.encode(tag, msg)])

        async def replies(n: int) -> list[tuple[int, p.Message]]:
            out: list[tuple[int, p.Message]] = []
            with anyio.fail_after(10):
                while len(out) < n:
                    dec.feed(await conn.receive(1 << 20))
                    out.extend(dec)
            return out

        setup = [
            p.Tversion(1 << 20, "9P2000.L"),
            p.Tattach(0, p.NOFID, "", "alpha", 0),
            p.Twalk(0, 1, ("big",)),
            p.Tlopen(1, p.DOTL_RDONLY),
        ]
        for tag, msg in enumerate(setup):  # one at a time: requests run concurrently
            await send(tag, msg)
            assert not isinstance((await replies(1))[0][1], p.Rlerror), msg
        cancelled = 0
        for _round in range(10):
            # 30 reads queue behind one backend thread; flush the last one and an idle tag
            reads = [p.encode(100 + i, p.Tread(1, 0, 1 << 20)) for i in range(30)]
            await conn.send([*reads, p.encode(200, p.Tflush(129)), p.encode(201, p.Tflush(77))])
            got: list[tuple[int, p.Message]] = []
            with anyio.fail_after(20):
                while not any(t == 200 for t, _ in got) or not any(t == 201 for t, _ in got):
                    got.extend(await replies(1))
                    got.extend(dec)
            tags = [t for t, _ in got]
            flush_at = tags.index(200)
            if 129 in tags:
                assert tags.index(129) < flush_at  # the original reply came first
            else:
                cancelled += 1
            # drain the rest: exactly one reply per read tag, except a flushed one
            while len({t for t in tags if 100 <= t < 130}) < 29:
                got.extend(await replies(1))
                tags = [t for t, _ in got]
            await anyio.sleep(0.05)
            got.extend(dec)
            tags = [t for t, _ in got]
            assert len(tags) == len(set(tags)), "a tag was answered twice"
            assert type(dict(got)[200]) is p.Rflush and type(dict(got)[201]) is p.Rflush
        # the session is still healthy
        print(f"flush rounds where the read was cancelled: {cancelled}/10")
        await send(6, p.Tclunk(1))
        assert (await replies(1))[0] == (6, p.Rclunk())
        await conn.aclose()
