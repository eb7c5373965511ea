"""Live enforcement and quotas: rule and share changes apply to sessions already attached;
a share's size holds against writes, truncation, concurrent writers and restarts."""

from __future__ import annotations

import errno
import os
import threading
from dataclasses import replace

import anyio
import pytest

from vshare import protocol as p
from vshare.gateway.config import GiB, Share
from vshare.policy import AccessRule, Level

from .conftest import GatewayFactory, Running, base_config
from .helpers import create, open_, walk

pytestmark = pytest.mark.anyio
ME = str(os.getuid())


def shares_with(name: str, **changes: object) -> tuple[Share, ...]:
    return tuple(replace(s, **changes) if s.name == name else s for s in base_config().shares)  # type: ignore[arg-type]


async def test_rw_to_ro_fails_the_next_write(gw: Running) -> None:
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        fid = await create(c, root, "f", b"first")
        gw.gateway.set_shares(shares_with("alpha", access=(AccessRule("user", ME, Level.RO),)))
        with pytest.raises(OSError) as info:
            await c.call(p.Twrite(fid, 5, b"second"), p.Rwrite)
        assert info.value.errno == errno.EROFS
        assert (gw.share_dir("alpha") / "f").read_bytes() == b"first"
        # reading still works: the session keeps ro access
        r = await open_(c, root, "f")
        assert bytes((await c.call(p.Tread(r, 0, 100), p.Rread)).data) == b"first"
        gw.gateway.set_shares(base_config().shares)  # back to rw: writes work again
        await c.call(p.Twrite(fid, 5, b"second"), p.Rwrite)


async def test_denied_rule_refuses_every_request_from_then_on(gw: Running) -> None:
    """Found by the Linux client (tests/vm): the gateway used to answer one EACCES and close
    the connection, and a v9fs request sent after that close could wait forever (the guest's
    process stuck in D state). Now the connection stays open and every request is refused;
    Tclunk is acknowledged so that the guest's umount completes."""
    async with gw.client() as c:
        root, _ = await c.attach("alpha")
        fid = await create(c, root, "f", b"first")
        await c.call(p.Tlock(fid, p.LOCK_TYPE_WRLCK, 0, 0, 10, 1, "guest"), p.Rlock)
        await c.call(p.Tgetattr(root, p.GETATTR_BASIC), p.Rgetattr)
        gw.gateway.set_shares(shares_with("alpha", access=()))
        refused = (
            p.Tgetattr(root, p.GETATTR_BASIC), p.Twalk(root, c.new_fid(), ("f",)),
            p.Twrite(fid, 0, b"second"), p.Tread(fid, 0, 100), p.Tstatfs(root),
            p.Tattach(c.new_fid(), p.NOFID, "guest", "alpha", 0),
        )  # fmt: skip
        for msg in refused:
            with pytest.raises(OSError) as info:
                await c.rpc(msg)
            assert info.value.errno == errno.EACCES, msg
        assert gw.gateway.ctx.metrics.fids._value.get() == 0  # handles released at once
        async with gw.client() as other:  # and a new attach is refused too
            with pytest.raises(OSError) as info:
                await other.attach("alpha")
            assert info.value.errno == errno.EACCES
        await c.call(p.Tclunk(fid), p.Rclunk)  # acknowledged: umount completes
        await c.call(p.Tclunk(root), p.Rclunk)
        gw.gateway.set_shares(base_config().shares)  # allowed again: for new sessions
        with pytest.raises(OSError) as info:
            await c.rpc(p.Tgetattr(root, p.GETATTR_BASIC))
        assert info.value.errno == errno.EACCES  # this one stays revoked
        with anyio.fail_after(5):  # the other client's session ends asynchronously
            while len(gw.gateway.sessions) > 1:
                await anyio.sleep(0.01)
        assert len(gw.gateway.sessions) == 1  # and this one stays connected
        async with gw.client() as other:  # its lock was released with its fids
            other_root, _ = await other.attach("alpha")
            other_fid = await open_(other, other_root, "f", flags=p.DOTL_RDWR)
            lock = p.Tlock(other_fid, p.LOCK_TYPE_WRLCK, 0, 0, 10, 2, "other")
            assert (await other.call(lock, p.Rlock)).status == p.LOCK_SUCCESS
    assert (gw.share_dir("alpha") / "f").read_bytes() == b"first"
    with anyio.fail_after(5):  # the client went away: the session ends
        while gw.gateway.sessions:
            await anyio.sleep(0.01)


async def test_sessions_of_other_shares_are_untouched(gw: Running) -> None:
    async with gw.client() as a, gw.client() as b:
        ra, _ = await a.attach("alpha")
        rb, _ = await b.attach("beta")
        gw.gateway.set_shares(shares_with("alpha", access=()))
        with pytest.raises(OSError):
            await a.call(p.Tgetattr(ra, p.GETATTR_BASIC), p.Rgetattr)
        await b.call(p.Tgetattr(rb, p.GETATTR_BASIC), p.Rgetattr)


async def test_a_new_rule_lets_a_refused_instance_attach(gw: Running) -> None:
    async with gw.client() as c:
        with pytest.raises(OSError):
            await c.attach("gamma")
        gw.gateway.set_shares(shares_with("gamma", access=(AccessRule("user", ME),)))
        root, _ = await c.attach("gamma")
        assert await walk(c, root, "theirs.txt")


async def test_removed_share_cuts_its_sessions(gw: Running) -> None:
    async with gw.client() as c:
        root, _ = await c.attach("beta")
        gw.gateway.set_shares([s for s in base_config().shares if s.name != "beta"])
        with pytest.raises(OSError) as info:
            await c.call(p.Tgetattr(root, p.GETATTR_BASIC), p.Rgetattr)
        assert info.value.errno == errno.EACCES


# --- quota --------------------------------------------------------------------------------


def one_gib_alpha() -> tuple[Share, ...]:
    return shares_with("alpha", size_gib=1)


async def test_quota_refuses_writes_past_the_size(start_gateway: GatewayFactory) -> None:
    async with start_gateway(shares=one_gib_alpha()) as gw, gw.client() as c:
        root, _ = await c.attach("alpha")
        fid = await create(c, root, "sparse")
        # Apparent size counts (a sparse file costs nothing on the test's disk).
        await c.call(p.Tsetattr(fid, p.SETATTR_SIZE, 0, 0, 0, GiB - 4096, 0, 0, 0, 0), p.Rsetattr)
        await c.call(p.Twrite(fid, GiB - 4096, b"x" * 4096), p.Rwrite)  # exactly full
        with pytest.raises(OSError) as info:
            await c.call(p.Twrite(fid, GiB, b"y"), p.Rwrite)
        assert info.value.errno == errno.EDQUOT
        assert (gw.share_dir("alpha") / "sparse").stat().st_size == GiB  # nothing written
        other = await create(c, root, "other")
        with pytest.raises(OSError) as info:
            await c.call(p.Twrite(other, 0, b"z"), p.Rwrite)
        assert info.value.errno == errno.EDQUOT
        with pytest.raises(OSError) as info:  # growing by truncation is refused as well
            await c.call(p.Tsetattr(other, p.SETATTR_SIZE, 0, 0, 0, 10, 0, 0, 0, 0), p.Rsetattr)
        assert info.value.errno == errno.EDQUOT
        # overwriting inside the file needs no new space
        await c.call(p.Twrite(fid, 0, b"o" * 8192), p.Rwrite)
        st = await c.call(p.Tstatfs(root), p.Rstatfs)
        assert st.blocks * st.bsize == GiB and st.bfree == st.bavail == 0
        # shrinking gives space back
        await c.call(p.Tsetattr(fid, p.SETATTR_SIZE, 0, 0, 0, GiB - 65536, 0, 0, 0, 0), p.Rsetattr)
        await c.call(p.Twrite(other, 0, b"z" * 1000), p.Rwrite)
        st = await c.call(p.Tstatfs(root), p.Rstatfs)
        assert 0 < st.bfree * st.bsize <= 65536 - 1000


async def test_unlink_gives_the_space_back(start_gateway: GatewayFactory) -> None:
    async with start_gateway(shares=one_gib_alpha()) as gw, gw.client() as c:
        root, _ = await c.attach("alpha")
        fid = await create(c, root, "big")
        await c.call(p.Tsetattr(fid, p.SETATTR_SIZE, 0, 0, 0, GiB, 0, 0, 0, 0), p.Rsetattr)
        small = await create(c, root, "small")
        with pytest.raises(OSError):
            await c.call(p.Twrite(small, 0, b"a"), p.Rwrite)
        await c.clunk(fid)
        await c.call(p.Tunlinkat(root, "big", 0), p.Runlinkat)
        await c.call(p.Twrite(small, 0, b"a" * 4096), p.Rwrite)
        assert gw.gateway.ctx.usage(gw.gateway.ctx.shares["id-alpha"]).used == 4096


async def test_usage_is_rescanned_after_a_restart(start_gateway: GatewayFactory) -> None:
    async with start_gateway(shares=one_gib_alpha()) as gw:
        # Files put there while no gateway ran (or by the previous one).
        (gw.share_dir("alpha") / "d").mkdir()
        with open(gw.share_dir("alpha") / "d" / "old", "wb") as f:
            f.truncate(GiB - 100)
        async with gw.client() as c:
            root, _ = await c.attach("alpha")
            fid = await create(c, root, "new")
            await c.call(p.Twrite(fid, 0, b"n" * 100), p.Rwrite)
            with pytest.raises(OSError) as info:
                await c.call(p.Twrite(fid, 100, b"!"), p.Rwrite)
            assert info.value.errno == errno.EDQUOT


async def test_concurrent_writers_cannot_overshoot(start_gateway: GatewayFactory) -> None:
    async with start_gateway(shares=one_gib_alpha()) as gw:
        async with gw.client() as c:
            root, _ = await c.attach("alpha")
            fid = await create(c, root, "filler")
            left = 10 * 65536 + 1234
            await c.call(p.Tsetattr(fid, p.SETATTR_SIZE, 0, 0, 0, GiB - left, 0, 0, 0, 0),
                         p.Rsetattr)  # fmt: skip
        refused = 0

        async def writer(n: int) -> None:
            nonlocal refused
            async with gw.client() as c:
                root, _ = await c.attach("alpha")
                fid = await create(c, root, f"w{n}")
                offset = 0
                while True:
                    try:
                        await c.call(p.Twrite(fid, offset, b"w" * 65536), p.Rwrite)
                    except OSError as exc:
                        assert exc.errno == errno.EDQUOT
                        refused += 1
                        return
                    offset += 65536

        async with anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(writer, n)
        total = sum(f.stat().st_size for f in gw.share_dir("alpha").iterdir())
        assert refused == 4
        assert GiB - 65536 < total <= GiB


@pytest.mark.parametrize("change", ["revoked", "resized"])
async def test_a_change_made_while_an_attach_opens_its_root_reaches_it(
    gw: Running, change: str
) -> None:
    """set_shares reevaluates the attachments that exist; an attach whose root is being
    opened in a worker thread meanwhile decides again when it comes back: a rule revoked
    then refuses it, a new size is the one its statfs shows."""
    backend = gw.gateway.ctx.backend
    entered, release = threading.Event(), threading.Event()
    real = backend.open_root

    def held_open_root(path: str, **kw: object) -> object:
        entered.set()
        release.wait(5)
        return real(path, **kw)  # type: ignore[arg-type]

    backend.open_root = held_open_root  # type: ignore[method-assign]
    try:
        async with gw.client() as c:
            got: list[object] = []

            async def attach() -> None:
                try:
                    got.append(await c.attach("alpha"))
                except OSError as exc:
                    got.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(attach)
                await anyio.to_thread.run_sync(entered.wait, 5)
                if change == "revoked":
                    gw.gateway.set_shares(shares_with("alpha", access=()))
                else:
                    gw.gateway.set_shares(shares_with("alpha", size_gib=3))
                release.set()
            if change == "revoked":
                assert isinstance(got[0], OSError) and got[0].errno == errno.EACCES
            else:
                root, _ = got[0]  # type: ignore[misc]
                st = await c.call(p.Tstatfs(root), p.Rstatfs)
                assert st.blocks * st.bsize == 3 * GiB
    finally:
        backend.open_root = real  # type: ignore[method-assign]
