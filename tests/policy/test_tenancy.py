"""Rules follow tenancy: an instance rule that names a tenant grants only while the
instance belongs to it."""

from __future__ import annotations

import pytest

from vshare.policy import AccessRule, Level, Requester, decide

VM = "vm-1"


def test_an_instance_rule_of_a_tenant_grants_only_that_tenants_instance() -> None:
    rule = AccessRule("instance", VM, Level.RW, tenant="acme")
    assert decide(Requester(instance_id=VM, tenant="acme"), [rule]) is Level.RW
    assert decide(Requester(instance_id=VM, tenant="globex"), [rule]) is None
    assert decide(Requester(instance_id=VM), [rule]) is None  # tenant unknown: not acme's
    assert decide(Requester(instance_id="vm-2", tenant="acme"), [rule]) is None


def test_a_rule_without_tenant_grants_whatever_the_instances_tenant() -> None:
    rule = AccessRule("instance", VM, Level.RO)  # cross-tenant (admin), or a config file's
    assert decide(Requester(instance_id=VM, tenant="globex"), [rule]) is Level.RO
    assert decide(Requester(instance_id=VM), [rule]) is Level.RO


def test_other_rules_of_the_share_still_count() -> None:
    rules = [
        AccessRule("instance", VM, Level.RW, tenant="acme"),
        AccessRule("ip", "10.0.0.0/8", Level.RO),
    ]
    moved = Requester(instance_id=VM, tenant="globex", address="10.1.2.3")
    assert decide(moved, rules) is Level.RO


def test_only_an_instance_rule_names_a_tenant() -> None:
    with pytest.raises(ValueError, match="only an instance rule"):
        AccessRule("ip", "10.0.0.1", tenant="acme")
