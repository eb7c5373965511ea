"""A follower is not made to read the whole store by gateways registering: in a fleet
every gateway's registration is a store write that wakes every follower, and reading a
full snapshot for each would cost N * N snapshot reads when N gateways (re)start. The
follower moves past changes no snapshot holds (gateways, tokens) and still reads one for
anything it serves. Run against both stores."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import anyio
import pytest

from vshare.gateway import InstanceTable, Share, StoreFollower
from vshare.policy import Level
from vshare.store import GatewayRecord, RuleState, ShareStatus, Snapshot, Store
from vshare.store.etcd import EtcdStore
from vshare.store.sqlite import SqliteStore
from vshare.testing.etcd import EtcdServer
from vshare.testing.store_conformance import make_instance, make_rule, make_share


class CountingEtcd(EtcdStore):
    snapshots = 0

    def snapshot(self) -> Snapshot:
        self.snapshots += 1
        return super().snapshot()


class CountingSqlite(SqliteStore):
    snapshots = 0

    def snapshot(self) -> Snapshot:
        self.snapshots += 1
        return super().snapshot()


@pytest.fixture(params=["sqlite", "etcd"])
def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Store, Store, Callable[[], int]]]:
    """(the follower's store, counting its snapshots; a second one, as the API's)."""
    if request.param == "sqlite":
        path = tmp_path / "state.db"
        mine_s, other_s = CountingSqlite(path), SqliteStore(path)
        yield mine_s, other_s, lambda: mine_s.snapshots
        mine_s.close()
        other_s.close()
        return
    etcd: EtcdServer = request.getfixturevalue("etcd")
    prefix = f"/follow-{uuid.uuid4().hex[:8]}/"
    mine_e, other_e = (
        CountingEtcd([etcd.endpoint], prefix=prefix),
        EtcdStore([etcd.endpoint], prefix=prefix),
    )
    yield mine_e, other_e, lambda: mine_e.snapshots
    mine_e.close()
    other_e.close()


def test_registrations_wake_no_snapshot_reads(
    stores: tuple[Store, Store, Callable[[], int]],
) -> None:
    mine, other, snapshots = stores
    share = other.create_share(make_share("docs", status=ShareStatus.AVAILABLE,
                                          backend="posix:/v", path="shares/docs"))  # fmt: skip
    served: list[Sequence[Share]] = []
    follower = StoreFollower(mine, backend="posix:/v", apply_shares=served.append,
                             instances=InstanceTable(), gateway_id="me", ttl=30)  # fmt: skip

    async def caught_up() -> None:
        target = await anyio.to_thread.run_sync(other.revision)
        with anyio.fail_after(5):
            while follower.revision < target:
                await anyio.sleep(0.01)

    async def scenario() -> None:
        await follower.load()
        async with anyio.create_task_group() as tg:
            tg.start_soon(follower.run)
            await caught_up()  # its own registration (the first heartbeat) included
            before = snapshots()
            for n in range(20):  # a fleet restarting: 20 registrations, 20 revisions
                await anyio.to_thread.run_sync(other.heartbeat, GatewayRecord(id=f"hv-{n}"), 30)
            await caught_up()
            assert snapshots() == before, "registrations made the follower read the store"
            rule = await anyio.to_thread.run_sync(
                other.add_rule, make_rule(share.id, str(os.getuid()), access_type="user")
            )
            await caught_up()
            assert snapshots() == before, "a rule change is read from the feed alone"
            [docs] = served[-1]
            assert [r.access_to for r in docs.access] == [rule.access_to]
            tg.cancel_scope.cancel()
        # The follower stopped; meanwhile two changes, and the feed compacted past it:
        # it cannot catch up from the feed and reads the whole store once.
        second = other.add_rule(make_rule(share.id, "10.1.2.3/32"))
        other.update_share(share.id, size_gib=99)
        other.compact(other.revision())
        await follower.load()  # one step: wait, catch up
        assert snapshots() == before + 1
        [docs] = served[-1]
        assert sorted(r.access_to for r in docs.access) == sorted(
            [rule.access_to, second.access_to]
        )
        assert follower._view is not None and follower._view.revision == follower.revision

    anyio.run(scenario)


def test_the_followed_view_equals_the_store(stores: tuple[Store, Store, Callable[[], int]]) -> None:
    """Many kinds of change through the feed alone: the follower's view is the snapshot."""
    mine, other, snapshots = stores
    follower = StoreFollower(mine, backend="posix:/v", apply_shares=lambda _: None,
                             instances=InstanceTable(), gateway_id="me", ttl=30)  # fmt: skip

    def settled(snapshot: Snapshot) -> bool:
        unsettled = {RuleState.QUEUED_TO_APPLY, RuleState.QUEUED_TO_DENY, RuleState.DENYING}
        return (
            follower.revision == snapshot.revision
            and follower._view == snapshot
            and not any(r.state in unsettled for r in snapshot.rules)
        )

    async def scenario() -> None:
        await follower.load()
        async with anyio.create_task_group() as tg:
            tg.start_soon(follower.run)
            share = other.create_share(make_share("a", status=ShareStatus.AVAILABLE))
            other.create_share(make_share("b"))
            rule = other.add_rule(make_rule(share.id, "10.0.0.0/8"))
            other.update_rule(rule.id, level=Level.RO)
            other.put_instance(make_instance("vm-1", cid=7))
            other.put_instance(make_instance("vm-2", cid=8))
            other.remove_instance("vm-1")
            other.delete_rule(other.add_rule(make_rule(share.id, "192.0.2.1")).id)
            # Until it has made and read back its own writes (rules it moved to active or
            # deleted): equal views alone may hide a write of its still in flight.
            with anyio.fail_after(5):
                while not settled(other.snapshot()):
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        assert follower._view == other.snapshot()
        assert {r.state for r in follower._view.rules} >= {RuleState.ACTIVE}
        assert snapshots() == 1  # the first load only

    anyio.run(scenario)
