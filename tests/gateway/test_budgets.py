"""No tenant can slow, starve or crash another (issue 20): each attack on a budget is
refused or contained while a second tenant measures its getattr latency.

The attacker is a separate process (``attacker.py``: raw 9P over a Unix socket, so its
identity is this uid); so is the other tenant (``tenant.py``: over TCP from 127.0.0.1,
another identity), as VMs are. It times getattrs alone for half a second, then beside the
attack: its p99 there must stay within 5 ms, or within twice its p99 alone on a machine
slower than that allows (15 ms at most), and every one of its requests must succeed.
(Measured from this process, on the gateway's own event loop, each getattr also waited for
the hops of its client's tasks there, each behind a busy session's turn: 3 ms of a 5 ms
limit that was not the gateway's doing.)
"""

from __future__ import annotations

import errno
import functools
import gc
import json
import os
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.abc
import pytest

from vshare import protocol as p
from vshare.client import Client, open_client
from vshare.gateway.config import GatewayConfig, Share
from vshare.gateway.context import Limits
from vshare.policy import AccessRule

from .attacker import Peer
from .conftest import GatewayFactory, Running
from .helpers import walk
from .test_pipelining import fds_into, sessions_ended

pytestmark = pytest.mark.anyio
P = ParamSpec("P")
E = TypeVar("E", bound=BaseException)
ROOT = Path(__file__).resolve().parents[2]
P99_LIMIT = 0.005
#: Whatever the machine: what these tests have caught were p99s of 22-51 ms.
P99_MOST = 0.015
ALONE = 0.5  # seconds: ~200 getattrs
MEASURE_AT_LEAST = 1.0  # seconds: ~400 getattrs
#: The other tenant's sessions: tenant.py's, and its client in this process.
VICTIM_SESSIONS = 2


def shares() -> tuple[Share, ...]:
    """alpha, for this uid (the attacker, over the Unix socket) and for 127.0.0.1 (the
    other tenant, over TCP)."""
    rules = (AccessRule("user", str(os.getuid())), AccessRule("ip", "127.0.0.1/8"))
    return (Share("alpha", "shares/alpha", access=rules),)


class Victim:
    """The other tenant: ``tenant.py``'s getattr latencies alone (before the attack) and
    beside the attacker, and a client of its own in this process for what a test checks
    it can still do (not timed)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.alone: list[float] = []
        self.beside: list[float] = []

    def limit(self) -> float:
        """What its p99 beside the attacker may be: ``P99_LIMIT``, or twice its own p99
        alone on a machine where that is more, but never over ``P99_MOST``."""
        return min(P99_MOST, max(P99_LIMIT, 2 * p99(self.alone)))

    def report(self, what: str) -> str:
        return f"{what}: alone {summary(self.alone)}; beside the attacker {summary(self.beside)}"


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98]


def summary(latencies: list[float]) -> str:
    lat = sorted(latencies)
    return (f"{len(lat)} getattrs, p50 {lat[len(lat) // 2] * 1e3:.2f} ms,"
            f" p99 {p99(lat) * 1e3:.2f} ms, max {lat[-1] * 1e3:.2f} ms")  # fmt: skip


@asynccontextmanager
async def victim(gw: Running) -> AsyncIterator[Victim]:
    """The other tenant measures alone for ``ALONE`` seconds, then while the body runs;
    its p99 beside the attacker is checked at the end."""
    uri = f"tcp://127.0.0.1:{gw.tcp_port}"
    async with child("tests.gateway.tenant", uri, "alpha") as proc, open_client(uri) as c:
        assert proc.stdin is not None and proc.stdout is not None
        with anyio.fail_after(30):
            assert await receive_line(proc.stdout) == b"ready\n"
        await c.attach("alpha")  # (within the handshake timeout)
        v = Victim(c)
        await anyio.sleep(ALONE)
        await proc.stdin.send(b"mark\n")
        started = time.monotonic()
        yield v
        # a few more after the attacker has left, and enough of them for a p99
        await anyio.sleep(max(0.2, MEASURE_AT_LEAST - (time.monotonic() - started)))
        await proc.stdin.send(b"stop\n")
        with anyio.fail_after(10):
            got = json.loads(await receive_line(proc.stdout))
        v.alone, v.beside = got["alone"], got["beside"]
    print(v.report("other tenant"))
    assert len(v.alone) > 50 and len(v.beside) > 50
    if p99(v.beside) > v.limit():
        raise TooSlow(v.report("other tenant") + f" (limit {v.limit() * 1e3:.2f} ms)")


class TooSlow(AssertionError):
    """The other tenant's p99 beside the attacker was over :meth:`Victim.limit`."""


def twice_if_too_slow(test: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
    """Run a test with :func:`victim` once more if the other tenant was too slow; it fails
    if it is too slow again (or fails otherwise).

    Why: the limit is on the gateway's doing, but on a 2-core machine whatever else runs
    delays the gateway's process too. Two CPU-bound processes beside the test take the
    p99 of ``test_a_hundred_busy_sessions_of_one_identity_leave_others_fast`` from 1.4-1.8
    to 5.3-5.8 ms here, and CI runs have failed at 5.6-7.4 ms, one test in nine, another
    each time, their p50 twice this machine's. What these tests have caught were p99s of
    22-51 ms and stalls of seconds, on every run: those fail both times.

    The limit follows the machine too (:meth:`Victim.limit`): a CI run failed two tests
    twice at p99 6.8-12.4 ms with a p50 of 1.2-1.5 ms, where this machine's p50 was
    0.6-0.9 ms and its p99 alone 2-3.9 ms."""

    @functools.wraps(test)
    async def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            await test(*args, **kwargs)
            return
        except BaseException as exc:
            slow = exc if isinstance(exc, TooSlow) else only(exc, TooSlow)
            if slow is None:
                raise
        print(f"once more, the other tenant was too slow: {slow}")
        await test(*args, **kwargs)

    return run


def only(exc: BaseException, kind: type[E]) -> E | None:
    """The one exception of ``kind`` that ``exc`` is (or a group of it, nested), or None if
    ``exc`` is or holds anything else."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return only(exc.exceptions[0], kind)
    return None


async def receive_line(stream: anyio.abc.ByteReceiveStream) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        line += await stream.receive()
    return line


@asynccontextmanager
async def child(module: str, *args: str) -> AsyncIterator[anyio.abc.Process]:
    """``python -m module args``, piped, killed at the end if it has not exited."""
    proc = await anyio.open_process(
        [sys.executable, "-m", module, *args], cwd=ROOT,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            with anyio.CancelScope(shield=True):
                await proc.wait()


class Attacker:
    """``attacker.py``, started (before anyone measures: starting it forks this process)."""

    def __init__(self, proc: anyio.abc.Process) -> None:
        self.proc = proc

    @asynccontextmanager
    async def attack(self) -> AsyncIterator[dict[str, Any]]:
        """Yields what the attacker reports once its attack is made, while it holds what
        it made; it leaves at the end of the block."""
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        await proc.stdin.send(b"go\n")
        with anyio.fail_after(60):
            line = await receive_line(proc.stdout)
        yield json.loads(line)
        await proc.stdin.aclose()
        with anyio.fail_after(10):
            await proc.wait()


@asynccontextmanager
async def attacker(*args: str) -> AsyncIterator[Attacker]:
    """Start ``attacker.py`` with ``args``; it attacks in :meth:`Attacker.attack`."""
    async with child("tests.gateway.attacker", *args) as proc:
        assert proc.stdout is not None
        with anyio.fail_after(30):
            assert await receive_line(proc.stdout) == b"ready\n"
        yield Attacker(proc)


def rss() -> int:
    """This process's resident memory in bytes (the gateway runs in it)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --- fids and file descriptors ---------------------------------------------------------


def test_fid_budgets_follow_the_fd_limit() -> None:
    config = GatewayConfig()
    for nofile in (1024, 20_000, 1 << 20):
        limits = Limits.derive(config, nofile)
        # sessions and fids together stay under the limit, with a reserve for the gateway
        assert limits.sessions + limits.fids <= nofile - 64
        assert limits.fids_per_session <= limits.fids_per_identity < limits.fids
        assert limits.fids_per_identity <= limits.fids // 2 or limits.fids_per_identity <= 16_384
        assert limits.sessions_per_identity < limits.sessions or limits.sessions <= 16
    small = Limits.derive(config, 1024)
    assert small.sessions == 128 and small.fids_per_session < 512
    big = Limits.derive(config, 1 << 20)
    assert big.sessions == 1024 and big.fids_per_session == 65536  # max_fids, as before
    assert big.fids_per_identity > 200_000


async def test_the_soft_fd_limit_is_raised_at_start(gw: Running) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == hard == gw.gateway.ctx.budgets.limits.nofile


@twice_if_too_slow
async def test_fids_until_emfile_leave_others_alone(start_gateway: GatewayFactory) -> None:
    async with start_gateway(tcp=True, shares=shares(), max_fids=1500,
                             max_fids_per_identity=2500) as gw:  # fmt: skip
        (gw.share_dir("alpha") / "f").write_bytes(b"data")
        baseline = fds_into(gw.volume)
        async with attacker("fids", gw.uri, "2", "f") as a, victim(gw) as v:
            async with a.attack() as got:
                # each session until its own limit, the second until the identity's
                assert got["errors"] == [errno.EMFILE]
                assert got["fids"] == [1499, 999]  # (+ the attach fid each)
                # an fd per open (2,500 readlinks: in a thread, off the loop the other
                # tenant is answered on)
                assert await anyio.to_thread.run_sync(fds_into, gw.volume) >= baseline + 2500
                fids = gw.gateway.ctx.budgets.fids
                assert fids.refusals["session"] >= 1 and fids.refusals["identity"] >= 1
                # the other tenant attaches, walks, opens and reads as usual
                c = v.client
                root, _ = await c.attach("alpha")
                f = await walk(c, root, "f")
                await c.call(p.Tlopen(f, p.DOTL_RDONLY), p.Rlopen)
                assert bytes((await c.call(p.Tread(f, 0, 10), p.Rread)).data) == b"data"
                await c.call(p.Tgetattr(f, p.GETATTR_BASIC), p.Rgetattr)
                await c.clunk(f)
                await c.clunk(root)
            with anyio.fail_after(5):
                while len(gw.gateway.sessions) > VICTIM_SESSIONS:
                    await anyio.sleep(0.01)
        await sessions_ended(gw)
        assert fds_into(gw.volume) == baseline
        assert gw.gateway.ctx.budgets.fids.used == 0


def fids_of_one_session(uri: str, count: int) -> Peer:
    """A session holding ``count`` fids, each a walk to the root (no fd each)."""
    peer = Peer(uri)
    peer.attach()
    for first in range(1, count + 1, 500):
        batch = [p.Twalk(0, n, ()) for n in range(first, min(first + 500, count + 1))]
        replies = peer.pipeline(batch)
        assert all(isinstance(r, p.Rwalk) for r in replies), (first, replies[-1])
    return peer


class LoopWatch:
    """The event loop's longest iteration since the watch began, as a task that does
    nothing but yield sees it (the gateway runs on this test's loop)."""

    def __init__(self) -> None:
        self.longest = 0.0

    async def run(self) -> None:
        while True:
            start = time.perf_counter()
            await anyio.lowlevel.checkpoint()
            self.longest = max(self.longest, time.perf_counter() - start)


@asynccontextmanager
async def loop_watch() -> AsyncIterator[LoopWatch]:
    """A :class:`LoopWatch` running while the body does (begun once the loop is quiet)."""
    watch = LoopWatch()
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.run)
        await anyio.sleep(0.05)
        watch.longest = 0.0
        yield watch
        tg.cancel_scope.cancel()


async def test_a_session_ending_with_many_fids_holds_the_loop_only_briefly(
    start_gateway: GatewayFactory,
) -> None:
    """The fids of a session that ends are let go on the event loop, ~2 µs each; in one
    step, 16,000 of them held every tenant for 30-50 ms. They go in steps, the session's
    turn given up between them: the loop's longest step while it ends is measured."""
    async with start_gateway(tcp=True, shares=shares(), max_fids_per_identity=20_000) as gw:
        peer = await anyio.to_thread.run_sync(fids_of_one_session, gw.uri, 16_000)
        assert gw.gateway.ctx.budgets.fids.used >= 16_000
        async with loop_watch() as watch:
            peer.sock.close()
            await sessions_ended(gw)
        print(f"longest loop iteration while 16,000 fids went: {watch.longest * 1e3:.2f} ms")
        assert watch.longest < 0.015
        assert gw.gateway.ctx.budgets.fids.used == 0


# --- session slots ---------------------------------------------------------------------


@twice_if_too_slow
async def test_silent_connections_take_only_their_identitys_slots(
    start_gateway: GatewayFactory,
) -> None:
    limits = {"max_sessions": 64, "max_sessions_per_identity": 20, "handshake_timeout": 1.5}
    async with start_gateway(tcp=True, shares=shares(), **limits) as gw:
        budget = gw.gateway.ctx.budgets.sessions
        async with attacker("silent", gw.uri, "60") as a, victim(gw), a.attack() as got:
            assert got["closed_at_once"] == 40  # over the identity's 20 slots
            assert budget.used == 20 + VICTIM_SESSIONS and budget.refusals["identity"] == 40
            # the other tenant connects and attaches meanwhile
            async with open_client(f"tcp://127.0.0.1:{gw.tcp_port}") as c:
                root, _ = await c.attach("alpha")
                await c.call(p.Tgetattr(root, p.GETATTR_BASIC), p.Rgetattr)
            # the attacker's 20 go when their handshake time is up, the victim stays
            with anyio.fail_after(5):
                while budget.used > VICTIM_SESSIONS:
                    await anyio.sleep(0.05)
            assert len(gw.gateway.sessions) == VICTIM_SESSIONS
            timeouts = gw.gateway.ctx.metrics.timeouts.labels(kind="handshake")
            assert timeouts._value.get() == 20  # type: ignore[attr-defined]


async def test_an_attached_session_has_no_handshake_deadline(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(handshake_timeout=0.3) as gw, gw.client() as c:
        root, _ = await c.attach("alpha")
        await anyio.sleep(0.6)
        await c.call(p.Tgetattr(root, p.GETATTR_BASIC), p.Rgetattr)
        # a Tversion alone does not complete the handshake
        async with gw.client():  # (open_client sends Tversion)
            with anyio.fail_after(3):
                while len(gw.gateway.sessions) > 1:
                    await anyio.sleep(0.05)


# --- partial frames --------------------------------------------------------------------

MiB = 1 << 20


@twice_if_too_slow
async def test_frames_that_claim_a_megabyte_cost_what_was_sent(
    start_gateway: GatewayFactory,
) -> None:
    """200 sessions each send the header of a 1 MiB Twrite and 100 bytes (each used to
    allocate 1 MiB at once: +184 MiB)."""
    limits = {"max_sessions": 512, "max_sessions_per_identity": 256}
    async with start_gateway(tcp=True, shares=shares(), **limits) as gw:
        budget = gw.gateway.ctx.budgets.partial
        async with attacker("partial", gw.uri, "200", "100") as a, victim(gw):
            before = rss()
            async with a.attack() as got:
                assert got["sessions"] == 200
                with anyio.fail_after(5):
                    while budget.used < 200 * 100:
                        await anyio.sleep(0.01)
                grown = rss() - before
                print(f"RSS +{grown / MiB:.1f} MiB for 200 sessions with a partial frame")
                assert grown < 16 * MiB
                assert budget.used == 200 * 100
        await sessions_ended(gw)
        assert budget.used == 0


@twice_if_too_slow
async def test_partial_frames_bounded_per_identity_and_in_time(
    start_gateway: GatewayFactory,
) -> None:
    """20 sessions send 900 KiB of a 1 MiB frame each: the identity's bound (4 MiB) stops
    reading them, and the idle timeout closes them."""
    limits = {"max_partial_bytes_per_identity": 4 * MiB, "idle_timeout": 1.5}
    async with start_gateway(tcp=True, shares=shares(), **limits) as gw:
        budget = gw.gateway.ctx.budgets.partial
        sent = str(900 * 1024)
        async with attacker("partial", gw.uri, "20", sent) as a, victim(gw), a.attack():
            await anyio.sleep(0.3)
            assert 3 * MiB < budget.used <= 4 * MiB + 20 * 4096
            assert budget.refusals["identity"] >= 1
            with anyio.fail_after(5):  # their frames never complete: closed in time
                while budget.used:
                    await anyio.sleep(0.05)
            timeouts = gw.gateway.ctx.metrics.timeouts.labels(kind="frame")
            assert timeouts._value.get() == 20  # type: ignore[attr-defined]


# --- replies nobody reads --------------------------------------------------------------


@twice_if_too_slow
async def test_replies_nobody_reads_stop_the_reading_of_that_session_only(
    start_gateway: GatewayFactory,
) -> None:
    """A session pipelines 400 Treads of 1 MiB and never reads its socket (it used to take
    ~285 MiB per session): its replies in the making stay within its budget (8 MiB), the
    gateway stops reading it, and the other tenant is answered as usual. What stops it:
    the reply budget for reads made in threads (uncached: they hold buffers), a send that
    waits for room in its socket for reads sent from the page cache (they hold none)."""
    async with start_gateway(tcp=True, shares=shares()) as gw:
        big = gw.share_dir("alpha") / "big"
        with open(big, "wb") as f:
            for _ in range(64):
                f.write(os.urandom(1 << 20))
            f.flush()
            os.fsync(f.fileno())
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # reads must wait
        budget = gw.gateway.ctx.budgets.replies
        async with attacker("unread", gw.uri, "big", "400") as a, victim(gw) as v:
            before = rss()
            peak = 0
            async with a.attack():
                for _ in range(50):
                    peak = max(peak, rss() - before)
                    assert budget.used <= 8 * MiB + MiB + 64
                    await anyio.sleep(0.02)
                print(
                    f"RSS peak +{peak / MiB:.1f} MiB; replies charged {budget.used / MiB:.1f} MiB"
                )
                assert peak < 48 * MiB
                registry = gw.gateway.ctx.metrics.registry
                answered = registry.get_sample_value(
                    "vshare_requests_total", {"op": "read", "result": "ok"}
                )
                assert answered is not None and answered < 100, "it was read on"
                sent = registry.get_sample_value("vshare_read_file_bytes_total") or 0.0
                assert budget.refusals["session"] >= 1 or sent > 0
                c = v.client  # the other tenant reads the same file meanwhile
                root, _ = await c.attach("alpha")
                f = await walk(c, root, "big")
                await c.call(p.Tlopen(f, p.DOTL_RDONLY), p.Rlopen)
                data = (await c.call(p.Tread(f, 5 << 20, 1 << 16), p.Rread)).data
                assert len(data) == 1 << 16
        await sessions_ended(gw)
        assert budget.used == 0


# --- locks -----------------------------------------------------------------------------


@pytest.mark.parametrize("owners", [1, 1000])
@twice_if_too_slow
async def test_twenty_thousand_locks_leave_others_fast(
    start_gateway: GatewayFactory, owners: int
) -> None:
    """One session takes 20,000 locks on a file (as one process, or as 1,000): the other
    tenant's Tlock, Tgetlock and getattr on that very file stay fast (a Tlock used to scan
    every lock on the event loop: ~2 ms each)."""
    async with start_gateway(tcp=True, shares=shares()) as gw:
        (gw.share_dir("alpha") / "f").write_bytes(b"shared")
        n = 20_000
        args = ("locks", gw.uri, "f", str(n), str(owners))
        async with attacker(*args) as a, victim(gw) as v, a.attack() as got:
            print(f"attacker: {got}")
            assert got["results"] == {str(p.LOCK_SUCCESS): n}
            assert got["per_lock_us"] < 1000
            assert gw.gateway.ctx.budgets.locks.used == n + 200
            c = v.client
            root, _ = await c.attach("alpha")
            f = await walk(c, root, "f")
            await c.call(p.Tlopen(f, p.DOTL_RDWR), p.Rlopen)
            times = []
            for i in range(100):
                start = time.perf_counter()
                free = await c.call(
                    p.Tlock(f, p.LOCK_TYPE_WRLCK, 0, 10 * n + i, 1, 7, "other"), p.Rlock
                )
                taken = await c.call(
                    p.Tlock(f, p.LOCK_TYPE_RDLCK, 0, 2 * (i * 97), 1, 7, "other"), p.Rlock
                )
                who = await c.call(
                    p.Tgetlock(f, p.LOCK_TYPE_WRLCK, 2 * (i * 97), 1000, 7, "other"),
                    p.Rgetlock,
                )
                times.append((time.perf_counter() - start) / 3)
                assert free.status == p.LOCK_SUCCESS and taken.status == p.LOCK_BLOCKED
                assert who.type == p.LOCK_TYPE_WRLCK and who.client_id == "attacker"
                assert who.start == 2 * (i * 97)
            times.sort()
            print(
                f"other tenant's lock requests: p50 {times[50] * 1e3:.2f} ms,"
                f" max {times[-1] * 1e3:.2f} ms"
            )
            assert times[98] < 0.005
        await sessions_ended(gw)
        assert gw.gateway.ctx.budgets.locks.used == 0
        assert gw.gateway.ctx.locks.held(1) == []


async def test_locks_over_the_session_budget_get_enolck(start_gateway: GatewayFactory) -> None:
    async with start_gateway(max_locks=100) as gw, gw.client() as c:
        (gw.share_dir("alpha") / "f").write_bytes(b"x")
        root, _ = await c.attach("alpha")
        f = await walk(c, root, "f")
        await c.call(p.Tlopen(f, p.DOTL_RDWR), p.Rlopen)
        for i in range(100):
            await c.call(p.Tlock(f, p.LOCK_TYPE_WRLCK, 0, 2 * i, 1, 1, "g"), p.Rlock)
        with pytest.raises(OSError) as info:
            await c.call(p.Tlock(f, p.LOCK_TYPE_WRLCK, 0, 1000, 1, 1, "g"), p.Rlock)
        assert info.value.errno == errno.ENOLCK
        budget = gw.gateway.ctx.budgets.locks
        assert budget.used == 100 and budget.refusals["session"] == 1
        await c.call(p.Tlock(f, p.LOCK_TYPE_UNLCK, 0, 0, 0, 1, "g"), p.Rlock)  # all of them
        assert budget.used == 0
        await c.call(p.Tlock(f, p.LOCK_TYPE_WRLCK, 0, 1000, 1, 1, "g"), p.Rlock)


# --- the cyclic collector --------------------------------------------------------------


def a_session_of_every_kind(uri: str, end: str) -> None:
    """A session that opens, reads, writes, locks, creates, lists and fails (ENOENT,
    EBADF), then ends by EOF or a protocol error (a frame too short for its type)."""
    peer = Peer(uri)
    peer.attach()
    peer.pipeline([p.Twalk(0, 1, ("f",)), p.Tlopen(1, p.DOTL_RDWR)])
    peer.pipeline([p.Tread(1, 0, 10), p.Twrite(1, 0, b"x"), p.Tgetattr(1, p.GETATTR_BASIC),
                   p.Tlock(1, p.LOCK_TYPE_WRLCK, 0, 0, 1, 1, "t"), p.Twalk(0, 2, ("no",)),
                   p.Tread(99, 0, 1), p.Twalk(0, 3, ()), p.Twalk(0, 4, ())])  # fmt: skip
    peer.pipeline([p.Tlcreate(3, "new", p.DOTL_RDWR, 0o644, 0), p.Tlopen(4, p.DOTL_RDONLY)])
    peer.pipeline([p.Treaddir(4, 0, 4096), p.Tunlinkat(0, "new", 0)])
    if end == "protocol error":
        peer.sock.sendall(struct.pack("<IBH", 7, 100, 1))  # a Tversion of no bytes
    peer.sock.close()


async def test_a_session_that_ends_leaves_nothing_for_the_cyclic_collector(
    start_gateway: GatewayFactory,
) -> None:
    """What a session made is freed when it ends, by reference counts alone: nothing of
    it waits in a reference cycle for a pass of the collector, whose oldest-generation
    passes hold every tenant and grow with what they scan. (The dispatch table of bound
    methods and the task set's error hook made a cycle of every session: 72 objects
    each, from the session to its attachments' nodes.)"""
    async with start_gateway(tcp=True, shares=shares()) as gw:
        (gw.share_dir("alpha") / "f").write_bytes(b"data")
        await anyio.to_thread.run_sync(a_session_of_every_kind, gw.uri, "EOF")
        await sessions_ended(gw)
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what a pass finds in cycles is kept to be seen
        try:
            for end in ("EOF", "protocol error"):
                await anyio.to_thread.run_sync(a_session_of_every_kind, gw.uri, end)
                await sessions_ended(gw)
            gc.collect()
            ours = [o for o in gc.garbage if type(o).__module__.startswith("vshare.")]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        assert not ours, sorted({type(o).__qualname__ for o in ours})


async def test_what_the_process_held_at_start_is_out_of_the_collectors_sight(
    start_gateway: GatewayFactory,
) -> None:
    """An oldest-generation pass of Python's cyclic collector holds every tenant; it scans
    only what sessions made: what the process held when the gateway started is frozen
    (gc.freeze; in this test process, pytest's objects too), and given back at the stop
    (a full pass over them took 9-43 ms here, in the middle of the attacks above)."""
    async with start_gateway() as gw, gw.client() as c:
        await c.attach("alpha")
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0


# --- many sessions of one identity busy at once ----------------------------------------


@twice_if_too_slow
async def test_a_hundred_busy_sessions_of_one_identity_leave_others_fast(
    start_gateway: GatewayFactory,
) -> None:
    """100 sessions of one identity, each with 64 Tgetattrs in flight, all sent at once
    and again for a second. Each session's turn on the loop is bounded (0.2 ms), but all
    100 were ready in one loop iteration with the other tenant's request behind them
    (p99 22.5 ms, max 65 ms); now an identity past half the loop while another wants it
    queues its sessions' turns (loop_share.py)."""
    limits = {"max_sessions": 256, "max_sessions_per_identity": 128}
    async with (
        start_gateway(tcp=True, shares=shares(), **limits) as gw,
        attacker("flood", gw.uri, "100", "1.0") as a,
        victim(gw),
        a.attack() as got,
    ):
        print(f"attacker: {got}")
        assert got["getattrs"] > 0
