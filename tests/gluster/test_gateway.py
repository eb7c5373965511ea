"""End to end: a real gateway serves 9P sessions from a GlusterFS volume through gfapi, and the
control service makes and removes shares on it."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from tests.gateway.helpers import create, getattr_, listdir, read_all, read_file, walk
from tests.gluster.conftest import Session
from vshare import protocol as p
from vshare.backend.gluster import GlusterBackend
from vshare.client import Client, open_client
from vshare.control import ADMIN, ControlService
from vshare.gateway.config import GatewayConfig, Share
from vshare.gateway.server import Gateway
from vshare.policy import AccessRule
from vshare.store import ShareStatus, SqliteStore

GiB = 1 << 30
SECRET = b"TOP SECRET: outside every share\n"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def short_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(os.path.realpath(tmp_path_factory.mktemp("gw")))


@asynccontextmanager
async def serving(uri: str, sock: Path, *shares: Share) -> AsyncIterator[tuple[Gateway, str]]:
    backend = GlusterBackend(uri)
    gateway = Gateway(GatewayConfig(shares=shares), backend)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(gateway.serve, [f"unix://{sock}"])
            try:
                yield gateway, f"unix://{sock}"
            finally:
                gateway.shutdown()
    finally:
        backend.close()


@pytest.mark.anyio
async def test_a_9p_session_over_gluster(gluster_session: Session, short_dir: Path) -> None:
    rel = gluster_session.fresh_root("gw")
    host = gluster_session.host(rel)
    host.host_write("secret.txt", SECRET)
    host.host_write("shares/alpha/hello.txt", b"hello from gluster\n")
    host.host_symlink("shares/alpha/escape", "../../secret.txt")
    host.host_symlink("shares/alpha/abs", host.host_absolute("secret.txt"))
    me = str(os.getuid())
    alpha = Share("alpha", "shares/alpha", id="a", access=(AccessRule("user", me),), size_gib=1)
    sock = short_dir / "gw.sock"
    async with serving(f"{gluster_session.uri}/{rel}", sock, alpha) as (gw, uri):
        client: Client
        async with open_client(uri) as client:
            root, _ = await client.attach("alpha")
            assert await read_file(client, root, "hello.txt") == b"hello from gluster\n"
            # a write of 1 MiB and back, in msize-sized pieces
            data = os.urandom(1 << 20)
            fid = await create(client, root, "big")
            step = client.msize - 64
            for off in range(0, len(data), step):
                reply = await client.call(p.Twrite(fid, off, data[off : off + step]), p.Rwrite)
                assert reply.count == len(data[off : off + step])
            await client.call(p.Tfsync(fid, 0), p.Rfsync)
            assert await read_all(client, fid) == data
            await client.clunk(fid)
            assert host.host_read("shares/alpha/big") == data
            names = {d.name for d in await listdir(client, root)}
            assert {"hello.txt", "big", "escape", "abs", ".", ".."} <= names
            # confinement through the gateway: .. stays at the root, symlinks are data
            up = await walk(client, root, "..")
            assert (await getattr_(client, up)).qid.path == (await getattr_(client, root)).qid.path
            for link in ("escape", "abs"):
                fid = await walk(client, root, link)
                with pytest.raises(OSError) as info:
                    await client.call(p.Tlopen(fid, p.DOTL_RDONLY), p.Rlopen)
                assert info.value.errno == errno.ELOOP
                # a walk through it stops at the symlink (a partial walk: one qid)
                reply = await client.rpc(p.Twalk(root, client.new_fid(), (link, "anything")))
                assert isinstance(reply, p.Rwalk) and len(reply.qids) == 1
                assert reply.qids[0].type == p.QTSYMLINK
                reply = await client.call(p.Treadlink(fid), p.Rreadlink)
                assert "secret" in reply.target
            # statfs: the share's size, and never more free space than the volume has
            st = await client.call(p.Tstatfs(root), p.Rstatfs)
            volume = gw.ctx.backend.statfs(gw.ctx.backend.open_root(""))
            assert st.bsize == volume.bsize
            assert st.blocks * st.bsize == GiB
            used = gw.ctx.usage(gw.ctx.shares["a"]).used
            assert used >= len(data)
            assert st.bfree == st.bavail
            assert st.bavail <= volume.bavail
            assert st.bavail * st.bsize == GiB - -(-used // st.bsize) * st.bsize
            # past the size: EDQUOT
            fid = await create(client, root, "too-big")
            with pytest.raises(OSError) as info:
                await client.call(p.Twrite(fid, GiB, b"x"), p.Rwrite)
            assert info.value.errno == errno.EDQUOT
            await client.clunk(fid)
            # names are bytes: one that is not UTF-8 is made, listed, read, renamed, removed
            latin1, raw = os.fsdecode(b"caf\xe9"), os.fsdecode(b"\xff\xfe")
            fid = await create(client, root, latin1, b"latin-1")
            await client.clunk(fid)
            assert latin1 in {d.name for d in await listdir(client, root)}
            assert await read_file(client, root, latin1) == b"latin-1"
            await client.rpc(p.Trenameat(root, latin1, root, raw))
            assert await read_file(client, root, raw) == b"latin-1"
            await client.rpc(p.Tunlinkat(root, raw, 0))
            assert raw not in {d.name for d in await listdir(client, root)}
    assert host.host_read("secret.txt") == SECRET


@pytest.mark.anyio
async def test_statfs_shows_the_volume_when_it_is_smaller(
    gluster_session: Session, short_dir: Path
) -> None:
    """A share larger than the volume's free space reports the volume's free space."""
    rel = gluster_session.fresh_root("gw")
    gluster_session.host(rel).host_mkdir("shares/huge")
    me = str(os.getuid())
    huge = Share("huge", "shares/huge", id="h", access=(AccessRule("user", me),), size_gib=1 << 20)
    async with (
        serving(f"{gluster_session.uri}/{rel}", short_dir / "s.sock", huge) as (gw, uri),
        open_client(uri) as client,
    ):
        root, _ = await client.attach("huge")
        st = await client.call(p.Tstatfs(root), p.Rstatfs)
        volume = gw.ctx.backend.statfs(gw.ctx.backend.open_root(""))
        assert st.blocks * st.bsize == (1 << 20) * GiB  # the share's size (1 PiB)
        assert volume.bavail < st.blocks  # this machine has less than that free
        # the volume's real free space (it moves a little while other things write)
        assert abs(st.bavail - volume.bavail) * st.bsize < 64 << 20
        assert st.bfree == st.bavail


@pytest.fixture
def service(gluster_session: Session, tmp_path: Path) -> Iterator[tuple[ControlService, str]]:
    rel = gluster_session.fresh_root("ctl")
    uri = f"{gluster_session.uri}/{rel}"
    store = SqliteStore(tmp_path / "state.db")
    svc = ControlService(store, {"gv": uri})
    try:
        yield svc, rel
    finally:
        svc.close()  # closes the backend; the session keeps the glfs (keep_connections)
        store.close()


def test_share_create_and_delete_through_gfapi(
    gluster_session: Session, service: tuple[ControlService, str]
) -> None:
    svc, rel = service
    host = gluster_session.host(rel)
    share = svc.create_share(ADMIN, "docs", 10, tenant="acme")
    assert share.status is ShareStatus.AVAILABLE
    assert share.backend == f"{gluster_session.uri}/{rel}"
    assert share.path == f"shares/{share.id}"
    assert svc.volume_of(share) == "gv"
    assert host.host_exists(share.path)
    # the brick holds it: gfapi made it, no mount involved
    assert (gluster_session.volume.brick / rel / share.path).is_dir()
    host.host_write(f"{share.path}/file", b"x" * 1000)
    host.host_write("outside", b"keep")
    host.host_symlink(f"{share.path}/escape", "../../outside")
    assert svc.usage(share) == 1000  # apparent size over gfapi; the symlink not followed
    svc.delete_share(ADMIN, "docs", force=True)
    assert not host.host_exists(share.path)
    assert host.host_read("outside") == b"keep"  # remove_tree stayed inside
    empty = svc.create_share(ADMIN, "empty", 1, tenant="acme")
    assert host.host_exists(empty.path)
    svc.delete_share(ADMIN, "empty")
    assert not host.host_exists(empty.path)


def test_volumes_accept_gluster_uris() -> None:
    from vshare.control import Volumes, parse_volume

    assert parse_volume("gv=gluster://g1/vol") == ("gv", "gluster://g1/vol")
    Volumes({"gv": "gluster://g1:24007/vol/dir"})
    with pytest.raises(ValueError, match="gluster://HOST"):
        Volumes({"gv": "gluster://g1"})


@asynccontextmanager
async def _share_of_one_file(
    gluster_session: Session, short_dir: Path, mode: str
) -> AsyncIterator[tuple[Gateway, Client, int]]:
    """A gateway serving share ``c`` (cache ``mode``) holding ``f`` (5 bytes), in a fresh
    directory of the volume: (gateway, an attached client, the share root's fid)."""
    rel = gluster_session.fresh_root("gwc")
    gluster_session.host(rel).host_write("shares/c/f", b"12345")
    me = str(os.getuid())
    share = Share("c", "shares/c", id="c", access=(AccessRule("user", me),), cache=mode)  # type: ignore[arg-type]
    async with (
        serving(f"{gluster_session.uri}/{rel}", short_dir / "c.sock", share) as (gw, uri),
        open_client(uri) as client,
    ):
        root, _ = await client.attach("c")
        yield gw, client, root


def _sample(gw: Gateway, name: str, **labels: str) -> float:
    value = gw.ctx.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["none", "meta"])
async def test_cache_mode_and_its_metrics(
    gluster_session: Session, short_dir: Path, mode: str
) -> None:
    """Through the gateway: a share's cache mode decides whether repeated walks and getattrs
    reach GlusterFS, and /metrics says so (backend calls, cache hits)."""
    async with _share_of_one_file(gluster_session, short_dir, mode) as (gw, client, root):
        for _ in range(2):  # the first round fills the cache
            fid = await walk(client, root, "f")
            assert (await getattr_(client, fid)).size == 5
            await client.clunk(fid)
        lookups = _sample(gw, "vshare_backend_calls_total", call="lookup")
        hits = _sample(gw, "vshare_cache_lookups_total", kind="attr", result="hit")
        for _ in range(20):
            fid = await walk(client, root, "f")
            assert (await getattr_(client, fid)).size == 5
            await client.clunk(fid)
        new_lookups = _sample(gw, "vshare_backend_calls_total", call="lookup") - lookups
        new_hits = _sample(gw, "vshare_cache_lookups_total", kind="attr", result="hit") - hits
    if mode == "none":
        assert new_lookups >= 20 and new_hits == 0
    else:
        assert new_lookups == 0 and new_hits >= 20
    assert _sample(gw, "vshare_cache_limit_bytes") > 0


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["none", "meta"])
async def test_getattrs_the_cache_holds_are_answered_on_the_loop(
    gluster_session: Session, short_dir: Path, mode: str
) -> None:
    """In ``meta`` a Tgetattr, Tgetattrat or Twalk whose answer the cache holds is answered
    where it is read: no worker thread, no call to GlusterFS (``vshare_requests_on_loop_total``);
    what it misses goes to a thread as before. In ``none`` every one goes to GlusterFS."""
    async with _share_of_one_file(gluster_session, short_dir, mode) as (gw, client, root):
        fid = await walk(client, root, "f")
        for _ in range(2):  # the first round fills the cache
            await client.call(p.Tgetattrat(root, "f", p.GETATTR_ALL), p.Rgetattrat)
            await getattr_(client, fid)
        on_loop = {op: _sample(gw, "vshare_requests_on_loop_total", op=op) for op in OPS}
        lookups = _sample(gw, "vshare_backend_calls_total", call="lookup")
        for _ in range(20):
            got = await client.call(p.Tgetattrat(root, "f", p.GETATTR_ALL), p.Rgetattrat)
            assert got.size == 5
            assert (await getattr_(client, fid)).size == 5
            walked = await walk(client, root, "f")
            assert (await getattr_(client, walked)).size == 5
            await client.clunk(walked)
        with pytest.raises(OSError) as missing:  # not in the cache: to a thread, and ENOENT
            await client.call(p.Tgetattrat(root, "nothing", p.GETATTR_ALL), p.Rgetattrat)
        assert missing.value.errno == errno.ENOENT
        new = {op: _sample(gw, "vshare_requests_on_loop_total", op=op) - on_loop[op] for op in OPS}
        new_lookups = _sample(gw, "vshare_backend_calls_total", call="lookup") - lookups
        # The clunk of an open file may wait (a flush): never on the loop. A read-only
        # open never read was put off in meta (never made): nothing to close.
        clunks = _sample(gw, "vshare_requests_on_loop_total", op="clunk")
        opened = await walk(client, root, "f")
        await client.call(p.Tlopen(opened, p.DOTL_RDWR), p.Rlopen)
        await client.clunk(opened)
        assert _sample(gw, "vshare_requests_on_loop_total", op="clunk") == clunks
        opened = await walk(client, root, "f")
        await client.call(p.Tlopen(opened, p.DOTL_RDONLY), p.Rlopen)
        await client.clunk(opened)
        put_off = _sample(gw, "vshare_requests_on_loop_total", op="clunk") - clunks
        assert put_off == (0 if mode == "none" else 1)
    # Closing a walked fid releases handles in memory: on the loop in every mode.
    if mode == "none":
        assert new == {"getattrat": 0, "getattr": 0, "walk": 0, "clunk": 20}
        assert new_lookups >= 40
    else:
        assert new == {"getattrat": 20, "getattr": 40, "walk": 20, "clunk": 20}
        assert new_lookups >= 1  # "nothing"


OPS = ("getattrat", "getattr", "walk", "clunk")


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["none", "meta"])
@pytest.mark.parametrize("opened_from", ["its parent", "its own fid"])
async def test_a_cached_listing_is_answered_on_the_loop(
    gluster_session: Session, short_dir: Path, mode: str, opened_from: str
) -> None:
    """In ``meta`` a directory listed again is opened (the OPENDIR put off), listed and
    closed on the event loop, entries and attributes as the first time, whether its
    Twalkopen names it from its parent or clones the directory's own fid (as the vshare
    FUSE client's opendir does); in ``none`` every listing reaches GlusterFS."""
    async with _share_of_one_file(gluster_session, short_dir, mode) as (gw, client, root):
        await client.call(p.Tmkdir(root, "sub", 0o755, os.getgid()), p.Rmkdir)
        sub = await walk(client, root, "sub")
        await client.clunk(await create(client, sub, "g"))
        start, names = (root, ("sub",)) if opened_from == "its parent" else (sub, ())
        listings = []
        for _ in range(3):
            before = {op: _sample(gw, "vshare_requests_on_loop_total", op=op) for op in DIR_OPS}
            d = client.new_fid()
            flags = p.DOTL_RDONLY | p.DOTL_DIRECTORY
            await client.call(p.Twalkopen(start, d, flags, names), p.Rwalkopen)
            got = await client.call(p.Treaddirplus(d, 0, 1 << 16), p.Rreaddirplus)
            assert got.end == 1
            listings.append(
                sorted((e.name, a.size if a else None) for e, a in p.unpack_dirents_plus(got.data))
            )
            await client.clunk(d)
            on_loop = {
                op: _sample(gw, "vshare_requests_on_loop_total", op=op) - before[op]
                for op in DIR_OPS
            }
        assert listings[0] == listings[1] == listings[2]
        assert ("g", 0) in listings[0]
        await client.clunk(sub)
    # The directory's open waits for a listing that misses: none here.
    assert on_loop == dict.fromkeys(DIR_OPS, 0 if mode == "none" else 1)


DIR_OPS = ("walkopen", "readdirplus", "clunk")
