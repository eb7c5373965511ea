"""Requests answered on the event loop (cheap metadata, cached reads) and in worker threads
give the same answers; uncached data is never read on the loop."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.page_cache import evict
from vshare import protocol as p
from vshare.backend.posix import PosixBackend

from .conftest import GatewayFactory
from .helpers import create, listdir, open_, read_all, walk

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("mode", ["auto", "never", "always"])
async def test_same_answers_on_the_loop_and_in_threads(
    start_gateway: GatewayFactory, mode: str
) -> None:
    async with start_gateway(inline_metadata=mode) as gw, gw.client() as c:
        root, _ = await c.attach("alpha")
        await c.call(p.Tmkdir(root, "d", 0o755, 0), p.Rmkdir)
        d = await walk(c, root, "d")
        f = await create(c, d, "f", b"payload" * 1000)
        await c.clunk(f)
        await c.call(p.Tsymlink(d, "l", "f", 0), p.Rsymlink)
        await c.call(p.Trenameat(d, "f", d, "g", ), p.Rrenameat)  # fmt: skip
        g = await open_(c, d, "g")
        assert await read_all(c, g, chunk=4096) == b"payload" * 1000
        attr = await c.call(p.Tgetattr(g, p.GETATTR_BASIC), p.Rgetattr)
        assert attr.size == 7000 and attr.uid == 1234  # squashed to the share's owner
        with pytest.raises(OSError) as info:
            await c.call(p.Twalk(d, c.new_fid(), ("missing",)), p.Rwalk)
        assert info.value.errno == errno.ENOENT
        lnk = await walk(c, d, "l")
        assert (await c.call(p.Treadlink(lnk), p.Rreadlink)).target == "f"
        names = sorted(e.name for e in await listdir(c, root, "d"))
        assert names == [".", "..", "g", "l"]
        await c.call(p.Tunlinkat(d, "l", 0), p.Runlinkat)
        assert not (gw.share_dir("alpha") / "d" / "l").exists()


def _spy(backend: PosixBackend, name: str) -> list[threading.Thread]:
    """Record the thread each call of ``backend.<name>`` runs in (the real method runs)."""
    calls: list[threading.Thread] = []
    real = getattr(backend, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(threading.current_thread())
        return real(*args, **kwargs)

    setattr(backend, name, spy)
    return calls


async def test_uncached_reads_go_to_a_worker_thread(start_gateway: GatewayFactory) -> None:
    async with start_gateway() as gw, gw.client() as c:
        path: Path = gw.share_dir("alpha") / "cold"
        data = os.urandom(256 * 1024)
        path.write_bytes(data)
        backend = gw.gateway.ctx.backend
        assert isinstance(backend, PosixBackend)
        blocking = _spy(backend, "read")
        root, _ = await c.attach("alpha")
        fid = await open_(c, root, "cold")

        # Warm: answered from the page cache, on the loop, without a blocking read.
        assert bytes((await c.call(p.Tread(fid, 0, 65536), p.Rread)).data) == data[:65536]
        assert blocking == []

        # Cold: drop the file's pages; the read must not happen on the event loop.
        evict(path)
        got = bytes((await c.call(p.Tread(fid, 131072, 65536), p.Rread)).data)
        assert got == data[131072 : 131072 + 65536]
        if not blocking:
            pytest.skip("this filesystem kept the pages cached after FADV_DONTNEED")
        assert all(t is not threading.main_thread() for t in blocking)


async def test_short_read_at_end_of_file_is_answered_on_the_loop(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway() as gw, gw.client() as c:
        (gw.share_dir("alpha") / "small").write_bytes(b"0123456789")
        backend = gw.gateway.ctx.backend
        assert isinstance(backend, PosixBackend)
        blocking = _spy(backend, "read")
        root, _ = await c.attach("alpha")
        fid = await open_(c, root, "small")
        assert bytes((await c.call(p.Tread(fid, 4, 4096), p.Rread)).data) == b"456789"
        assert bytes((await c.call(p.Tread(fid, 10, 4096), p.Rread)).data) == b""
        assert blocking == []


async def test_recycled_read_buffers_never_leak_old_bytes(start_gateway: GatewayFactory) -> None:
    """A pooled buffer still holds the previous read's bytes; replies carry only new ones."""
    async with start_gateway() as gw, gw.client() as c:
        (gw.share_dir("alpha") / "big").write_bytes(b"S" * 65536)
        (gw.share_dir("alpha") / "tiny").write_bytes(b"t")
        root, _ = await c.attach("alpha")
        big = await open_(c, root, "big")
        tiny = await open_(c, root, "tiny")
        for _ in range(3):
            assert bytes((await c.call(p.Tread(big, 0, 65536), p.Rread)).data) == b"S" * 65536
            assert bytes((await c.call(p.Tread(tiny, 0, 65536), p.Rread)).data) == b"t"


async def test_only_quick_unlinks_are_made_on_the_loop(start_gateway: GatewayFactory) -> None:
    """An empty directory, a small file, a second link: unlinked on the event loop; the
    last link of a large file (its blocks to free may wait on the disk): in a thread."""
    async with start_gateway() as gw, gw.client() as c:
        share = gw.share_dir("alpha")
        (share / "small").write_bytes(b"x" * 1000)
        (share / "empty").mkdir()
        with open(share / "large", "wb") as f:
            f.write(os.urandom(4 << 20))
        os.link(share / "large", share / "large-link")
        backend = gw.gateway.ctx.backend
        assert isinstance(backend, PosixBackend)
        where = _spy(backend, "unlink")
        root, _ = await c.attach("alpha")
        for name, flags in (("small", 0), ("empty", p.AT_REMOVEDIR), ("large-link", 0)):
            await c.call(p.Tunlinkat(root, name, flags), p.Runlinkat)
        assert where == [threading.main_thread()] * 3
        await c.call(p.Tunlinkat(root, "large", 0), p.Runlinkat)
        assert len(where) == 4 and where[3] is not threading.main_thread()
        assert sorted(os.listdir(share)) == []
        with pytest.raises(OSError) as info:  # an error answered on the loop all the same
            await c.call(p.Tunlinkat(root, "missing", 0), p.Runlinkat)
        assert info.value.errno == errno.ENOENT


async def test_large_cached_reads_are_sent_from_the_file(start_gateway: GatewayFactory) -> None:
    """A read of 64 KiB or more whose bytes are all in the page cache goes out with
    sendfile, never copied into the gateway (``vshare_read_file_bytes``); a small one is
    copied and batched as before; a clunk pipelined behind large reads finds them sent."""
    async with start_gateway() as gw, gw.client(msize=(1 << 20) + p.IOHDRSZ) as c:
        path = gw.share_dir("alpha") / "big"
        data = os.urandom((3 << 20) + 5)
        path.write_bytes(data)
        assert path.read_bytes() == data  # in the page cache
        registry = gw.gateway.ctx.metrics.registry

        def from_files() -> float:
            return registry.get_sample_value("vshare_read_file_bytes_total") or 0.0

        root, _ = await c.attach("alpha")
        fid = await open_(c, root, "big")
        got = await c.call(p.Tread(fid, 0, 1 << 20), p.Rread)
        assert bytes(got.data) == data[: 1 << 20]
        assert from_files() == 1 << 20
        got = await c.call(p.Tread(fid, 10, 4096), p.Rread)
        assert bytes(got.data) == data[10:4106]
        assert from_files() == 1 << 20  # copied
        replies = await c.pipeline(
            [p.Tread(fid, 1 << 20, 1 << 20), p.Tread(fid, 3 << 20, 1 << 20), p.Tclunk(fid)]
        )
        assert [type(r) for r in replies] == [p.Rread, p.Rread, p.Rclunk]
        first, last = replies[0], replies[1]
        assert isinstance(first, p.Rread) and isinstance(last, p.Rread)
        assert bytes(first.data) == data[1 << 20 : 2 << 20]
        assert bytes(last.data) == data[3 << 20 :]
        assert from_files() == 2 << 20  # the last 5 bytes: a small read, copied
