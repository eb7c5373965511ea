"""The one conformance suite every :class:`~vshare.store.Store` runs, unchanged.

How an implementation runs it (see ``tests/store/test_sqlite.py``)::

    @pytest.fixture
    def store(tmp_path) -> Iterator[Store]:
        s = MyStore(...)            # a fresh, empty store
        yield s
        s.close()

    @pytest.fixture
    def second_store(store, tmp_path) -> Iterator[Store]:
        s = MyStore(...)            # another Store object over the same data as ``store``
        yield s                     # (another connection, as another process would have)
        s.close()

    class TestMineConformance(StoreConformance): ...

``second_store`` is what makes the cross-connection tests (wake-ups, concurrent writers,
uniqueness across writers) mean something; an implementation that cannot open its data
twice (a private in-memory database) may return ``store`` itself.

Time: the suite takes a few seconds; the timing assertions are loose (a wake-up within
0.5 s, a gateway ttl of :attr:`StoreConformance.gateway_ttl`) so that a loaded two-core
machine still passes, and sleeps appear only where a duration is what is measured.
The concurrency tests are races by nature: a store that gets isolation wrong fails them
most of the time, not every time.
"""

from __future__ import annotations

import threading
import time
import uuid as uuid_mod
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vshare.policy import Instance, InstanceRegistry, Level
from vshare.store import (
    DEFAULT_QUOTA,
    UNLIMITED,
    Compacted,
    Conflict,
    GatewayRecord,
    InstanceRecord,
    NotFound,
    OverQuota,
    QuotaRecord,
    RuleRecord,
    RuleState,
    ShareRecord,
    ShareStatus,
    Store,
    StoreUnavailable,
    TokenRecord,
    apply_changes,
    hash_token,
)
from vshare.transport import PeerIdentity

__all__ = ["StoreConformance", "apply_changes", "make_instance", "make_rule", "make_share"]

FP_A = "a" * 64
FP_B = "b" * 64


def make_share(name: str = "alpha", tenant: str = "acme", **fields: Any) -> ShareRecord:
    """A valid new share record (no id: the store assigns one)."""
    values: dict[str, Any] = {
        "name": name, "tenant": tenant, "backend": "posix:/srv/vol",
        "path": f"shares/{name}", "size_gib": 10,
    }  # fmt: skip
    values.update(fields)
    return ShareRecord(**values)


def make_rule(share_id: str, access_to: str = "10.0.0.0/8", **fields: Any) -> RuleRecord:
    """A valid new ``ip`` rule (unless ``access_type`` is given) for ``share_id``."""
    values: dict[str, Any] = {"share_id": share_id, "access_type": "ip", "access_to": access_to}
    values.update(fields)
    return RuleRecord(**values)


def make_instance(
    uuid: str = "vm-1", tenant: str = "acme", *, cid: int | None = 3, **identities: Any
) -> InstanceRecord:
    """An instance record with a CID (unless ``cid=None``) and the other identities given."""
    if cid is not None:
        identities.setdefault("cids", frozenset({cid}))
    return InstanceRecord(instance=Instance(uuid=uuid, tenant=tenant, name=uuid, **identities))


def _vsock(cid: int) -> PeerIdentity:
    return PeerIdentity(kind="vsock", cid=cid, port=1024)


def _race(
    stores: tuple[Store, Store], act: Callable[[Store, int], object], refused: type[Exception]
) -> list[str]:
    """Run ``act(store, n)`` in 4 threads at once, alternating the two store objects;
    the sorted outcomes: "ok", or "refused" for ``refused`` (anything else fails)."""
    barrier = threading.Barrier(4)
    outcomes: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        barrier.wait()
        try:
            act(stores[n % 2], n)
            result = "ok"
        except refused:
            result = "refused"
        with lock:
            outcomes.append(result)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sorted(outcomes)


def _elapsed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.monotonic()
    result = fn()
    return result, time.monotonic() - start


class StoreConformance:
    """Every contract of the ``Store`` interface. Subclass it in a test module that
    provides the ``store`` and ``second_store`` fixtures (see the module note)."""

    #: The gateway ttl (seconds) the health test uses: the shortest the implementation
    #: honours. A store built on leases with whole-second TTLs (etcd) overrides it.
    gateway_ttl: float = 0.2

    # --- shares ---------------------------------------------------------------------------

    def test_create_share_assigns_id_and_revision(self, store: Store) -> None:
        before = store.revision()
        made = store.create_share(make_share())
        assert str(uuid_mod.UUID(made.id, version=4)) == made.id
        assert made.revision == store.revision() == before + 1
        assert made.created_at.tzinfo is UTC
        assert abs(datetime.now(UTC) - made.created_at) < timedelta(minutes=1)
        assert store.get_share(made.id) == made
        assert (made.name, made.tenant, made.path, made.size_gib, made.status) == (
            "alpha", "acme", "shares/alpha", 10, ShareStatus.CREATING,
        )  # fmt: skip

    def test_create_share_keeps_given_id_and_time(self, store: Store) -> None:
        when = datetime(2020, 5, 17, 12, 0, 0, 123456, tzinfo=UTC)
        made = store.create_share(make_share(id="share-1", created_at=when, uid=1000, gid=50))
        got = store.get_share("share-1")
        assert got == made
        assert (got.id, got.created_at, got.uid, got.gid) == ("share-1", when, 1000, 50)

    def test_find_share_by_name_or_id(self, store: Store) -> None:
        made = store.create_share(make_share("alpha"))
        store.create_share(make_share("beta"))
        assert store.find_share("alpha") == made
        assert store.find_share(made.id) == made
        assert store.find_share("gamma") is None
        assert store.find_share("") is None

    def test_list_shares_by_tenant_ordered_by_name(self, store: Store) -> None:
        for name, tenant in (("c", "acme"), ("a", "globex"), ("b", "acme")):
            store.create_share(make_share(name, tenant))
        assert [s.name for s in store.list_shares()] == ["a", "b", "c"]
        assert [s.name for s in store.list_shares("acme")] == ["b", "c"]
        assert store.list_shares("initech") == []

    def test_share_name_is_unique_across_tenants(self, store: Store) -> None:
        store.create_share(make_share("alpha", "acme"))
        revision = store.revision()
        with pytest.raises(Conflict, match="alpha"):
            store.create_share(make_share("alpha", "globex"))
        assert store.revision() == revision
        assert len(store.list_shares()) == 1

    def test_share_id_is_unique(self, store: Store) -> None:
        store.create_share(make_share("alpha", id="s1"))
        with pytest.raises(Conflict):
            store.create_share(make_share("beta", id="s1"))
        assert store.find_share("beta") is None

    def test_names_and_ids_share_one_namespace(self, store: Store) -> None:
        first = store.create_share(make_share("alpha", id="s1"))
        with pytest.raises(Conflict):
            store.create_share(make_share("s1"))  # a name equal to another share's id
        with pytest.raises(Conflict):
            store.create_share(make_share("beta", id="alpha"))  # an id equal to a name
        second = store.create_share(make_share("beta"))
        with pytest.raises(Conflict):
            store.update_share(second.id, name="s1")
        assert store.find_share("s1") == first
        assert store.find_share("alpha") == first

    def test_missing_share_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFound):
            store.get_share("nope")
        with pytest.raises(NotFound):
            store.update_share("nope", size_gib=2)
        with pytest.raises(NotFound):
            store.delete_share("nope")
        with pytest.raises(NotFound):
            store.list_rules("nope")

    def test_update_share(self, store: Store) -> None:
        made = store.create_share(make_share())
        new = store.update_share(
            made.id, name="renamed", size_gib=20, status=ShareStatus.AVAILABLE, uid=7, gid=8
        )
        assert new.revision == store.revision() == made.revision + 1
        assert (new.name, new.size_gib, new.status, new.uid, new.gid) == (
            "renamed", 20, ShareStatus.AVAILABLE, 7, 8,
        )  # fmt: skip
        assert (new.id, new.tenant, new.path, new.created_at) == (
            made.id, made.tenant, made.path, made.created_at,
        )  # fmt: skip
        assert store.get_share(made.id) == new
        assert store.find_share("alpha") is None
        assert store.find_share("renamed") == new

    def test_share_cache_round_trips_and_updates(self, store: Store) -> None:
        assert store.create_share(make_share("plain")).cache == "meta"  # the default
        made = store.create_share(make_share(cache="all"))
        assert store.get_share(made.id).cache == "all"
        assert store.find_share("alpha") == made
        new = store.update_share(made.id, expect_revision=made.revision, cache="none")
        assert (new.cache, new.revision) == ("none", made.revision + 1)
        assert store.get_share(made.id) == new
        assert store.changes_since(made.revision)[-1].record == new
        assert store.update_share(made.id, cache="none") == new  # the same value: no write
        with pytest.raises(ValueError, match="cache"):
            store.update_share(made.id, cache="most")  # type: ignore[arg-type]
        assert store.get_share(made.id) == new
        assert store.revision() == new.revision

    def test_update_share_accepts_status_string(self, store: Store) -> None:
        made = store.create_share(make_share())
        new = store.update_share(made.id, status="extending")  # type: ignore[arg-type]
        assert new.status is ShareStatus.EXTENDING

    def test_update_share_with_same_values_is_not_a_write(self, store: Store) -> None:
        made = store.create_share(make_share())
        assert store.update_share(made.id, size_gib=made.size_gib, name=made.name) == made
        assert store.update_share(made.id) == made
        assert store.revision() == made.revision

    def test_update_share_validates(self, store: Store) -> None:
        made = store.create_share(make_share())
        for bad in ({"size_gib": 0}, {"name": "a/b"}, {"status": "gone"}, {"uid": -1}):
            with pytest.raises(ValueError):
                store.update_share(made.id, **bad)
        assert store.get_share(made.id) == made
        assert store.revision() == made.revision

    def test_update_share_rename_to_taken_name(self, store: Store) -> None:
        store.create_share(make_share("alpha"))
        beta = store.create_share(make_share("beta"))
        with pytest.raises(Conflict, match="alpha"):
            store.update_share(beta.id, name="alpha")
        assert store.get_share(beta.id) == beta

    def test_update_share_expect_revision(self, store: Store) -> None:
        made = store.create_share(make_share())
        first = store.update_share(made.id, expect_revision=made.revision, size_gib=11)
        with pytest.raises(Conflict, match="revision"):
            store.update_share(made.id, expect_revision=made.revision, size_gib=12)
        assert store.get_share(made.id) == first
        second = store.update_share(made.id, expect_revision=first.revision, size_gib=12)
        assert second.size_gib == 12

    def test_update_share_expect_revision_across_writers(
        self, store: Store, second_store: Store
    ) -> None:
        made = store.create_share(make_share())
        second_store.update_share(made.id, size_gib=30)
        with pytest.raises(Conflict):
            store.update_share(made.id, expect_revision=made.revision, size_gib=40)
        assert store.get_share(made.id).size_gib == 30

    def test_delete_share_removes_its_rules(self, store: Store) -> None:
        alpha = store.create_share(make_share("alpha"))
        beta = store.create_share(make_share("beta"))
        rules = [store.add_rule(make_rule(alpha.id, f"10.0.{i}.0/24")) for i in range(3)]
        other = store.add_rule(make_rule(beta.id))
        before = store.revision()
        store.delete_share(alpha.id)
        assert store.revision() == before + 1
        with pytest.raises(NotFound):
            store.get_share(alpha.id)
        for rule in rules:
            with pytest.raises(NotFound):
                store.get_rule(rule.id)
        assert store.list_rules(beta.id) == [other]
        changes = store.changes_since(before)
        assert {c.revision for c in changes} == {before + 1}
        assert sorted((c.kind, c.key, c.op) for c in changes) == sorted(
            [("rule", r.id, "delete") for r in rules] + [("share", alpha.id, "delete")]
        )
        assert all(c.record is None for c in changes)

    def test_a_deleted_share_name_can_be_reused(self, store: Store) -> None:
        made = store.create_share(make_share("alpha"))
        store.delete_share(made.id)
        again = store.create_share(make_share("alpha"))
        assert again.id != made.id
        assert store.find_share("alpha") == again

    # --- access rules ---------------------------------------------------------------------

    def test_add_get_list_rules(self, store: Store) -> None:
        share = store.create_share(make_share())
        first = store.add_rule(make_rule(share.id, "192.0.2.0/24", level=Level.RO))
        second = store.add_rule(
            make_rule(share.id, "vm-1", access_type="instance", state=RuleState.ACTIVE)
        )
        third = store.add_rule(make_rule(share.id, "1000", access_type="user"))
        assert str(uuid_mod.UUID(first.id, version=4)) == first.id
        assert first.revision == second.revision - 1 == third.revision - 2
        assert store.get_rule(second.id) == second
        assert store.list_rules(share.id) == [first, second, third]
        assert first.state is RuleState.QUEUED_TO_APPLY
        assert first.to_policy().level is Level.RO

    def test_rule_for_missing_share(self, store: Store) -> None:
        revision = store.revision()
        with pytest.raises(NotFound):
            store.add_rule(make_rule("nope"))
        assert store.revision() == revision

    def test_missing_rule_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFound):
            store.get_rule("nope")
        with pytest.raises(NotFound):
            store.update_rule("nope", state=RuleState.ACTIVE)
        with pytest.raises(NotFound):
            store.delete_rule("nope")

    def test_duplicate_rule_conflicts(self, store: Store) -> None:
        share = store.create_share(make_share("alpha"))
        other = store.create_share(make_share("beta"))
        store.add_rule(make_rule(share.id, "10.0.0.0/8"))
        revision = store.revision()
        with pytest.raises(Conflict):
            store.add_rule(make_rule(share.id, "10.0.0.0/8", level=Level.RO))
        with pytest.raises(Conflict):  # the same network, written another way
            store.add_rule(make_rule(share.id, "10.1.2.3/8"))
        assert store.revision() == revision
        assert len(store.list_rules(share.id)) == 1
        # Same target on another share, or another type with the same text: both fine.
        store.add_rule(make_rule(other.id, "10.0.0.0/8"))
        store.add_rule(make_rule(share.id, "10.0.0.0/16"))

    def test_duplicate_cert_rule_by_fingerprint_spelling(self, store: Store) -> None:
        share = store.create_share(make_share())
        store.add_rule(make_rule(share.id, FP_A, access_type="cert"))
        colons = ":".join(FP_A.upper()[i : i + 2] for i in range(0, 64, 2))
        with pytest.raises(Conflict):
            store.add_rule(make_rule(share.id, colons, access_type="cert"))

    def test_a_deleted_rule_does_not_block_a_new_one(self, store: Store) -> None:
        share = store.create_share(make_share())
        old = store.add_rule(make_rule(share.id))
        store.update_rule(old.id, state=RuleState.DELETED)
        new = store.add_rule(make_rule(share.id))
        assert [r.id for r in store.list_rules(share.id)] == [old.id, new.id]
        # Bringing the tombstone back would make two live rules.
        with pytest.raises(Conflict):
            store.update_rule(old.id, state=RuleState.ACTIVE)
        assert store.get_rule(old.id).state is RuleState.DELETED

    def test_rule_ids_are_unique(self, store: Store) -> None:
        share = store.create_share(make_share())
        store.add_rule(make_rule(share.id, "10.0.0.0/8", id="r1"))
        with pytest.raises(Conflict):
            store.add_rule(make_rule(share.id, "192.0.2.0/24", id="r1"))

    def test_update_rule(self, store: Store) -> None:
        share = store.create_share(make_share())
        rule = store.add_rule(make_rule(share.id))
        applying = store.update_rule(rule.id, state=RuleState.APPLYING)
        active = store.update_rule(rule.id, state=RuleState.ACTIVE, level=Level.RO)
        assert (active.state, active.level) == (RuleState.ACTIVE, Level.RO)
        assert active.revision == applying.revision + 1 == store.revision()
        assert (active.share_id, active.access_to, active.created_at) == (
            rule.share_id, rule.access_to, rule.created_at,
        )  # fmt: skip
        assert store.get_rule(rule.id) == active
        assert store.update_rule(rule.id, state=RuleState.ACTIVE) == active
        assert store.revision() == active.revision
        with pytest.raises(ValueError):
            store.update_rule(rule.id, state="bogus")  # type: ignore[arg-type]
        with pytest.raises(Conflict):
            store.update_rule(rule.id, expect_revision=rule.revision, level=Level.RW)
        assert store.get_rule(rule.id) == active

    def test_delete_rule(self, store: Store) -> None:
        share = store.create_share(make_share())
        keep = store.add_rule(make_rule(share.id, "10.0.0.0/8"))
        gone = store.add_rule(make_rule(share.id, "192.0.2.0/24"))
        store.delete_rule(gone.id)
        with pytest.raises(NotFound):
            store.get_rule(gone.id)
        assert store.list_rules(share.id) == [keep]
        with pytest.raises(NotFound):
            store.delete_rule(gone.id)

    # --- instances ------------------------------------------------------------------------

    def test_put_get_list_remove_instances(self, store: Store) -> None:
        one = store.put_instance(make_instance("vm-1", "acme", cid=3))
        two = store.put_instance(make_instance("vm-2", "globex", cid=4, ips={"192.0.2.9"}))
        three = store.put_instance(make_instance("vm-0", "acme", cid=5))
        assert store.get_instance("vm-2") == two
        assert store.get_instance("vm-2").instance.ips == frozenset({"192.0.2.9"})
        assert store.list_instances() == [three, one, two]
        assert store.list_instances("acme") == [three, one]
        store.remove_instance("vm-1")
        with pytest.raises(NotFound):
            store.get_instance("vm-1")
        assert store.list_instances() == [three, two]

    def test_missing_instance_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFound):
            store.get_instance("nope")
        with pytest.raises(NotFound):
            store.remove_instance("nope")

    def test_put_instance_replaces_and_frees_old_identities(self, store: Store) -> None:
        first = store.put_instance(make_instance("vm-1", cid=3))
        second = store.put_instance(make_instance("vm-1", "globex", cid=9))
        assert second.created_at == first.created_at  # created, not updated, then
        assert store.get_instance("vm-1").instance.cids == frozenset({9})
        assert store.get_instance("vm-1").tenant == "globex"
        assert store.resolve(_vsock(3)) is None
        # The freed CID can now belong to someone else.
        store.put_instance(make_instance("vm-2", cid=3))
        found = store.resolve(_vsock(3))
        assert found is not None
        assert found.uuid == "vm-2"

    def test_put_same_instance_is_not_a_write(self, store: Store) -> None:
        first = store.put_instance(make_instance())
        revision = store.revision()
        assert store.put_instance(make_instance()) == first
        assert store.revision() == revision

    def test_identity_claimed_by_two_instances_conflicts(self, store: Store) -> None:
        store.put_instance(make_instance("vm-1", cid=3, certs={FP_A}))
        revision = store.revision()
        for clash in (
            make_instance("vm-2", cid=3),
            make_instance("vm-2", cid=4, certs={FP_A.upper()}),
        ):
            with pytest.raises(Conflict, match="vm-1"):
                store.put_instance(clash)
        assert store.revision() == revision
        with pytest.raises(NotFound):
            store.get_instance("vm-2")
        assert store.resolve(_vsock(4)) is None

    def test_identity_conflict_across_writers(self, store: Store, second_store: Store) -> None:
        store.put_instance(make_instance("vm-1", cid=3))
        with pytest.raises(Conflict):
            second_store.put_instance(make_instance("vm-2", cid=3))

    def test_resolve_by_each_identity(self, store: Store) -> None:
        store.put_instance(make_instance("vm-cid", cid=3))
        store.put_instance(make_instance("vm-sock", cid=None, sockets={"/run/vm/a.vsock"}))
        store.put_instance(make_instance("vm-ip", cid=None, ips={"192.0.2.7"}))
        store.put_instance(make_instance("vm-cert", cid=None, certs={FP_B}, ips={"192.0.2.8"}))
        registry: InstanceRegistry = store  # a Store is an InstanceRegistry
        cases = {
            "vm-cid": PeerIdentity(kind="vsock", cid=3),
            "vm-sock": PeerIdentity(kind="hvsock", socket_path="/run/vm//a.vsock"),
            "vm-ip": PeerIdentity(kind="tcp", address="::ffff:192.0.2.7", port=5640),
            # The certificate wins over an address that belongs to someone else.
            "vm-cert": PeerIdentity(kind="tls", address="192.0.2.7", cert_fingerprint=FP_B),
        }
        for uuid, facts in cases.items():
            found = registry.resolve(facts)
            assert found is not None, facts
            assert isinstance(found, Instance)
            assert found.uuid == uuid
        for nobody in (
            PeerIdentity(kind="vsock", cid=99),
            PeerIdentity(kind="unix", uid=0),
            PeerIdentity(kind="vsock", cid=3 + 1000, address="192.0.2.7"),  # ip only over tcp
            PeerIdentity(kind="tcp", address="192.0.2.99"),
        ):
            assert registry.resolve(nobody) is None, nobody

    # --- tokens ---------------------------------------------------------------------------

    def test_tokens_found_by_hash_only(self, store: Store) -> None:
        secret = "s3cret-token-value"
        start = store.revision()
        admin = store.add_token(TokenRecord(name="admin", hash=hash_token(secret)))
        tenant = store.add_token(TokenRecord(name="acme-ci", hash=hash_token("x"), tenant="acme"))
        assert store.find_token(hash_token(secret)) == admin
        assert admin.is_admin and not tenant.is_admin
        assert store.find_token(hash_token("x")) == tenant
        assert store.find_token(secret) is None
        assert store.find_token(hash_token("other")) is None
        assert store.list_tokens() == [tenant, admin]
        # Nothing the store hands out carries the secret.
        feed = store.changes_since(start)
        assert all(secret not in repr(c) for c in feed)
        assert any(c.kind == "token" and c.record == admin for c in feed)

    def test_token_name_and_hash_are_unique(self, store: Store) -> None:
        store.add_token(TokenRecord(name="a", hash=hash_token("one")))
        with pytest.raises(Conflict):
            store.add_token(TokenRecord(name="a", hash=hash_token("two")))
        with pytest.raises(Conflict):
            store.add_token(TokenRecord(name="b", hash=hash_token("one")))
        assert [t.name for t in store.list_tokens()] == ["a"]

    def test_remove_token(self, store: Store) -> None:
        store.add_token(TokenRecord(name="a", hash=hash_token("one")))
        store.remove_token("a")
        assert store.find_token(hash_token("one")) is None
        assert store.list_tokens() == []
        with pytest.raises(NotFound):
            store.remove_token("a")

    # --- gateways -------------------------------------------------------------------------

    def test_gateway_heartbeat_and_health(self, store: Store) -> None:
        gateway = GatewayRecord(id="hv-1", addresses=("vsock://any:564",), version="0.1")
        ttl = self.gateway_ttl
        status = store.heartbeat(gateway, ttl)
        beat = time.monotonic()
        assert status.healthy and status.gateway == gateway
        [listed] = store.list_gateways()
        assert listed.healthy and listed.gateway == gateway
        assert listed.ttl_seconds == pytest.approx(ttl)
        assert abs(datetime.now(UTC) - listed.last_seen) < timedelta(seconds=5)
        # Poll (bounded) for the flip: what is measured is when health runs out.
        while store.list_gateways()[0].healthy:
            assert time.monotonic() - beat < ttl + 3.0, "still healthy long after its ttl"
            time.sleep(0.02)
        assert time.monotonic() - beat >= ttl * 0.75
        assert store.heartbeat(gateway, 30).healthy
        assert store.list_gateways()[0].healthy

    def test_gateway_renewal_is_not_a_change(self, store: Store) -> None:
        gateway = GatewayRecord(id="hv-1", addresses=("vsock://any:564",))
        store.heartbeat(gateway, 10)
        registered = store.revision()
        store.heartbeat(gateway, 10)
        store.heartbeat(gateway, 20)
        assert store.revision() == registered
        moved = GatewayRecord(id="hv-1", addresses=("vsock://any:565",), version="0.2")
        store.heartbeat(moved, 10)
        assert store.revision() == registered + 1
        [listed] = store.list_gateways()
        assert listed.gateway == moved

    def test_gateway_load_is_reported_and_is_not_a_change(self, store: Store) -> None:
        gateway = GatewayRecord(id="hv-1", addresses=("vsock://any:564",))
        store.heartbeat(gateway, 10)
        registered = store.revision()
        feed = store.changes_since(registered - 1)
        for sessions, inflight in ((3, 1), (40, 7), (0, 0)):
            loaded = gateway.with_load(sessions, inflight)
            assert store.heartbeat(loaded, 10).gateway == loaded
            [listed] = store.list_gateways()
            assert (listed.gateway.sessions, listed.gateway.requests_in_flight) == (
                sessions, inflight,
            )  # fmt: skip
            assert listed.gateway.registration() == gateway and listed.healthy
        # Load moves at every heartbeat: never a revision, never a change for followers.
        assert store.revision() == registered
        assert store.changes_since(registered - 1) == feed
        assert [c.record for c in feed if c.kind == "gateway"] == [gateway]
        store.heartbeat(gateway.with_load(5, 0), 10)
        moved = GatewayRecord(id="hv-1", addresses=("vsock://any:565",)).with_load(5, 0)
        store.heartbeat(moved, 10)
        assert store.revision() == registered + 1
        [change] = store.changes_since(registered)
        assert change.record == moved.registration()  # the feed carries no load
        assert store.list_gateways()[0].gateway == moved
        for bad in (-1, 1.5, True):
            with pytest.raises(ValueError):
                GatewayRecord(id="hv-2", sessions=bad)  # type: ignore[arg-type]
            with pytest.raises(ValueError):
                GatewayRecord(id="hv-2", requests_in_flight=bad)  # type: ignore[arg-type]

    def test_list_and_remove_gateways(self, store: Store) -> None:
        store.heartbeat(GatewayRecord(id="hv-b"), 10)
        store.heartbeat(GatewayRecord(id="hv-a", host="a.example"), 10)
        assert [g.gateway.id for g in store.list_gateways()] == ["hv-a", "hv-b"]
        store.remove_gateway("hv-a")
        assert [g.gateway.id for g in store.list_gateways()] == ["hv-b"]
        with pytest.raises(NotFound):
            store.remove_gateway("hv-a")
        for bad in (0, -1.0, float("nan")):
            with pytest.raises(ValueError):
                store.heartbeat(GatewayRecord(id="hv-c"), bad)

    # --- revision and change feed ---------------------------------------------------------

    def test_every_write_bumps_the_revision(self, store: Store) -> None:
        share = store.create_share(make_share())
        rule = store.add_rule(make_rule(share.id))
        writes: list[Callable[[], object]] = [
            lambda: store.create_share(make_share("beta")),
            lambda: store.update_share(share.id, size_gib=99),
            lambda: store.add_rule(make_rule(share.id, "192.0.2.0/24")),
            lambda: store.update_rule(rule.id, state=RuleState.ACTIVE),
            lambda: store.delete_rule(rule.id),
            lambda: store.put_instance(make_instance()),
            lambda: store.put_instance(make_instance(cid=4)),
            lambda: store.remove_instance("vm-1"),
            lambda: store.add_token(TokenRecord(name="t", hash=hash_token("t"))),
            lambda: store.remove_token("t"),
            lambda: store.heartbeat(GatewayRecord(id="hv-1"), 10),
            lambda: store.remove_gateway("hv-1"),
            lambda: store.delete_share(share.id),
        ]
        for write in writes:
            before = store.revision()
            write()
            assert store.revision() == before + 1

    def test_reads_do_not_bump_the_revision(self, store: Store) -> None:
        share = store.create_share(make_share())
        rule = store.add_rule(make_rule(share.id))
        store.put_instance(make_instance())
        store.add_token(TokenRecord(name="t", hash=hash_token("t")))
        store.heartbeat(GatewayRecord(id="hv-1"), 10)
        revision = store.revision()
        store.get_share(share.id)
        store.find_share("alpha")
        store.list_shares()
        store.get_rule(rule.id)
        store.list_rules(share.id)
        store.get_instance("vm-1")
        store.list_instances()
        store.resolve(_vsock(3))
        store.find_token(hash_token("t"))
        store.list_tokens()
        store.list_gateways()
        store.changes_since(share.revision)
        store.snapshot()
        store.wait_for_change(revision, 0)
        assert store.revision() == revision

    def test_failed_writes_do_not_bump_the_revision(self, store: Store) -> None:
        share = store.create_share(make_share())
        revision = store.revision()
        failing: list[Callable[[], object]] = [
            lambda: store.create_share(make_share()),
            lambda: store.update_share("nope", size_gib=2),
            lambda: store.update_share(share.id, expect_revision=revision + 5, size_gib=2),
            lambda: store.delete_share("nope"),
            lambda: store.add_rule(make_rule("nope")),
            lambda: store.delete_rule("nope"),
            lambda: store.remove_instance("nope"),
            lambda: store.remove_token("nope"),
            lambda: store.remove_gateway("nope"),
        ]
        for write in failing:
            with pytest.raises((Conflict, NotFound)):
                write()
        assert store.revision() == revision
        assert [c.revision for c in store.changes_since(revision - 1)] == [revision]

    def test_changes_since_in_order_with_records(self, store: Store) -> None:
        start = store.revision()
        share = store.create_share(make_share())
        rule = store.add_rule(make_rule(share.id))
        updated = store.update_share(share.id, status=ShareStatus.AVAILABLE)
        inst = store.put_instance(make_instance())
        token = store.add_token(TokenRecord(name="t", hash=hash_token("t"), tenant="acme"))
        gateway = GatewayRecord(id="hv-1", addresses=("tcp://192.0.2.1:564",))
        store.heartbeat(gateway, 10)
        store.delete_rule(rule.id)
        store.remove_instance(inst.uuid)
        changes = store.changes_since(start)
        assert [(c.revision, c.kind, c.key, c.op) for c in changes] == [
            (start + 1, "share", share.id, "put"),
            (start + 2, "rule", rule.id, "put"),
            (start + 3, "share", share.id, "put"),
            (start + 4, "instance", "vm-1", "put"),
            (start + 5, "token", "t", "put"),
            (start + 6, "gateway", "hv-1", "put"),
            (start + 7, "rule", rule.id, "delete"),
            (start + 8, "instance", "vm-1", "delete"),
        ]
        assert [c.record for c in changes] == [
            share, rule, updated, inst, token, gateway, None, None,
        ]  # fmt: skip
        assert store.changes_since(start + 6) == changes[6:]
        assert store.changes_since(store.revision()) == []

    def test_changes_visible_to_another_connection(self, store: Store, second_store: Store) -> None:
        start = second_store.revision()
        share = store.create_share(make_share())
        assert second_store.revision() == start + 1
        [change] = second_store.changes_since(start)
        assert change.record == share
        assert second_store.get_share(share.id) == share

    def test_compaction(self, store: Store) -> None:
        start = store.revision()
        shares = [store.create_share(make_share(f"s{i}")) for i in range(6)]
        middle = start + 3
        store.compact(middle)
        assert store.revision() == start + 6  # compaction is not a change
        assert [c.record for c in store.changes_since(middle)] == shares[3:]
        with pytest.raises(Compacted):
            store.changes_since(middle - 1)
        with pytest.raises(Compacted):
            store.changes_since(start)
        store.compact(start + 1)  # behind what is compacted already: nothing happens
        assert len(store.changes_since(middle)) == 3
        with pytest.raises(ValueError):
            store.compact(store.revision() + 1)
        store.compact(store.revision())
        assert store.changes_since(store.revision()) == []

    def test_changes_since_a_future_revision(self, store: Store) -> None:
        store.create_share(make_share())
        with pytest.raises(Compacted, match="ahead"):
            store.changes_since(store.revision() + 1)

    def test_snapshot(self, store: Store) -> None:
        alpha = store.create_share(make_share("alpha"))
        beta = store.create_share(make_share("beta"))
        r1 = store.add_rule(make_rule(beta.id))
        r2 = store.add_rule(make_rule(alpha.id))
        inst = store.put_instance(make_instance())
        store.add_token(TokenRecord(name="t", hash=hash_token("t")))
        snap = store.snapshot()
        revision, shares, rules, instances = snap
        assert revision == store.revision()
        assert shares == (alpha, beta)
        assert set(rules) == {r1, r2}
        assert instances == (inst,)

    def test_follower_rebuilds_the_state_from_snapshot_and_feed(self, store: Store) -> None:
        share = store.create_share(make_share("alpha"))
        rule = store.add_rule(make_rule(share.id))
        store.put_instance(make_instance("vm-1", cid=3))
        base = store.snapshot()
        beta = store.create_share(make_share("beta"))
        store.add_rule(make_rule(beta.id, "192.0.2.0/24"))
        store.update_rule(rule.id, state=RuleState.ACTIVE)
        store.update_share(share.id, size_gib=5)
        store.put_instance(make_instance("vm-1", cid=4))
        store.put_instance(make_instance("vm-2", cid=5))
        store.remove_instance("vm-2")
        store.delete_share(share.id)
        store.heartbeat(GatewayRecord(id="hv-1"), 10)
        store.put_quota(QuotaRecord(tenant="acme", shares=7))
        assert apply_changes(base, store.changes_since(base.revision)) == store.snapshot()

    def test_snapshot_is_consistent_under_concurrent_writes(
        self, store: Store, second_store: Store
    ) -> None:
        base = store.revision()
        count = 200
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                for i in range(count):  # 20 tenants: within the default quota
                    second_store.create_share(make_share(f"s{i:03d}", tenant=f"t{i % 20}"))
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        thread = threading.Thread(target=writer)
        thread.start()
        seen = 0
        while thread.is_alive() or seen == 0:
            snap = store.snapshot()
            # One create is one revision: the shares and the revision must agree.
            assert len(snap.shares) == snap.revision - base
            assert [s.name for s in snap.shares] == [f"s{i:03d}" for i in range(len(snap.shares))]
            seen += 1
        thread.join()
        assert not errors, errors
        assert len(store.snapshot().shares) == count

    def test_wait_for_change_returns_at_once_when_behind(self, store: Store) -> None:
        store.create_share(make_share())
        current = store.revision()
        result, took = _elapsed(lambda: store.wait_for_change(current - 1, 5.0))
        assert result == current
        assert took < 0.5

    def test_wait_for_change_times_out(self, store: Store) -> None:
        current = store.revision()
        result, took = _elapsed(lambda: store.wait_for_change(current, 0.3))
        assert result == current
        assert 0.25 <= took < 2.0

    @pytest.mark.parametrize("writer_is_second", [False, True], ids=["same", "other"])
    def test_wait_for_change_is_woken_by_a_write(
        self, store: Store, second_store: Store, writer_is_second: bool
    ) -> None:
        writer = second_store if writer_is_second else store
        current = store.revision()
        written = threading.Event()
        done_at: list[float] = []

        def write() -> None:
            time.sleep(0.2)  # let the main thread start waiting: part of what is measured
            writer.create_share(make_share())
            done_at.append(time.monotonic())
            written.set()

        thread = threading.Thread(target=write)
        thread.start()
        try:
            result = store.wait_for_change(current, 10.0)
            woke = time.monotonic()
        finally:
            thread.join()
        assert written.is_set()
        assert result == current + 1
        assert woke - done_at[0] < 0.5, f"woken {woke - done_at[0]:.3f} s after the write"

    def test_concurrent_writers_all_land(self, store: Store, second_store: Store) -> None:
        threads, each = 4, 50
        start = store.revision()
        barrier = threading.Barrier(threads)
        made: list[ShareRecord] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def work(n: int) -> None:
            target = second_store if n % 2 else store
            try:
                barrier.wait()
                for i in range(each):
                    share = make_share(f"t{n}-{i:02d}", tenant=f"t{n}-{i % 5}")  # in quota
                    record = target.create_share(share)
                    with lock:
                        made.append(record)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert not errors, errors
        assert len(made) == threads * each
        revisions = sorted(r.revision for r in made)
        assert revisions == list(range(start + 1, start + threads * each + 1))
        assert store.revision() == start + threads * each
        assert {s.id for s in store.list_shares()} == {r.id for r in made}
        feed = store.changes_since(start)
        assert sorted(c.revision for c in feed) == revisions
        assert {c.key for c in feed} == {r.id for r in made}

    def test_concurrent_duplicate_names_one_wins(self, store: Store, second_store: Store) -> None:
        def create(target: Store, n: int) -> object:
            return target.create_share(make_share("contested"))

        outcomes = _race((store, second_store), create, Conflict)
        assert outcomes == ["ok", "refused", "refused", "refused"]
        assert len(store.list_shares()) == 1

    # --- quotas ---------------------------------------------------------------------------

    def test_quota_defaults_and_usage(self, store: Store) -> None:
        fresh = store.quota_usage("acme")
        assert (fresh.shares, fresh.gigabytes) == (DEFAULT_QUOTA.shares, DEFAULT_QUOTA.gigabytes)
        assert (fresh.used_shares, fresh.used_gigabytes) == (0, 0)
        assert store.list_quotas() == []
        store.create_share(make_share("a", size_gib=3))
        b = store.create_share(make_share("b", size_gib=4, status=ShareStatus.ERROR))
        store.create_share(make_share("c", tenant="globex", size_gib=100))
        store.update_share(b.id, status=ShareStatus.DELETING)  # counted until it is gone
        usage = store.quota_usage("acme")
        assert (usage.used_shares, usage.used_gigabytes) == (2, 7)
        store.delete_share(b.id)
        usage = store.quota_usage("acme")
        assert (usage.used_shares, usage.used_gigabytes) == (1, 3)

    def test_quota_records_are_writes_in_the_feed(self, store: Store) -> None:
        start = store.revision()
        override = store.put_quota(QuotaRecord(tenant="acme", shares=3))
        assert store.revision() == start + 1
        assert store.put_quota(QuotaRecord(tenant="acme", shares=3)) == override
        assert store.revision() == start + 1  # the same values: no write
        defaults = store.put_quota(QuotaRecord(gigabytes=500))
        assert store.list_quotas() == [defaults, override]  # defaults first
        store.put_quota(QuotaRecord(tenant="acme"))  # sets nothing: the override goes
        assert store.list_quotas() == [defaults]
        store.put_quota(QuotaRecord(tenant="globex"))  # nothing stored: nothing changes
        assert store.revision() == start + 3
        feed = [(c.kind, c.key, c.op, c.record) for c in store.changes_since(start)]
        assert feed == [
            ("quota", "acme", "put", override), ("quota", "", "put", defaults),
            ("quota", "acme", "delete", None),
        ]  # fmt: skip

    def test_quota_override_falls_back_to_the_defaults(self, store: Store) -> None:
        store.put_quota(QuotaRecord(tenant="acme", shares=2))
        usage = store.quota_usage("acme")
        assert (usage.shares, usage.gigabytes) == (2, DEFAULT_QUOTA.gigabytes)
        assert usage.override == QuotaRecord(tenant="acme", shares=2)
        store.put_quota(QuotaRecord(shares=9, gigabytes=UNLIMITED))
        usage = store.quota_usage("acme")
        assert (usage.shares, usage.gigabytes) == (2, UNLIMITED)
        assert usage.defaults == QuotaRecord(shares=9, gigabytes=UNLIMITED)
        other = store.quota_usage("globex")
        assert (other.shares, other.gigabytes) == (9, UNLIMITED)
        assert other.override == QuotaRecord(tenant="globex")

    def test_create_over_the_shares_quota_is_refused(self, store: Store) -> None:
        store.put_quota(QuotaRecord(tenant="acme", shares=2))
        store.create_share(make_share("a"))
        store.create_share(make_share("b"))
        before = store.revision()
        with pytest.raises(OverQuota) as info:
            store.create_share(make_share("c"))
        assert str(info.value) == "tenant acme is over its quota: 3 shares, the limit (shares) is 2"
        assert store.revision() == before and store.find_share("c") is None
        store.create_share(make_share("c", tenant="globex"))  # another tenant's quota
        store.put_quota(QuotaRecord(tenant="acme", shares=UNLIMITED))
        store.create_share(make_share("c2"))

    def test_gigabytes_quota_bounds_create_and_growth(self, store: Store) -> None:
        store.put_quota(QuotaRecord(tenant="acme", gigabytes=25))
        a = store.create_share(make_share("a", size_gib=10))
        store.create_share(make_share("b", size_gib=10))
        with pytest.raises(OverQuota, match=r"30 GiB in its shares, the limit \(gigabytes\) is 25"):
            store.create_share(make_share("c", size_gib=10))
        before = store.revision()
        with pytest.raises(OverQuota, match="26 GiB"):
            store.update_share(a.id, size_gib=16)
        assert store.revision() == before and store.get_share(a.id).size_gib == 10
        a = store.update_share(a.id, size_gib=15)  # exactly the limit
        # An admin lowers the limit below usage: only growth is refused.
        store.put_quota(QuotaRecord(tenant="acme", gigabytes=5))
        a = store.update_share(a.id, status=ShareStatus.EXTENDING)
        with pytest.raises(OverQuota):
            store.update_share(a.id, size_gib=16)
        a = store.update_share(a.id, size_gib=12, status=ShareStatus.AVAILABLE)
        assert store.quota_usage("acme").used_gigabytes == 22

    def test_racing_creates_cannot_pass_the_quota_together(
        self, store: Store, second_store: Store
    ) -> None:
        # The check reads usage in the write's transaction: with one share left, one wins.
        store.put_quota(QuotaRecord(tenant="acme", shares=3))
        store.create_share(make_share("first"))
        store.create_share(make_share("second"))

        def create(target: Store, n: int) -> object:
            return target.create_share(make_share(f"racer-{n}"))

        outcomes = _race((store, second_store), create, OverQuota)
        assert outcomes == ["ok", "refused", "refused", "refused"]
        assert store.quota_usage("acme").used_shares == 3

    def test_racing_extends_cannot_pass_the_quota_together(
        self, store: Store, second_store: Store
    ) -> None:
        store.put_quota(QuotaRecord(tenant="acme", gigabytes=30))
        shares = [store.create_share(make_share(f"s{n}", size_gib=5)) for n in range(4)]

        def extend(target: Store, n: int) -> object:  # each +5 GiB: 25 fits, 30 fits, no more
            return target.update_share(shares[n].id, size_gib=10)

        outcomes = _race((store, second_store), extend, OverQuota)
        assert outcomes == ["ok", "ok", "refused", "refused"]
        assert store.quota_usage("acme").used_gigabytes == 30

    # --- life cycle -----------------------------------------------------------------------

    def test_close_is_idempotent_and_final(self, store: Store) -> None:
        store.close()
        store.close()
        with pytest.raises(StoreUnavailable):
            store.revision()
        with pytest.raises(StoreUnavailable):
            store.create_share(make_share())
