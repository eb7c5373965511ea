"""The control plane's service rules over a real SQLite store and a real POSIX volume."""

from __future__ import annotations

import os
import uuid as uuid_mod
from collections.abc import Iterator
from pathlib import Path

import pytest

from vshare.control import (
    ADMIN,
    GIB,
    Caller,
    Conflict,
    ControlService,
    Forbidden,
    NotFound,
    Volumes,
    VolumeUnavailable,
    instance_uuid,
    parse_volume,
)
from vshare.policy import Level
from vshare.store import GatewayRecord, RuleState, ShareRecord, ShareStatus, SqliteStore

ACME = Caller(tenant="acme", name="acme-token")
GLOBEX = Caller(tenant="globex", name="globex-token")
VM = "6f1c4c2e-8a59-4b7e-9d2b-1f0e2d3c4b5a"


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    path = tmp_path / "vol"
    path.mkdir()
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state.db")
    yield s
    s.close()


@pytest.fixture
def service(store: SqliteStore, volume: Path) -> Iterator[ControlService]:
    svc = ControlService(store, {"default": f"posix:{volume}"})
    yield svc
    svc.close()


def share_dir(volume: Path, share_id: str) -> Path:
    return volume / "shares" / share_id


# --- shares -------------------------------------------------------------------------------


def test_create_makes_the_directory_and_makes_the_share_available(
    service: ControlService, volume: Path, store: SqliteStore
) -> None:
    share = service.create_share(ADMIN, "docs", 10, tenant="acme")
    assert share.status is ShareStatus.AVAILABLE
    assert share.path == f"shares/{share.id}"
    assert share.tenant == "acme" and share.size_gib == 10
    assert share.backend == f"posix:{volume}"
    assert share_dir(volume, share.id).is_dir()
    assert store.get_share(share.id) == share
    assert service.volume_of(share) == "default"


def test_create_makes_the_shares_directory_when_missing(
    service: ControlService, volume: Path
) -> None:
    assert not (volume / "shares").exists()
    service.create_share(ACME, "a", 1)
    assert (volume / "shares").is_dir()
    service.create_share(ACME, "b", 1)  # and reuses it
    assert len(list((volume / "shares").iterdir())) == 2


def test_create_refuses_a_taken_name_without_naming_the_other_share(
    service: ControlService, volume: Path
) -> None:
    first = service.create_share(GLOBEX, "docs", 1)
    with pytest.raises(Conflict) as err:
        service.create_share(ACME, "docs", 1)
    assert str(err.value) == "share name 'docs' is taken"
    assert first.id not in str(err.value)
    assert [p.name for p in (volume / "shares").iterdir()] == [first.id]


def test_create_refuses_an_existing_directory_and_leaves_it_alone(
    service: ControlService, volume: Path, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixed = uuid_mod.UUID("11111111-2222-4333-8444-555555555555")
    planted = share_dir(volume, str(fixed))
    planted.mkdir(parents=True)
    (planted / "someone-elses.txt").write_text("keep me")
    monkeypatch.setattr(uuid_mod, "uuid4", lambda: fixed)
    with pytest.raises(Conflict, match="already exists; refusing to reuse it"):
        service.create_share(ACME, "docs", 1)
    assert (planted / "someone-elses.txt").read_text() == "keep me"
    assert store.list_shares() == []  # the record went again: the name is free


def test_create_on_an_unusable_volume_leaves_an_error_share(
    store: SqliteStore, tmp_path: Path
) -> None:
    volume = tmp_path / "missing"
    svc = ControlService(store, {"default": f"posix:{volume}"})
    with pytest.raises(VolumeUnavailable, match=r"volume default .*No such file or directory"):
        svc.create_share(ACME, "docs", 1)
    (share,) = store.list_shares()
    assert share.status is ShareStatus.ERROR
    with pytest.raises(VolumeUnavailable):  # nothing can be removed from a missing volume
        svc.delete_share(ACME, "docs")
    volume.mkdir()  # the operator mounts it
    svc.delete_share(ACME, "docs")  # an error share is deleted (it has no directory)
    assert store.list_shares() == []
    svc.close()


@pytest.mark.parametrize(
    ("name", "size", "message"),
    [
        ("", 1, "share name '': 1 to 255 letters, digits"),
        ("a/b", 1, "share name 'a/b': 1 to 255 letters"),
        ("a;b", 1, "1 to 255 letters"),
        ("a,b", 1, "1 to 255 letters"),  # would break mount -o aname=...
        ("new\nline", 1, "1 to 255 letters"),
        ("trailing\n", 1, "1 to 255 letters"),
        (" padded", 1, "1 to 255 letters"),
        ("..", 1, "1 to 255 letters"),
        ("-rf", 1, "1 to 255 letters"),
        ("x" * 256, 1, "1 to 255 letters"),
        ("ok", 0, "size_gib must be between 1"),
        ("ok", -3, "size_gib must be between 1"),
        ("ok", True, "size_gib must be an integer"),
        ("ok", 2**41, "size_gib must be between 1"),
    ],
)
def test_bad_share_input_is_a_one_line_value_error(
    service: ControlService, volume: Path, name: str, size: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as err:
        service.create_share(ACME, name, size)
    assert "\n" not in str(err.value)
    assert service.store.list_shares() == []
    assert not (volume / "shares").exists() or not any((volume / "shares").iterdir())


def test_create_checks_tenant_and_volume(service: ControlService) -> None:
    with pytest.raises(ValueError, match="admin must say which tenant"):
        service.create_share(ADMIN, "docs", 1)
    with pytest.raises(Forbidden, match="cannot create shares for globex"):
        service.create_share(ACME, "docs", 1, tenant="globex")
    with pytest.raises(ValueError, match="volume 'nope' is not one of: default"):
        service.create_share(ACME, "docs", 1, volume="nope")
    assert service.create_share(ACME, "docs", 1, tenant="acme").tenant == "acme"


def test_shares_on_a_second_volume(store: SqliteStore, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    svc = ControlService(
        store, {"fast": f"posix:{tmp_path / 'a'}", "big": f"posix:{tmp_path / 'b'}"}
    )
    try:
        share = svc.create_share(ACME, "docs", 1, volume="big")
        assert svc.volume_of(share) == "big"
        assert share_dir(tmp_path / "b", share.id).is_dir()
        assert svc.create_share(ACME, "other", 1).backend == f"posix:{tmp_path / 'a'}"
    finally:
        svc.close()


def test_delete_refuses_a_non_empty_share_without_force(
    service: ControlService, volume: Path
) -> None:
    share = service.create_share(ACME, "docs", 1)
    (share_dir(volume, share.id) / "data.txt").write_text("precious")
    with pytest.raises(Conflict, match="not empty; delete it with force"):
        service.delete_share(ACME, "docs")
    assert (share_dir(volume, share.id) / "data.txt").read_text() == "precious"
    assert service.get_share(ACME, "docs").status is ShareStatus.AVAILABLE


def test_delete_of_an_empty_share_removes_record_rules_and_directory(
    service: ControlService, volume: Path, store: SqliteStore
) -> None:
    share = service.create_share(ACME, "docs", 1)
    rule = service.allow(ACME, "docs", "ip", "10.0.0.0/8")
    service.delete_share(ACME, share.id)  # by id works as by name
    assert not share_dir(volume, share.id).exists()
    with pytest.raises(NotFound):
        service.get_share(ACME, "docs")
    with pytest.raises(NotFound):
        store.get_rule(rule.id)


def test_force_delete_removes_everything_inside_and_nothing_outside(
    service: ControlService, volume: Path, tmp_path: Path
) -> None:
    share = service.create_share(ACME, "docs", 1)
    other = service.create_share(ACME, "other", 1)
    root = share_dir(volume, share.id)
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "b" / "c" / "deep.bin").write_bytes(b"x" * 1000)
    (root / "top.txt").write_text("top")
    outside = tmp_path / "outside.txt"
    outside.write_text("outside")
    (root / "a" / "escape").symlink_to(outside)  # a symlink is removed, not followed
    (root / "a" / "dirlink").symlink_to(tmp_path)
    neighbour = volume / "shares" / "neighbour.txt"  # next to the share, in shares/
    neighbour.write_text("next door")
    (share_dir(volume, other.id) / "theirs.txt").write_text("other share")

    service.delete_share(ACME, "docs", force=True)

    assert not root.exists()
    assert outside.read_text() == "outside"
    assert neighbour.read_text() == "next door"
    assert (share_dir(volume, other.id) / "theirs.txt").read_text() == "other share"
    assert (tmp_path / "vol").is_dir() and (tmp_path / "state.db").exists()
    assert [s.name for s in service.list_shares(ACME)] == ["other"]


def test_delete_of_a_share_whose_directory_is_gone(service: ControlService, volume: Path) -> None:
    share = service.create_share(ACME, "docs", 1)
    share_dir(volume, share.id).rmdir()
    service.delete_share(ACME, "docs")
    assert service.list_shares(ACME) == []


def test_a_busy_share_is_deleted_only_with_force(
    service: ControlService, store: SqliteStore
) -> None:
    share = service.create_share(ACME, "docs", 1)
    store.update_share(share.id, status=ShareStatus.EXTENDING)  # as a crash would leave it
    with pytest.raises(Conflict, match="is extending: the request that made it extending"):
        service.delete_share(ACME, "docs")
    with pytest.raises(Conflict, match="is extending, not available"):
        service.extend_share(ACME, "docs", 2)
    service.delete_share(ACME, "docs", force=True)
    assert store.list_shares() == []


def test_delete_on_a_volume_this_service_does_not_serve(
    service: ControlService, store: SqliteStore, tmp_path: Path
) -> None:
    share = service.create_share(ACME, "docs", 1)
    other = ControlService(store, {"elsewhere": f"posix:{tmp_path}"})
    with pytest.raises(VolumeUnavailable, match="not served by this control plane"):
        other.delete_share(ACME, "docs", force=True)
    assert store.get_share(share.id).status is ShareStatus.AVAILABLE


def test_extend(service: ControlService, store: SqliteStore) -> None:
    share = service.create_share(ACME, "docs", 1)
    grown = service.extend_share(ACME, "docs", 5)
    assert (grown.size_gib, grown.status) == (5, ShareStatus.AVAILABLE)
    assert store.get_share(share.id).size_gib == 5
    for size in (5, 3):
        with pytest.raises(ValueError, match="extend needs a larger size"):
            service.extend_share(ACME, "docs", size)
    with pytest.raises(ValueError, match="between 1 and"):
        service.extend_share(ACME, "docs", 2**41)
    # Both transitions went through the feed: extending, then available at the new size.
    statuses = [
        (c.record.status, c.record.size_gib)
        for c in store.changes_since(grown.revision - 2)
        if isinstance(c.record, ShareRecord)
    ]
    assert statuses == [(ShareStatus.EXTENDING, 1), (ShareStatus.AVAILABLE, 5)]


def test_cache_mode_is_set_at_create_and_changed_in_one_revision(
    service: ControlService, store: SqliteStore
) -> None:
    assert service.create_share(ACME, "plain", 1).cache == "meta"  # the default
    share = service.create_share(ACME, "docs", 1, cache="none")
    assert store.get_share(share.id).cache == "none"
    changed = service.set_share_cache(ACME, "docs", "all")
    assert (changed.cache, changed.status, changed.revision) == (
        "all", ShareStatus.AVAILABLE, share.revision + 1,
    )  # fmt: skip
    assert store.changes_since(share.revision)[-1].record == changed
    assert service.set_share_cache(ACME, share.id, "all") == changed  # no-op: no revision
    assert store.revision() == changed.revision
    with pytest.raises(ValueError, match="cache 'most' is not one of none, meta, all"):
        service.set_share_cache(ACME, "docs", "most")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cache"):
        service.create_share(ACME, "other", 1, cache="fast")  # type: ignore[arg-type]
    assert service.get_share(ADMIN, "docs") == changed


def test_cache_mode_of_a_busy_share_is_not_changed(
    service: ControlService, store: SqliteStore
) -> None:
    share = service.create_share(ACME, "docs", 1)
    busy = store.update_share(share.id, status=ShareStatus.EXTENDING)
    with pytest.raises(Conflict, match="docs is extending"):
        service.set_share_cache(ACME, "docs", "none")
    assert store.get_share(share.id) == busy
    store.update_share(share.id, status=ShareStatus.ERROR)
    assert service.set_share_cache(ACME, "docs", "none").cache == "none"


def test_shrink_is_refused_below_what_the_share_holds(
    service: ControlService, volume: Path
) -> None:
    share = service.create_share(ACME, "docs", 4)
    root = share_dir(volume, share.id)
    (root / "sub").mkdir()
    # Sparse files: apparent size is what counts (what the gateway's quota counts too).
    with open(root / "sub" / "big.bin", "wb") as f:
        f.truncate(GIB + GIB // 2)
    with open(root / "small.bin", "wb") as f:
        f.truncate(GIB // 4)
    with pytest.raises(Conflict, match=r"holds 1\.75 GiB; it cannot shrink to 1 GiB"):
        service.shrink_share(ACME, "docs", 1)
    after = service.get_share(ACME, "docs")
    assert (after.size_gib, after.status) == (4, ShareStatus.AVAILABLE)
    shrunk = service.shrink_share(ACME, "docs", 2)
    assert (shrunk.size_gib, shrunk.status) == (2, ShareStatus.AVAILABLE)
    with pytest.raises(ValueError, match="shrink needs a smaller size"):
        service.shrink_share(ACME, "docs", 2)
    os.unlink(root / "sub" / "big.bin")
    assert service.shrink_share(ACME, "docs", 1).size_gib == 1
    assert service.usage(service.get_share(ACME, "docs")) == GIB // 4


# --- access rules -------------------------------------------------------------------------


def test_allow_stores_a_queued_rule_and_normalizes_its_target(service: ControlService) -> None:
    service.create_share(ACME, "docs", 1)
    rule = service.allow(ACME, "docs", "ip", "10.1.2.3/8", "ro")
    assert rule.state is RuleState.QUEUED_TO_APPLY
    assert (rule.access_type, rule.access_to, rule.level) == ("ip", "10.0.0.0/8", Level.RO)
    inst = service.allow(ACME, "docs", "instance", VM.upper())
    assert inst.access_to == VM
    cert = service.allow(ACME, "docs", "cert", "AB" * 32)
    assert cert.access_to == "ab" * 32
    user = service.allow(ACME, "docs", "user", "1000")
    assert [r.id for r in service.list_rules(ACME, "docs")] == [rule.id, inst.id, cert.id, user.id]


def test_a_duplicate_rule_is_a_conflict_whatever_its_spelling(service: ControlService) -> None:
    service.create_share(ACME, "docs", 1)
    first = service.allow(ACME, "docs", "ip", "10.0.0.0/8")
    with pytest.raises(Conflict, match=f"already has an ip rule for 10.0.0.0/8 \\(rule {first.id}"):
        service.allow(ACME, "docs", "ip", "10.9.9.9/8", "ro")
    service.allow(ACME, "docs", "instance", VM)
    with pytest.raises(Conflict):
        service.allow(ACME, "docs", "instance", VM.upper())


@pytest.mark.parametrize(
    ("access_type", "access_to", "level", "message"),
    [
        ("ipx", "10.0.0.1", "rw", "access type 'ipx' is not one of cert, instance, ip, user"),
        ("ip", "10.0.0.300", "rw", "does not appear to be an IPv4 or IPv6"),
        ("ip", "", "rw", "must not be empty"),
        ("user", "root", "rw", "numeric uid"),
        ("instance", "has space", "rw", "neither a UUID nor an id"),
        ("instance", "a/b", "rw", "neither a UUID nor an id"),
        ("ip", "10.0.0.1", "rwx", "access level 'rwx' is not ro or rw"),
    ],
)
def test_bad_rules_are_one_line_value_errors(
    service: ControlService, access_type: str, access_to: str, level: str, message: str
) -> None:
    service.create_share(ACME, "docs", 1)
    with pytest.raises(ValueError, match=message) as err:
        service.allow(ACME, "docs", access_type, access_to, level)
    assert "\n" not in str(err.value)
    assert service.list_rules(ACME, "docs") == []


def test_deny_of_a_rule_never_applied_deletes_it(
    service: ControlService, store: SqliteStore
) -> None:
    service.create_share(ACME, "docs", 1)
    rule = service.allow(ACME, "docs", "ip", "10.0.0.0/8")
    denied = service.deny(ACME, "docs", rule.id)
    assert denied.state is RuleState.DELETED and denied.id == rule.id
    with pytest.raises(NotFound):
        store.get_rule(rule.id)
    assert service.list_rules(ACME, "docs") == []
    # The same target may be allowed again at once.
    assert service.allow(ACME, "docs", "ip", "10.0.0.0/8").state is RuleState.QUEUED_TO_APPLY


def test_deny_of_an_applied_rule_queues_it_for_the_gateways(
    service: ControlService, store: SqliteStore
) -> None:
    service.create_share(ACME, "docs", 1)
    rule = service.allow(ACME, "docs", "ip", "10.0.0.0/8")
    store.update_rule(rule.id, state=RuleState.ACTIVE)  # what a gateway does
    denied = service.deny(ACME, "docs", rule.id)
    assert denied.state is RuleState.QUEUED_TO_DENY
    assert store.get_rule(rule.id).state is RuleState.QUEUED_TO_DENY
    again = service.deny(ACME, "docs", rule.id)  # idempotent
    assert again.state is RuleState.QUEUED_TO_DENY and again.revision == denied.revision
    with pytest.raises(Conflict, match="already has an ip rule"):  # still live until denied
        service.allow(ACME, "docs", "ip", "10.0.0.0/8")
    store.update_rule(rule.id, state=RuleState.DELETED)  # the gateways finished
    assert service.list_rules(ACME, "docs") == []
    assert [r.id for r in service.list_rules(ACME, "docs", include_deleted=True)] == [rule.id]
    assert service.deny(ACME, "docs", rule.id).state is RuleState.DELETED


def test_deny_of_an_unknown_rule_or_of_another_shares_rule(service: ControlService) -> None:
    service.create_share(ACME, "docs", 1)
    service.create_share(ACME, "other", 1)
    rule = service.allow(ACME, "other", "ip", "10.0.0.0/8")
    with pytest.raises(NotFound, match="share docs has no access rule"):
        service.deny(ACME, "docs", rule.id)
    with pytest.raises(NotFound, match="share docs has no access rule 'nope'"):
        service.deny(ACME, "docs", "nope")


# --- tenancy ------------------------------------------------------------------------------


def test_a_tenant_sees_and_manages_only_its_own_shares(
    service: ControlService, volume: Path
) -> None:
    theirs = service.create_share(GLOBEX, "theirs", 2)
    rule = service.allow(GLOBEX, "theirs", "ip", "10.0.0.0/8")
    mine = service.create_share(ACME, "mine", 1)

    assert [s.name for s in service.list_shares(ACME)] == ["mine"]
    assert [s.name for s in service.list_shares(GLOBEX)] == ["theirs"]
    assert [s.name for s in service.list_shares(ADMIN)] == ["mine", "theirs"]
    assert [s.name for s in service.list_shares(ADMIN, "globex")] == ["theirs"]
    with pytest.raises(Forbidden):
        service.list_shares(ACME, "globex")

    # Another tenant's share answers exactly as a missing one, by name and by id.
    for key in ("theirs", theirs.id):
        for action in (
            lambda k: service.get_share(ACME, k),
            lambda k: service.delete_share(ACME, k, force=True),
            lambda k: service.extend_share(ACME, k, 5),
            lambda k: service.shrink_share(ACME, k, 1),
            lambda k: service.set_share_cache(ACME, k, "none"),
            lambda k: service.allow(ACME, k, "ip", "192.168.0.0/16"),
            lambda k: service.deny(ACME, k, rule.id),
            lambda k: service.list_rules(ACME, k),
        ):
            with pytest.raises(NotFound) as err:
                action(key)
            assert str(err.value) == f"no share {key!r}"
    with pytest.raises(NotFound) as missing:
        service.get_share(ACME, "no-such-share")
    assert str(missing.value) == "no share 'no-such-share'"
    # ... and nothing of theirs changed.
    after = service.get_share(ADMIN, "theirs")
    assert after.size_gib == 2 and after.status is ShareStatus.AVAILABLE
    assert after.cache == "meta"
    assert [r.id for r in service.list_rules(GLOBEX, "theirs")] == [rule.id]
    assert share_dir(volume, theirs.id).is_dir()
    # The admin manages everyone's.
    service.extend_share(ADMIN, "mine", 3)
    service.deny(ADMIN, "theirs", rule.id)
    service.delete_share(ADMIN, mine.id)
    assert [s.name for s in service.list_shares(ADMIN)] == ["theirs"]


def test_instances_are_registered_by_the_admin_and_seen_by_their_tenant(
    service: ControlService, store: SqliteStore
) -> None:
    acme_vm = service.register_instance(ADMIN, VM.upper(), tenant="acme", name="web", cids=[42])
    assert acme_vm.uuid == VM and acme_vm.instance.cids == frozenset({42})
    service.register_instance(ADMIN, "vm-globex", tenant="globex", ips=["10.0.0.9"])

    with pytest.raises(Forbidden, match="only the admin may register instances"):
        service.register_instance(ACME, "vm-2", tenant="acme", cids=[43])
    with pytest.raises(Forbidden, match="only the admin may remove instances"):
        service.remove_instance(ACME, VM)

    assert [i.uuid for i in service.list_instances(ACME)] == [VM]
    assert [i.uuid for i in service.list_instances(GLOBEX)] == ["vm-globex"]
    assert len(service.list_instances(ADMIN)) == 2
    with pytest.raises(Forbidden):
        service.list_instances(ACME, tenant="globex")
    assert service.get_instance(ACME, VM).instance.name == "web"
    with pytest.raises(NotFound) as err:
        service.get_instance(ACME, "vm-globex")
    assert str(err.value) == "no instance 'vm-globex'"

    with pytest.raises(Conflict, match="is registered; remove it first, or replace it"):
        service.register_instance(ADMIN, VM, tenant="acme", cids=[44])
    with pytest.raises(Conflict, match="cid 42 belongs to instance"):
        service.register_instance(ADMIN, "vm-3", tenant="acme", cids=[42])
    moved = service.register_instance(ADMIN, VM, tenant="acme", cids=[44], replace=True)
    assert moved.instance.cids == frozenset({44})

    service.remove_instance(ADMIN, VM)
    with pytest.raises(NotFound):
        store.get_instance(VM)
    with pytest.raises(NotFound):
        service.remove_instance(ADMIN, VM)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tenant": "acme"}, "needs at least one of cid, socket, ip, cert"),
        ({"tenant": "", "cids": [42]}, "give the tenant"),
        ({"tenant": "acme", "cids": [2]}, "cid 2 is not a guest CID"),
        ({"tenant": "acme", "sockets": ["relative.sock"]}, "must be an absolute path"),
        ({"tenant": "acme", "ips": ["10.0.0.0/8"]}, "does not appear to be an IPv4 or IPv6"),
        ({"tenant": "acme", "certs": ["abc"]}, "is not a SHA-256 fingerprint"),
    ],
)
def test_bad_instances_are_one_line_value_errors(
    service: ControlService, fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as err:
        service.register_instance(ADMIN, VM, **fields)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)
    assert service.list_instances(ADMIN) == []


def test_instance_uuid_spellings() -> None:
    assert instance_uuid(VM.upper()) == VM
    assert instance_uuid("{" + VM + "}") == VM
    assert instance_uuid("i-0abc.def:1") == "i-0abc.def:1"
    for bad in ("", " x", "a b", "-x", "x" * 256, "a\x00b"):
        with pytest.raises(ValueError):
            instance_uuid(bad)


# --- gateways and tokens ------------------------------------------------------------------


def test_gateways_are_listed_for_the_admin_only(
    service: ControlService, store: SqliteStore
) -> None:
    store.heartbeat(GatewayRecord(id="hv-1", addresses=("vsock://any:564",)), ttl_seconds=30)
    (gw,) = service.list_gateways(ADMIN)
    assert gw.gateway.id == "hv-1" and gw.healthy
    with pytest.raises(Forbidden):
        service.list_gateways(ACME)


def test_tokens_are_stored_hashed_and_authenticate_their_caller(
    service: ControlService, store: SqliteStore
) -> None:
    record, secret = service.create_token(ADMIN, "ops")
    assert len(secret) >= 43 and secret not in record.hash
    assert store.find_token(record.hash) == record
    for path in Path(store.path).parent.glob("state.db*"):  # the database, its WAL
        assert secret.encode() not in path.read_bytes()
    assert service.authenticate(secret) == Caller(admin=True, name="ops")
    _, tenant_secret = service.create_token(ADMIN, "acme-ci", tenant="acme")
    assert service.authenticate(tenant_secret) == Caller(tenant="acme", name="acme-ci")
    assert service.authenticate("") is None
    assert service.authenticate(secret + "x") is None
    with pytest.raises(Conflict, match="token 'ops' exists"):
        service.create_token(ADMIN, "ops")
    with pytest.raises(Forbidden):
        service.create_token(ACME, "mine")
    with pytest.raises(Forbidden):
        service.list_tokens(ACME)
    ops = Caller(admin=True, name="ops")
    with pytest.raises(Conflict, match="is the one this request uses"):
        service.revoke_token(ops, "ops")
    service.revoke_token(ops, "acme-ci")
    assert service.authenticate(tenant_secret) is None
    assert [t.name for t in service.list_tokens(ops)] == ["ops"]


def test_caller_invariants() -> None:
    with pytest.raises(ValueError):
        Caller(tenant="acme", admin=True)
    with pytest.raises(ValueError):
        Caller()
    assert ADMIN.owns("anyone") and ACME.owns("acme") and not ACME.owns("globex")


def test_volume_tables() -> None:
    assert parse_volume("default=posix:/srv/vol") == ("default", "posix:/srv/vol")
    for bad in ("default", "=posix:/x", "bad name=posix:/x", "v=", "v=nocolon"):
        with pytest.raises(ValueError):
            parse_volume(bad)
    with pytest.raises(ValueError, match="are both posix:/x"):
        Volumes({"a": "posix:/x", "b": "posix:/x"})
    with pytest.raises(ValueError, match="at least one volume"):
        Volumes({})
    assert Volumes().default == "default"
    assert Volumes({"b": "posix:/b", "a": "posix:/a"}).default == "b"
