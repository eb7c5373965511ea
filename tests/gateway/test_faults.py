"""Limits and faults: the gateway answers with an errno or closes one session, and lives on."""

from __future__ import annotations

import errno
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest

from vshare import protocol as p
from vshare.backend.posix import PosixBackend
from vshare.client import open_client
from vshare.gateway.config import GatewayConfig
from vshare.gateway.server import Gateway
from vshare.transport import Connection, connect

from .conftest import GatewayFactory, Running, base_config
from .helpers import create, walk

pytestmark = pytest.mark.anyio


async def test_ten_thousand_fids_then_the_limit(start_gateway: GatewayFactory) -> None:
    async with start_gateway(max_fids=10_001, max_fids_per_identity=10_001) as gw, gw.client() as c:
        root, _ = await c.attach("alpha")
        fids = [await walk(c, root) for _ in range(10_000)]
        assert len(gw.gateway.sessions) == 1
        with pytest.raises(OSError) as info:
            await walk(c, root)
        assert info.value.errno == errno.EMFILE
        for fid in fids[:100]:
            await c.clunk(fid)
        await walk(c, root)  # room again


async def _open_f(uri: str) -> tuple[Connection, p.FrameDecoder]:
    """A raw connection that has attached ``alpha`` and opened its ``f`` as fid 1 (one
    request at a time), and the decoder of its replies."""
    conn = await connect(uri)
    dec = p.FrameDecoder(accept="R")
    setup = [p.Tversion(1 << 20, "9P2000.L"), p.Tattach(0, p.NOFID, "", "alpha", 0),
             p.Twalk(0, 1, ("f",)), p.Tlopen(1, p.DOTL_RDONLY)]  # fmt: skip
    for msg in setup:
        await conn.send([p.encode(1, msg)])
        dec.feed(await conn.receive(1 << 20))
        assert not isinstance(next(iter(dec))[1], p.Rlerror)
    return conn, dec


async def test_too_many_requests_in_flight_get_eagain(start_gateway: GatewayFactory) -> None:
    async with start_gateway(max_inflight=2, share_threads=1) as gw:
        (gw.share_dir("alpha") / "f").write_bytes(b"x" * (1 << 20))
        conn, dec = await _open_f(gw.uri)
        # fsync always runs in a worker thread (reads of cached data are answered on the
        # event loop and never wait in flight).
        await conn.send([p.encode(10 + i, p.Tfsync(1, 0)) for i in range(40)])
        got: dict[int, p.Message] = {}
        with anyio.fail_after(20):
            while len(got) < 40:
                dec.feed(await conn.receive(1 << 21))
                got.update(dec)
        eagain = [t for t, m in got.items() if isinstance(m, p.Rlerror) and m.ecode == errno.EAGAIN]
        ok = [t for t, m in got.items() if isinstance(m, p.Rfsync)]
        assert eagain and ok and len(eagain) + len(ok) == 40
        await conn.aclose()


async def test_client_that_disconnects_mid_request(gw: Running) -> None:
    (gw.share_dir("alpha") / "f").write_bytes(b"y" * (1 << 20))
    for _ in range(5):
        conn = await connect(gw.uri)
        await conn.send([p.encode(0, p.Tversion(1 << 20, "9P2000.L"))])
        await conn.receive(100)
        frames = [p.encode(1, p.Tattach(0, p.NOFID, "", "alpha", 0)),
                  p.encode(2, p.Twalk(0, 1, ("f",))), p.encode(3, p.Tlopen(1, 0))]  # fmt: skip
        frames += [p.encode(10 + i, p.Tread(1, 0, 1 << 19)) for i in range(20)]
        await conn.send(frames)
        await conn.aclose()  # gone before the replies
    with anyio.fail_after(5):
        while gw.gateway.sessions:
            await anyio.sleep(0.02)
    assert gw.gateway.ctx.metrics.fids._value.get() == 0  # type: ignore[attr-defined]
    async with gw.client() as c:
        await c.attach("alpha")


async def test_share_directory_removed_under_a_live_session(gw: Running) -> None:
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        f = await create(c, root, "f", b"data")
        shutil.rmtree(gw.share_dir("alpha"))
        # the open file still works (it is an inode, not a path); name operations fail cleanly
        assert (await c.call(p.Tread(f, 0, 10), p.Rread)).data == b"data"
        with pytest.raises(OSError) as info:
            await c.rpc(p.Tlcreate(await walk(c, root), "new", p.DOTL_RDWR, 0o644, 0))
        assert info.value.errno == errno.ENOENT
        with pytest.raises(OSError) as info:
            await c.attach("alpha")
        assert info.value.errno == errno.ENOENT
        assert (gw.volume / "secret.txt").exists()


@pytest.fixture
def small_tmpfs(volume: Path) -> Any:
    target = volume / "shares" / "alpha"
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(target)],
                            capture_output=True, text=True, check=False)  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


async def test_disk_full_is_enospc(small_tmpfs: Path, gw: Running) -> None:
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        f = await create(c, root, "fill")
        chunk = b"z" * 65536
        offset = 0
        with pytest.raises(OSError) as info:
            for _ in range(10):
                reply = await c.call(p.Twrite(f, offset, chunk), p.Rwrite)
                offset += reply.count
        assert info.value.errno == errno.ENOSPC
        assert (await c.call(p.Tstatfs(root), p.Rstatfs)).bfree == 0
        await c.rpc(p.Tsetattr(f, p.SETATTR_SIZE, 0, 0, 0, 0, 0, 0, 0, 0))  # room again
        await c.call(p.Twrite(f, 0, chunk), p.Rwrite)


async def test_permission_denied_passes_through(tmp_path: Path, volume: Path) -> None:
    """A gateway without root's power to override file permissions (a real process, with
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped) meets a file it may not read."""
    import os
    import sys

    if os.getuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to drop capabilities")
    private = volume / "shares" / "alpha" / "private"
    private.write_text("not for the gateway\n")
    private.chmod(0o600)
    os.chown(private, 65534, 65534)
    config = tmp_path / "gw.toml"
    config.write_text(
        f'listen = ["tcp://127.0.0.1:5977"]\nbackend = "posix:{volume}"\n'
        '[[share]]\nname = "alpha"\npath = "shares/alpha"\n'
        'access = [{ type = "ip", to = "127.0.0.1" }]\n'
    )
    vshare = Path(sys.executable).parent / "vshare"
    argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all",
            str(vshare), "gateway", "run", "--config", str(config)]  # fmt: skip
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE)
    try:
        with anyio.fail_after(15):
            while True:
                try:
                    conn = await connect("tcp://127.0.0.1:5977")
                    break
                except OSError:
                    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                    await anyio.sleep(0.1)
        async with open_client(conn) as c:
            root, _ = await c.attach("alpha")
            fid = await walk(c, root, "private")
            with pytest.raises(OSError) as info:
                await c.rpc(p.Tlopen(fid, p.DOTL_RDONLY))
            assert info.value.errno == errno.EACCES
            await walk(c, root)  # and the session goes on
    finally:
        proc.terminate()
        assert proc.wait(10) == 0  # SIGTERM is a clean shutdown


class ExplodingBackend(PosixBackend):
    def getattr(self, node: Any) -> Any:
        raise RuntimeError("a bug in a backend")


async def test_unexpected_exception_is_eio_and_one_log_line(
    volume: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = Gateway(base_config(), ExplodingBackend(str(volume)))
    async with anyio.create_task_group() as tg:
        await tg.start(gateway.serve, [f"unix://{tmp_path}/x.sock"])
        async with open_client(f"unix://{tmp_path}/x.sock") as c:
            root, _ = await c.attach("alpha")
            with (
                caplog.at_level(logging.ERROR, logger="vshare.gateway"),
                pytest.raises(OSError) as info,
            ):
                await c.rpc(p.Tgetattr(root, p.GETATTR_ALL))
            assert info.value.errno == errno.EIO
            await walk(c, root)  # the session goes on
        gateway.shutdown()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "getattr" in errors[0].getMessage()


async def test_sessions_limit(start_gateway: GatewayFactory) -> None:
    async with start_gateway(max_sessions=2) as gw, gw.client(), gw.client():
        with pytest.raises(OSError):
            async with gw.client():
                pass


async def test_graceful_shutdown_waits_for_in_flight_requests(volume: Path, tmp_path: Path) -> None:
    config = GatewayConfig(shares=base_config().shares, shutdown_grace=5)
    gateway = Gateway(config, PosixBackend(str(volume)))
    (volume / "shares" / "alpha" / "f").write_bytes(b"q" * (1 << 20))
    async with anyio.create_task_group() as tg:
        await tg.start(gateway.serve, [f"unix://{tmp_path}/g.sock"])
        async with open_client(f"unix://{tmp_path}/g.sock") as c:
            root, _ = await c.attach("alpha")
            f = await walk(c, root, "f")
            await c.rpc(p.Tlopen(f, 0))
            results: list[int] = []

            async def reader() -> None:
                for _ in range(20):
                    reply = await c.call(p.Tread(f, 0, 1 << 18), p.Rread)
                    results.append(len(reply.data))

            async with anyio.create_task_group() as inner:
                inner.start_soon(reader)
                await anyio.sleep(0.01)
                gateway.shutdown()
                with pytest.raises(OSError):
                    async with open_client(f"unix://{tmp_path}/g.sock"):
                        pass  # no longer accepting
                inner.cancel_scope.cancel()
            assert results and all(n == 1 << 18 for n in results)
    await gateway.wait_stopped()


async def test_a_bug_in_a_request_task_ends_that_session_only(
    gw: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception out of a request's task (handlers answer errors themselves: only a bug
    of ours gets there) closes its session, logged, with its fids; others go on."""
    from vshare.gateway.session import Session

    reply = Session._reply

    async def broken(self: Session, tag: int, msg: p.Message, msize: int | None = None) -> None:
        if isinstance(msg, p.Rfsync):  # fsync is always answered by a task
            raise RuntimeError("a bug")
        await reply(self, tag, msg, msize)

    monkeypatch.setattr(Session, "_reply", broken)
    (gw.share_dir("alpha") / "f").write_bytes(b"z")
    async with gw.client() as other:
        root, _ = await other.attach("alpha")
        conn, _ = await _open_f(gw.uri)
        with caplog.at_level(logging.INFO, logger="vshare.gateway"):
            await conn.send([p.encode(7, p.Tfsync(1, 0))])
            with anyio.fail_after(10):
                assert await conn.receive(1 << 20) == b""  # closed, no reply
            with anyio.fail_after(5):
                while len(gw.gateway.sessions) > 1:
                    await anyio.sleep(0.02)
        await conn.aclose()
        said = [r.getMessage() for r in caplog.records]
        assert any("internal error" in m and "after" in m for m in said), said
        assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)
        await walk(other, root, "f")  # the other session goes on
