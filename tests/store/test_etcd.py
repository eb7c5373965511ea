"""EtcdStore against a real etcd: the shared conformance suite, unchanged, then what only a
fleet store has — a watch that survives etcd restarts and compaction, compare-and-swap
races between separate clients and processes, gateway leases, an unreachable etcd.

One etcd member per module (``vshare.testing.etcd.EtcdServer``: a temporary directory, free
loopback ports, stopped by its PID); every test gets its own key prefix in it, so tests
never see each other's data. Tests that restart etcd start their own member.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.processes import wait_for
from vshare.store import (
    Compacted,
    Conflict,
    EtcdStore,
    GatewayRecord,
    ShareRecord,
    Store,
    StoreUnavailable,
    open_store,
)
from vshare.store._etcd_client import EtcdClient, prefix_end
from vshare.store._etcd_queue import Place
from vshare.testing.etcd import EtcdServer, etcd_binary, free_port
from vshare.testing.store_conformance import StoreConformance, apply_changes, make_share

pytestmark = [
    pytest.mark.etcd,
    pytest.mark.skipif(etcd_binary() is None, reason="needs etcd (Debian etcd-server)"),
]


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    with EtcdServer() as server:
        yield server


@pytest.fixture
def prefix() -> str:
    return f"/test-{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def store(etcd: EtcdServer, prefix: str) -> Iterator[Store]:
    s = EtcdStore([etcd.endpoint], prefix=prefix)
    yield s
    s.close()


@pytest.fixture
def second_store(etcd: EtcdServer, prefix: str) -> Iterator[Store]:
    s = EtcdStore([etcd.endpoint], prefix=prefix)  # its own HTTP client, as another process
    yield s
    s.close()


class TestEtcdConformance(StoreConformance):
    pass


# ---------------------------------------------------------------------------------------------
# etcd only


@pytest.fixture
def own_etcd() -> Iterator[EtcdServer]:
    """A member of the test's own, for tests that restart or compact etcd."""
    with EtcdServer() as server:
        yield server


# --- URIs and opening --------------------------------------------------------------------------


def test_open_store_etcd_uri(etcd: EtcdServer, prefix: str) -> None:
    with open_store(f"etcd://{etcd.endpoint}{prefix.rstrip('/')}?wait=2&timeout=3") as opened:
        assert isinstance(opened, EtcdStore)
        assert opened.prefix == prefix
        made = opened.create_share(make_share())
    with EtcdStore([etcd.endpoint], prefix=prefix) as direct:
        assert direct.get_share(made.id) == made
    # The default prefix, and several members (the first one is down: the next serves).
    dead = f"127.0.0.1:{free_port()}"
    with open_store(f"etcd://{dead},{etcd.endpoint}") as fleet:
        assert isinstance(fleet, EtcdStore)
        assert fleet.prefix == "/vshare/"
        fleet.revision()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("etcd:127.0.0.1:2379", "etcd://host:port"),
        ("etcd://", "names no etcd member"),
        ("etcd://127.0.0.1", "is not host:port"),
        ("etcd://127.0.0.1:99999", "is not host:port"),
        ("etcd://127.0.0.1:2379?color=red", "unknown option 'color'"),
        ("etcd://127.0.0.1:2379?wait=soon", "wait must be a number of seconds"),
        ("etcd://127.0.0.1:2379?timeout=0", "timeout must be a number of seconds"),
    ],
)
def test_open_store_refuses_bad_etcd_uris(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        open_store(uri)


def test_unreachable_etcd_at_start_is_a_clear_error_after_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    caplog.set_level(logging.WARNING, logger="vshare.store")
    start = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        EtcdStore([endpoint], wait=1.5)
    took = time.monotonic() - start
    message = str(info.value)
    assert "cannot reach etcd" in message and endpoint in message and "1.5 s" in message
    assert "\n" not in message
    assert 1.4 <= took < 4.0
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    # Backoff: 0.2 s, 0.4 s, then what is left of the 1.5 s.
    assert 2 <= len(retries) <= 5, [r.getMessage() for r in retries]
    with pytest.raises(StoreUnavailable, match="cannot reach etcd"):
        EtcdStore([endpoint])  # no wait: at once


def test_store_opens_once_etcd_comes_up() -> None:
    port = free_port()
    opened: list[EtcdStore] = []
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            opened.append(EtcdStore([f"127.0.0.1:{port}"], wait=30))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=open_it)
    thread.start()
    try:
        time.sleep(1.0)
        assert not opened and not errors  # still waiting
        with EtcdServer(client_port=port):
            thread.join(30)
            assert not errors, errors
            assert len(opened) == 1
            with opened[0] as store:
                store.create_share(make_share())
                assert [s.name for s in store.list_shares()] == ["alpha"]
    finally:
        thread.join(30)


# --- the watch ---------------------------------------------------------------------------------


class Follower(threading.Thread):
    """What a gateway does: a snapshot, then wait_for_change / changes_since, a snapshot
    again on Compacted; store outages are retried. Records when each revision was seen."""

    def __init__(self, store: Store) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.state = store.snapshot()
        self.seen_at: dict[int, float] = {}
        self.reloads = 0
        self.outages = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                current = self.state.revision
                if self.store.wait_for_change(current, 0.5) <= current:
                    continue
                try:
                    changes = self.store.changes_since(current)
                except Compacted:
                    self.state = self.store.snapshot()
                    self.reloads += 1
                else:
                    # The feed has no gaps: every revision after ours, in order.
                    revisions = sorted({c.revision for c in changes})
                    assert revisions == list(range(current + 1, current + 1 + len(revisions)))
                    self.state = apply_changes(self.state, changes)
                now = time.monotonic()
                self.seen_at.update((r, now) for r in range(current + 1, self.state.revision + 1))
            except StoreUnavailable:
                self.outages += 1
                time.sleep(0.05)

    def __enter__(self) -> Follower:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(10)


def _write_through_outages(store: Store, name: str) -> ShareRecord | None:
    """Create a share, retrying while etcd is down (a retry after an unknown outcome may
    find the share made: then the first attempt won)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            # A tenant per share: up to 1,000 of them, far past one tenant's default quota.
            return store.create_share(make_share(name, tenant=name))
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        except Conflict:
            return None


def _latencies(follower: Follower, writes: list[tuple[int, float]]) -> list[float]:
    return [follower.seen_at[rev] - at for rev, at in writes]


@pytest.mark.slow
def test_follower_misses_nothing_across_etcd_restarts(own_etcd: EtcdServer, prefix: str) -> None:
    follow = EtcdStore([own_etcd.endpoint], prefix=prefix)
    write = EtcdStore([own_etcd.endpoint], prefix=prefix)
    try:
        with Follower(follow) as follower:
            steady: list[tuple[int, float]] = []
            for i in range(10):
                made = write.create_share(make_share(f"a{i}"))
                steady.append((made.revision, time.monotonic()))
                time.sleep(0.05)
            wait_for(lambda: follower.state.revision == write.revision(), 5, "caught up")
            latency = _latencies(follower, steady)
            assert max(latency) < 0.5, latency

            stop = threading.Event()
            written: list[str] = []

            def writer() -> None:
                for i in range(1000):
                    if stop.is_set():
                        return
                    _write_through_outages(write, f"b{i:03d}")
                    written.append(f"b{i:03d}")
                    time.sleep(0.01)

            thread = threading.Thread(target=writer)
            thread.start()
            try:
                wait_for(lambda: len(written) >= 10, 10, "writes before the restart")
                own_etcd.restart()  # SIGTERM, mid-stream
                wait_for(lambda: len(written) >= 25, 20, "writes after the restart")
                own_etcd.restart(signal.SIGKILL)
                wait_for(lambda: len(written) >= 40, 20, "writes after the kill")
            finally:
                stop.set()
                thread.join(30)
            wait_for(lambda: follower.state.revision == write.revision(), 10, "caught up")
            assert follower.state == write.snapshot()
            assert {f"b{i:03d}" for i in range(len(written))} <= {
                s.name for s in follower.state.shares
            }
            assert follow.watch_reconnects >= 2
            wait_for(lambda: follow.watching, 10, "the watch is back")

            after: list[tuple[int, float]] = []
            for i in range(10):
                made = write.create_share(make_share(f"c{i}"))
                after.append((made.revision, time.monotonic()))
                time.sleep(0.05)
            wait_for(lambda: follower.state.revision == write.revision(), 5, "caught up")
            latency = _latencies(follower, after)
            assert max(latency) < 0.5, latency
            figures = sorted(_latencies(follower, steady) + latency)
            median = statistics.median(figures) * 1000
            print(f"\netcd follower: write → seen, ms: median {median:.1f},"
                  f" max {figures[-1] * 1000:.1f} (n={len(figures)})")  # fmt: skip
    finally:
        follow.close()
        write.close()


def test_watch_resyncs_when_etcd_compacted_its_revision(own_etcd: EtcdServer, prefix: str) -> None:
    follow = EtcdStore([own_etcd.endpoint], prefix=prefix)
    write = EtcdStore([own_etcd.endpoint], prefix=prefix)
    raw = EtcdClient([own_etcd.endpoint])
    try:
        base = write.create_share(make_share("base"))
        follow.wait_for_change(base.revision, 0)  # starts the watch
        wait_for(lambda: follow.watching, 5, "watching")
        follow.pause_watch()
        wait_for(lambda: not follow.watching, 5, "the watch dropped")
        for i in range(5):
            write.create_share(make_share(f"s{i}"))
        write.compact(write.revision())  # the store's feed, too
        at, _ = raw.range(b"/")
        raw.compact(at)  # etcd's history: the revision the watch would resume from is gone
        assert follow.seen_revision == base.revision  # nothing told it yet
        follow.resume_watch()
        # etcd accepts the watch, then cancels it: the start revision was compacted.
        wait_for(lambda: follow.watch_resyncs == 1, 5, "a resync")
        wait_for(lambda: follow.watching, 5, "watching again")
        assert follow.seen_revision == write.revision()  # the resync read it
        with pytest.raises(Compacted):
            follow.changes_since(base.revision)
        assert follow.snapshot() == write.snapshot()
        # And the new watch delivers: seen without this store asking etcd anything.
        made = write.create_share(make_share("after"))
        took = wait_for(lambda: follow.seen_revision == made.revision, 2, "watch event")
        assert took < 0.5
    finally:
        raw.close()
        follow.close()
        write.close()


# --- compare-and-swap races between processes ------------------------------------------------

_RACER = """
import json, sys, time
from vshare.store import Conflict, EtcdStore
from vshare.testing.store_conformance import make_rule, make_share
endpoint, prefix, start_at, rounds, share_id = sys.argv[1:6]
store = EtcdStore([endpoint], prefix=prefix)
out = []
time.sleep(max(0.0, float(start_at) - time.time()))
for i in range(int(rounds)):
    for what, make in (
        ("share", lambda: store.create_share(make_share(f"race-{i}"))),
        ("rule", lambda: store.add_rule(make_rule(share_id, f"10.{i}.0.0/16"))),
    ):
        try:
            make()
            out.append([what, i, "ok"])
        except Conflict:
            out.append([what, i, "conflict"])
store.close()
print(json.dumps(out))
"""


@pytest.mark.slow
def test_two_processes_racing_for_names_and_rules_one_wins(
    etcd: EtcdServer, store: Store, prefix: str
) -> None:
    rounds = 40
    share = store.create_share(make_share("rules-here"))
    start_at = time.time() + 2.0  # both interpreters are up by then
    command = [sys.executable, "-c", _RACER, etcd.endpoint, prefix, str(start_at)]
    command += [str(rounds), share.id]
    racers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outcomes: dict[tuple[str, int], list[str]] = {}
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err
        for what, i, result in json.loads(out):
            outcomes.setdefault((what, i), []).append(result)
    assert len(outcomes) == 2 * rounds
    for key, results in outcomes.items():
        assert sorted(results) == ["conflict", "ok"], key
    names = {s.name for s in store.list_shares()}
    assert names == {"rules-here"} | {f"race-{i}" for i in range(rounds)}
    assert len(store.list_rules(share.id)) == rounds


def test_writers_that_keep_losing_take_turns(etcd: EtcdServer, prefix: str) -> None:
    """The queue of writers that lost a race (``_etcd_queue``): a writer's turn comes
    when every writer that queued before it has gone, whether it committed or died (its
    lease ran out)."""
    client = EtcdClient([etcd.endpoint])
    key = prefix.encode()
    try:
        Place.join(client, key, ttl=1)  # a writer that died: its lease ends in 1-2 s
        first = Place.join(client, key, ttl=10)
        second = Place.join(client, key, ttl=10)
        turns: dict[str, float] = {}

        def wait(name: str, place: Place) -> None:
            place.wait_turn(time.monotonic() + 10)
            turns[name] = time.monotonic()

        waiters = [threading.Thread(target=wait, args=a) for a in [("1", first), ("2", second)]]
        start = time.monotonic()
        for t in waiters:
            t.start()
        wait_for(lambda: "1" in turns, 5, "the first writer's turn")
        assert turns["1"] - start > 0.5  # the dead writer's lease, not sooner
        time.sleep(0.3)
        assert "2" not in turns  # the first has not left
        client.txn([], [first.leave_op()])  # as its winning commit does
        wait_for(lambda: "2" in turns, 5, "the second writer's turn")
        for t in waiters:
            t.join()
        second.close()
        first.close()
        assert client.range(key + b"wq/", prefix_end(key + b"wq/"))[1] == []
    finally:
        client.close()


def test_two_control_services_racing_for_a_share_name(
    etcd: EtcdServer, prefix: str, tmp_path: Path
) -> None:
    from vshare.control import ADMIN, ControlService

    volume = tmp_path / "vol"
    volume.mkdir()
    stores = [EtcdStore([etcd.endpoint], prefix=prefix) for _ in range(2)]
    services = [ControlService(s, {"default": f"posix:{volume}"}) for s in stores]
    admin = ADMIN
    try:
        for round_ in range(10):
            barrier = threading.Barrier(2)
            results: list[str] = []

            def create(
                service: ControlService,
                name: str = f"contested-{round_}",
                barrier: threading.Barrier = barrier,
                results: list[str] = results,
            ) -> None:
                barrier.wait()
                try:
                    service.create_share(admin, name=name, size_gib=1, tenant="acme")
                    results.append("ok")
                except Conflict:
                    results.append("conflict")

            threads = [threading.Thread(target=create, args=(s,)) for s in services]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert sorted(results) == ["conflict", "ok"]
        assert len(stores[0].list_shares()) == 10
    finally:
        for s in stores:
            s.close()


# --- gateway leases --------------------------------------------------------------------------

_GATEWAY = """
import sys, time
from vshare.store import EtcdStore, GatewayRecord
endpoint, prefix = sys.argv[1:3]
store = EtcdStore([endpoint], prefix=prefix)
record = GatewayRecord(id="hv-doomed", addresses=("vsock://any:564",), host="hv", version="t")
while True:
    store.heartbeat(record, 1.0)
    print("beat", flush=True)
    time.sleep(0.3)
"""


@pytest.mark.slow
def test_gateway_killed_with_sigkill_loses_its_lease(
    etcd: EtcdServer, store: Store, prefix: str
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _GATEWAY, etcd.endpoint, prefix],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    raw = EtcdClient([etcd.endpoint])
    alive = (prefix + "alive/hv-doomed").encode()
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "beat\n", child.stderr.read() if child.stderr else ""
        [status] = store.list_gateways()
        assert status.healthy and status.gateway.host == "hv"
        assert raw.range(alive)[1], "registered under a lease"
        assert raw.range(alive)[1][0].lease != 0
        time.sleep(1.5)  # several renewals: still healthy past its first ttl
        assert store.list_gateways()[0].healthy
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        killed = time.monotonic()
        unhealthy = wait_for(lambda: not store.list_gateways()[0].healthy, 5, "unhealthy")
        expired = wait_for(lambda: not raw.range(alive)[1], 5, "the lease expired")
        expired += unhealthy
        assert unhealthy < 1.0 + 0.5, unhealthy  # within its ttl (from its last heartbeat)
        assert expired < 1.0 + 1.5, expired  # etcd checks lease expiry twice a second
        assert [g.gateway.id for g in store.list_gateways()] == ["hv-doomed"]  # listed
        assert time.monotonic() - killed < 5
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
        raw.close()


def test_closing_the_store_revokes_the_lease(etcd: EtcdServer, store: Store, prefix: str) -> None:
    other = EtcdStore([etcd.endpoint], prefix=prefix)
    other.heartbeat(GatewayRecord(id="hv-1"), 30)
    assert store.list_gateways()[0].healthy
    other.close()
    [status] = store.list_gateways()
    assert not status.healthy
    assert status.ttl_seconds == 30


def test_a_heartbeat_renews_the_lease_without_a_store_write(etcd: EtcdServer, store: Store) -> None:
    gateway = GatewayRecord(id="hv-1")
    store.heartbeat(gateway, 1)
    revision = store.revision()
    for _ in range(6):  # 1.8 s: longer than the lease, so it must be renewed
        time.sleep(0.3)
        store.heartbeat(gateway, 1)
        assert store.list_gateways()[0].healthy
    assert store.revision() == revision


# --- figures ---------------------------------------------------------------------------------


def test_operation_latencies(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    """Not a benchmark: a sanity bound, and the figures (printed with -s)."""
    figures: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], object], n: int = 30) -> None:
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        figures[name] = statistics.median(samples) * 1000

    counter = iter(range(10_000))
    share = store.create_share(make_share("base"))
    timed("create_share", lambda: store.create_share(make_share(f"x{next(counter)}")))
    timed("get_share", lambda: store.get_share(share.id))
    timed("find_share by name", lambda: store.find_share("base"))
    timed("update_share", lambda: store.update_share(share.id, size_gib=next(counter) + 1))
    timed("snapshot (31 shares)", store.snapshot)
    timed("revision", store.revision)
    timed("heartbeat (renewal)", lambda: store.heartbeat(GatewayRecord(id="hv"), 10))
    with capsys.disabled():
        print("\netcd store, median ms:", {k: round(v, 2) for k, v in figures.items()})
    assert all(v < 250 for v in figures.values()), figures


# --- a gateway losing etcd -------------------------------------------------------------------


@pytest.mark.slow
def test_gateway_serves_through_the_grace_then_fails_closed(
    own_etcd: EtcdServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A StoreFollower (what ``vshare gateway run --store etcd://...`` runs) keeps the shares
    it knows while etcd is gone, for the grace period, then serves none; when etcd is back
    it serves the store's shares again. Logs and metrics say so."""
    import anyio
    from prometheus_client import CollectorRegistry

    from vshare.gateway.config import Share
    from vshare.gateway.follow import StoreFollower
    from vshare.gateway.instances import InstanceTable
    from vshare.store import ShareStatus

    caplog.set_level(logging.INFO, logger="vshare.gateway")
    backend = "posix:/srv/vol"
    store = EtcdStore([own_etcd.endpoint], prefix=prefix)
    store.create_share(make_share("alpha", status=ShareStatus.AVAILABLE, backend=backend))
    served: list[tuple[float, list[str]]] = []
    registry = CollectorRegistry()
    grace = 2.0

    def apply_shares(shares: Sequence[Share]) -> None:
        served.append((time.monotonic(), [s.name for s in shares]))

    def metric(name: str) -> float | None:
        return registry.get_sample_value(name)

    follower = StoreFollower(
        store, backend=backend, apply_shares=apply_shares, instances=InstanceTable(),
        gateway_id="hv-1", ttl=3.0, grace=grace, registry=registry,
    )  # fmt: skip

    async def scenario() -> None:
        await follower.load()
        assert served[-1][1] == ["alpha"]
        async with anyio.create_task_group() as tg:
            tg.start_soon(follower.run)
            await anyio.sleep(0.3)
            assert metric("vshare_store_up") == 1
            own_etcd.stop()
            lost = time.monotonic()
            with anyio.fail_after(grace + 6):
                while not follower.failed_closed:
                    await anyio.sleep(0.05)
            closed_at, names = served[-1]
            assert names == []
            # The grace runs from the store's last answer (at most ~1 s before etcd went:
            # the follower waits one second at a time); retries are 1 s apart.
            assert grace <= closed_at - follower.last_contact < grace + 1.5
            assert closed_at - lost >= grace - 1.2
            assert all(n == ["alpha"] for t, n in served if t < closed_at)
            assert metric("vshare_store_up") == 0
            assert metric("vshare_store_failed_closed") == 1
            await anyio.to_thread.run_sync(own_etcd.start)
            with anyio.fail_after(10):
                while follower.failed_closed:
                    await anyio.sleep(0.05)
            assert served[-1][1] == ["alpha"]
            assert metric("vshare_store_up") == 1
            assert metric("vshare_store_failed_closed") == 0
            tg.cancel_scope.cancel()

    try:
        anyio.run(scenario)
    finally:
        store.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("store unreachable" in m and f"up to {grace:g} s" in m for m in messages)
    assert any("failing closed" in m for m in messages)
    assert any("serving again" in m for m in messages)


# --- a fleet: two gateways following one etcd --------------------------------------------------


@pytest.mark.slow
def test_two_gateways_follow_one_etcd_live(
    etcd: EtcdServer, prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two gateways (each its own EtcdStore, as on two hypervisors) and a control plane
    writing through a third: a new rule opens the share on both within a second, a deny
    closes it on both, and both are listed healthy."""
    import errno

    import anyio

    from vshare.backend.posix import PosixBackend
    from vshare.client import open_client
    from vshare.gateway.config import GatewayConfig
    from vshare.gateway.follow import StoreFollower
    from vshare.gateway.server import Gateway
    from vshare.store import ShareStatus
    from vshare.testing.store_conformance import make_rule

    volume = tmp_path / "vol"
    (volume / "shares" / "docs").mkdir(parents=True)
    backend_uri = f"posix:{volume}"
    control = EtcdStore([etcd.endpoint], prefix=prefix)
    share = control.create_share(
        make_share("docs", status=ShareStatus.AVAILABLE, backend=backend_uri, path="shares/docs")
    )
    delays: dict[str, list[float]] = {"allow": [], "deny": []}

    async def attach_ok(uri: str) -> bool:
        try:
            async with open_client(uri, 65536) as client:
                await client.attach("docs")
        except OSError as exc:
            assert exc.errno in (errno.EACCES, errno.ENOENT), exc
            return False
        return True

    async def scenario() -> None:
        stores, uris = [], []
        async with anyio.create_task_group() as tg:
            for n in range(2):
                store = EtcdStore([etcd.endpoint], prefix=prefix)
                stores.append(store)
                gateway = Gateway(GatewayConfig(backend=backend_uri, store="etcd://x:1"),
                                  PosixBackend(str(volume)))  # fmt: skip
                follower = StoreFollower(
                    store, backend=backend_uri, apply_shares=gateway.set_shares,
                    instances=gateway.instances, gateway_id=f"hv-{n}", ttl=3.0,
                )  # fmt: skip
                await follower.load()
                sock = tmp_path / f"gw{n}.sock"
                await tg.start(gateway.serve, [f"unix://{sock}"])
                tg.start_soon(follower.run)
                uris.append(f"unix://{sock}")
            try:
                for uri in uris:
                    assert not await attach_ok(uri)
                for _ in range(3):
                    rule = await anyio.to_thread.run_sync(
                        control.add_rule,
                        make_rule(share.id, str(os.getuid()), access_type="user"),
                    )
                    start = time.monotonic()
                    with anyio.fail_after(5):
                        for uri in uris:
                            while not await attach_ok(uri):
                                await anyio.sleep(0.01)
                    delays["allow"].append(time.monotonic() - start)
                    await anyio.to_thread.run_sync(control.delete_rule, rule.id)
                    start = time.monotonic()
                    with anyio.fail_after(5):
                        for uri in uris:
                            while await attach_ok(uri):
                                await anyio.sleep(0.01)
                    delays["deny"].append(time.monotonic() - start)
                listed = await anyio.to_thread.run_sync(control.list_gateways)
                assert [(g.gateway.id, g.healthy) for g in listed] == [
                    ("hv-0", True), ("hv-1", True),
                ]  # fmt: skip
            finally:
                tg.cancel_scope.cancel()
        for store in stores:
            store.close()

    try:
        anyio.run(scenario)
    finally:
        control.close()
    with capsys.disabled():
        print("\netcd fleet: rule change → both gateways enforce, s:",
              {k: [round(d, 3) for d in v] for k, v in delays.items()})  # fmt: skip
    assert max(delays["allow"]) < 1.0, delays
    assert max(delays["deny"]) < 1.0, delays
