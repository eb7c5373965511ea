"""Rules follow tenancy in the control plane: which instance rules are ``cross_tenant``
(only an admin's, for an instance of another tenant), how it is stored, and what the
gateway is given."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vshare.control import ADMIN, Caller, ControlService
from vshare.gateway.follow import shares_of
from vshare.policy import AccessRule, Level, Requester, decide
from vshare.store import RuleRecord, SqliteStore
from vshare.store._codec import dumps, load_as

ACME = Caller(tenant="acme", name="acme-token")
VM = "6f1c4c2e-8a59-4b7e-9d2b-1f0e2d3c4b5a"
OTHER = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ControlService]:
    volume = tmp_path / "vol"
    volume.mkdir()
    store = SqliteStore(tmp_path / "state.db")
    svc = ControlService(store, {"default": f"posix:{volume}"})
    yield svc
    svc.close()
    store.close()


def test_only_an_admins_rule_for_another_tenants_instance_is_cross_tenant(
    service: ControlService,
) -> None:
    service.register_instance(ADMIN, VM, tenant="globex", cids=[40])
    service.register_instance(ADMIN, OTHER, tenant="acme", cids=[41])
    service.create_share(ACME, "a", 1)
    service.create_share(ACME, "b", 1)
    assert service.allow(ADMIN, "a", "instance", VM).cross_tenant  # globex's VM, admin
    assert not service.allow(ACME, "b", "instance", VM).cross_tenant  # a tenant: never
    assert not service.allow(ADMIN, "a", "instance", OTHER).cross_tenant  # acme's own
    unknown = "11111111-2222-4333-8444-555555555555"
    assert not service.allow(ADMIN, "a", "instance", unknown).cross_tenant  # not registered
    assert not service.allow(ADMIN, "a", "ip", "10.0.0.1").cross_tenant
    # stored so, and what the gateway is given
    rules = {r.access_to: r for r in service.list_rules(ADMIN, "a")}
    assert rules[VM].cross_tenant and not rules[OTHER].cross_tenant
    [share] = [s for s in shares_of(service.store.snapshot(), service.volumes["default"])
               if s.name == "a"]  # fmt: skip
    access = {r.access_to: r for r in share.access}
    assert access[VM] == AccessRule("instance", VM, Level.RW)  # no tenant condition
    assert access[OTHER] == AccessRule("instance", OTHER, Level.RW, tenant="acme")
    assert access["10.0.0.1"].tenant is None
    assert decide(Requester(instance_id=VM, tenant="globex"), share.access) is Level.RW
    assert decide(Requester(instance_id=OTHER, tenant="globex"), share.access) is None


def test_cross_tenant_round_trips_and_old_records_stay_readable() -> None:
    rule = RuleRecord(id="r1", share_id="s1", access_type="instance", access_to=VM,
                      cross_tenant=True)  # fmt: skip
    assert load_as(RuleRecord, dumps(rule)) == rule
    plain = RuleRecord(id="r2", share_id="s1", access_type="instance", access_to=VM)
    assert "cross_tenant" not in dumps(plain)  # the format older readers know
    old = '{"id": "r3", "share_id": "s1", "access_type": "instance", "access_to": "vm-9"}'
    assert load_as(RuleRecord, old).cross_tenant is False
    with pytest.raises(ValueError, match="only an instance rule"):
        RuleRecord(share_id="s1", access_type="ip", access_to="10.0.0.1", cross_tenant=True)
