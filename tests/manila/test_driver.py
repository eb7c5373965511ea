"""The Manila driver, imported from the real ``manila`` package, against a real
``vshare api run`` and a real gateway following its store: what Manila's share manager
calls, and a guest (a Nova instance, known to the gateway) mounting through the gateway
to see each access rule enforced."""

from __future__ import annotations

import errno
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from manila import exception

from tests.manila.conftest import (
    VshareNode,
    backend_config,
    private_storage,
    rule,
    share_instance,
)
from tests.processes import stop
from vshare import protocol as p
from vshare.client import Share, open_client
from vshare.manila.driver import VshareShareDriver

GIB = 1 << 30


def make_driver(node: VshareNode, context: Any) -> VshareShareDriver:
    """The driver as manila-share builds it: its backend section, private storage, then
    do_setup and check_for_setup_error."""
    loaded = VshareShareDriver(
        configuration=backend_config(node), private_storage=private_storage(context)
    )
    loaded.do_setup(context)
    loaded.check_for_setup_error()
    return loaded


def guest(uri: str, share: str, name: str = "", data: bytes = b"") -> str:
    """A guest of the gateway: attach ``share``; with ``name``, create it and write
    ``data``, else list the root. ``ok`` or the errno's name."""

    async def run() -> str:
        async with open_client(uri, 65536) as c:
            try:
                root, _ = await c.attach(share)
                fid = c.new_fid()
                await c.call(p.Twalk(root, fid, ()), p.Rwalk)
                if name:
                    await c.call(p.Tlcreate(fid, name, p.DOTL_RDWR, 0o644, 0), p.Rlcreate)
                    await c.call(p.Twrite(fid, 0, data), p.Rwrite)
                else:
                    await c.call(p.Tgetattr(fid, p.GETATTR_BASIC), p.Rgetattr)
            except OSError as exc:
                return errno.errorcode[exc.errno or 0]
            return "ok"

    return anyio.run(run)


def eventually(expected: str, check: Callable[[], str], within: float = 2.0) -> None:
    """``check()`` answers ``expected`` within ``within`` seconds. For level changes: a rule
    keeps its state when its level changes, so the driver cannot wait for gateways to
    apply one; they do within their follow cycle (docs/architecture.md: 13-16 ms here)."""
    deadline = time.monotonic() + within
    while (got := check()) != expected:
        assert time.monotonic() < deadline, f"still {got}, not {expected}, after {within} s"
        time.sleep(0.02)


def vshare_share(node: VshareNode, name: str) -> dict[str, Any] | None:
    with node.http() as api:
        answer = api.get(f"/v1/shares/{name}")
    return None if answer.status_code == 404 else answer.json()


def vshare_rules(node: VshareNode, name: str) -> list[tuple[str, str, str, str]]:
    with node.http() as api:
        rules = api.get(f"/v1/shares/{name}/access").json()["access"]
    return sorted((r["access_type"], r["access_to"], r["access_level"], r["state"]) for r in rules)


def test_setup_refuses_a_tenant_token_and_a_missing_one(node: VshareNode, manila_db: Any) -> None:
    tenant_token = node.token
    try:
        node.token = httpx.post(
            f"{node.url}/v1/tokens", json={"name": "tenant-tok", "tenant": "t1"},
            headers={"Authorization": f"Bearer {tenant_token}"},
        ).json()["secret"]  # fmt: skip
        with pytest.raises(exception.BadConfigurationException, match="needs an admin token"):
            make_driver(node, manila_db)
        node.token = ""
        with pytest.raises(exception.BadConfigurationException, match="vshare_api_token"):
            make_driver(node, manila_db)
    finally:
        node.token = tenant_token


def test_a_share_through_its_life_with_an_instance_mounting_it(
    node: VshareNode, manila_db: Any
) -> None:
    drv = make_driver(node, manila_db)
    project = uuid.uuid4().hex
    vm, other_vm = str(uuid.uuid4()), str(uuid.uuid4())
    node.register_instance(vm, project)  # the gateway knows it by 127.0.0.1
    share = share_instance(project, size=2)
    name = share["id"]
    gw = node.gateway_uri

    # create: a vshare share named by the instance id, of the project, 2 GiB
    locations = drv.create_share(manila_db, share)
    created = vshare_share(node, name)
    assert created is not None
    assert (created["tenant"], created["size_gib"], created["status"]) == (project, 2, "available")
    paths = [loc["path"] for loc in locations]
    assert paths[0] == f"vsock://2:564/{name}" and locations[0]["preferred"]
    assert paths[1] == f"{gw}/{name}"
    assert paths[2] == f"vshare mount --kernel vsock://2:564 {name} /mnt/{name}"
    assert guest(gw, name) == "EACCES"  # no rule yet

    # a rule for another instance grants nothing to this one
    other = rule("user", other_vm, "rw")
    assert drv.update_access(manila_db, share, [other], [other], [], []) == {}
    assert guest(gw, name) == "EACCES"

    # ro for the instance: it attaches, reads, and cannot write
    ro = rule("user", vm.upper(), "ro")  # Nova UUIDs in any case
    assert drv.update_access(manila_db, share, [other, ro], [ro], [], []) == {}
    assert vshare_rules(node, name) == sorted(
        [("instance", other_vm, "rw", "active"), ("instance", vm, "ro", "active")]
    )
    assert guest(gw, name) == "ok"
    assert guest(gw, name, "f", b"no") == "EROFS"

    # rw (Manila's access-level update): it writes
    rw = {**ro, "access_level": "rw", "state": "updating"}
    assert drv.update_access(manila_db, share, [other, rw], [], [], [rw]) == {}
    eventually("ok", lambda: guest(gw, name, "f", b"written by the instance"))
    share_dir = node.volume / "shares" / created["id"]
    assert (share_dir / "f").read_bytes() == b"written by the instance"

    # deny (incremental): refused again at once, and the other rule stays
    assert drv.update_access(manila_db, share, [other], [], [rw], []) == {}
    assert guest(gw, name) == "EACCES"
    assert vshare_rules(node, name) == [("instance", other_vm, "rw", "active")]

    # rw again, then extend: the guest sees the new size
    assert drv.update_access(manila_db, share, [other, rw], [rw], [], []) == {}
    drv.extend_share(share, 3)
    assert vshare_share(node, name)["size_gib"] == 3  # type: ignore[index]
    with Share(gw, name) as s:
        eventually("3 GiB", lambda: f"{s.statfs().f_blocks * s.statfs().f_frsize // GIB} GiB")
        # 2.5 GiB of (sparse) file, written by the instance through the gateway
        s.write_bytes("big", b"x")
        s.truncate("big", 5 * GIB // 2)

    # shrink below usage: refused as Manila says (possible data loss), size unchanged
    with pytest.raises(exception.ShareShrinkingPossibleDataLoss):
        drv.shrink_share(share, 2)
    assert vshare_share(node, name)["size_gib"] == 3  # type: ignore[index]
    with Share(gw, name) as s:
        s.truncate("big", GIB // 2)
    drv.shrink_share(share, 1)
    assert vshare_share(node, name)["size_gib"] == 1  # type: ignore[index]

    # extend over the operator's limits is Manila's ShareExtendingError
    with pytest.raises(exception.ShareExtendingError, match="GiB"):
        drv.extend_share(share, 10**7)

    # delete: the share and its files go; a second delete is no error
    drv.delete_share(manila_db, share)
    assert vshare_share(node, name) is None
    assert not share_dir.exists()
    drv.delete_share(manila_db, share)


def test_rules_vshare_cannot_enforce_show_error_alone(node: VshareNode, manila_db: Any) -> None:
    drv = make_driver(node, manila_db)
    project = uuid.uuid4().hex
    share = share_instance(project)
    drv.create_share(manila_db, share)
    good = rule("ip", "10.0.0.7/8", "ro")
    cert = rule("cert", "client.example.com", "rw")
    bad_user = rule("user", "alice")  # a name: not an identity a hypervisor vouches for
    cephx = rule("cephx", "alice")
    bad_level = rule("ip", "10.1.1.1", "rx")
    wanted = [good, cert, bad_user, cephx, bad_level]
    updates = drv.update_access(manila_db, share, wanted, wanted, [], [])
    assert updates == {r["id"]: {"state": "error"} for r in (bad_user, cephx, bad_level)}
    assert vshare_rules(node, share["id"]) == [
        ("cert", "client.example.com", "rw", "active"),
        ("ip", "10.0.0.0/8", "ro", "active"),
    ]
    # deleting a refused rule is no error (Manila's contract: it never existed)
    assert drv.update_access(manila_db, share, [good, cert], [], [bad_user, cephx], []) == {}
    drv.delete_share(manila_db, share)


def test_full_sync_makes_vshare_match_manila(node: VshareNode, manila_db: Any) -> None:
    """update_access with no add/delete/update rules (Manila's recovery, and ensure_shares'
    reapply): rules vshare has and Manila does not are denied, levels are corrected, and
    missing ones are made."""
    drv = make_driver(node, manila_db)
    share = share_instance(uuid.uuid4().hex)
    name = share["id"]
    drv.create_share(manila_db, share)
    with node.http() as api:
        for body in (
            {"access_type": "ip", "access_to": "192.0.2.1", "access_level": "rw"},  # stray
            {"access_type": "ip", "access_to": "192.0.2.2", "access_level": "rw"},  # wrong level
        ):
            assert api.post(f"/v1/shares/{name}/access", json=body).status_code == 201
    wanted = [rule("ip", "192.0.2.2", "ro"), rule("ip", "192.0.2.3", "rw")]
    assert drv.update_access(manila_db, share, wanted, [], [], []) == {}
    assert vshare_rules(node, name) == [
        ("ip", "192.0.2.2", "ro", "active"),
        ("ip", "192.0.2.3", "rw", "active"),
    ]
    drv.delete_share(manila_db, share)


def test_stats_are_honest(node: VshareNode, manila_db: Any) -> None:
    drv = make_driver(node, manila_db)
    share = share_instance(uuid.uuid4().hex, size=4)
    drv.create_share(manila_db, share)
    stats = drv.get_share_stats(refresh=True)
    assert stats["share_backend_name"] == "VSHARE"
    assert stats["driver_handles_share_servers"] is False
    assert stats["snapshot_support"] is False
    assert stats["create_share_from_snapshot_support"] is False
    assert stats["storage_protocol"] == "NFS"
    # the volume's file system, as statvfs says (free moves as the machine writes)
    fs = os.statvfs(node.volume)
    assert stats["total_capacity_gb"] == round(fs.f_blocks * fs.f_frsize / 2**30, 3)
    assert 0 < stats["free_capacity_gb"] <= stats["total_capacity_gb"]
    assert stats["allocated_capacity_gb"] >= 4
    assert drv.get_network_allocations_number() == 0
    drv.delete_share(manila_db, share)


def test_manage_and_unmanage_an_existing_share(node: VshareNode, manila_db: Any) -> None:
    drv = make_driver(node, manila_db)
    project = uuid.uuid4().hex
    with node.http() as api:
        made = api.post("/v1/shares", json={"name": f"docs-{project[:8]}", "size_gib": 5,
                                            "tenant": project})  # fmt: skip
        assert made.status_code == 201, made.text
    existing = made.json()
    share = share_instance(
        project, export_locations=[{"path": f"vsock://2:564/{existing['name']}"}]
    )
    managed = drv.manage_existing(share, {})
    assert managed["size"] == 5
    assert managed["export_locations"][0]["path"] == f"vsock://2:564/{existing['name']}"
    # later calls find it by what the private storage remembers, not by the instance id
    drv.extend_share(share, 6)
    assert vshare_share(node, existing["name"])["size_gib"] == 6  # type: ignore[index]
    # another project's share, or one that does not exist, is refused in Manila's terms
    stranger = share_instance(uuid.uuid4().hex, export_locations=share["export_locations"])
    with pytest.raises(exception.ManageInvalidShare, match="not project"):
        drv.manage_existing(stranger, {})
    missing = share_instance(project, export_locations=[{"path": "vsock://2:564/nope"}])
    with pytest.raises(exception.ManageInvalidShare, match="no share 'nope'"):
        drv.manage_existing(missing, {})
    # unmanage: Manila forgets it, vshare keeps it
    drv.unmanage(share)
    assert vshare_share(node, existing["name"]) is not None
    assert drv.private_storage.get(share["id"], "vshare_share") is None


def test_restart_and_ensure_shares(node: VshareNode, manila_db: Any) -> None:
    """manila-share, the API and the gateway restart: ensure_shares finds the shares on the
    same store (export locations again, rules re-applied by Manila), and reports a share
    lost behind Manila's back as error; the instance's rule still holds."""
    drv = make_driver(node, manila_db)
    project = uuid.uuid4().hex
    vm = str(uuid.uuid4())
    node.register_instance(vm, project)
    kept, lost = share_instance(project), share_instance(project)
    for share in (kept, lost):
        drv.create_share(manila_db, share)
    access = rule("user", vm, "rw")
    drv.update_access(manila_db, kept, [access], [access], [], [])
    with node.http() as api:  # an operator deletes one behind Manila's back
        assert api.delete(f"/v1/shares/{lost['id']}", params={"force": "true"}).status_code == 204

    stop(node.gateway)
    node.stop_api()
    node.start_api()
    node.start_gateway()
    drv = make_driver(node, manila_db)  # manila-share's restart builds a new driver

    updates = drv.ensure_shares(manila_db, [kept, lost])
    assert updates[lost["id"]] == {"status": "error"}
    assert updates[kept["id"]]["status"] == "available"
    assert updates[kept["id"]]["reapply_access_rules"] is True
    paths = [loc["path"] for loc in updates[kept["id"]]["export_locations"]]
    assert paths[0] == f"vsock://2:564/{kept['id']}"
    assert drv.ensure_share(manila_db, kept)[0]["path"] == paths[0]
    with pytest.raises(exception.ShareResourceNotFound):
        drv.ensure_share(manila_db, lost)
    # Manila re-applies the rules it holds (a full sync): nothing changes, the VM writes
    assert drv.update_access(manila_db, kept, [access], [], [], []) == {}
    assert vshare_rules(node, kept["id"]) == [("instance", vm, "rw", "active")]
    eventually("ok", lambda: guest(node.gateway_uri, kept["id"], "after-restart", b"x"))
    drv.delete_share(manila_db, kept)
    drv.delete_share(manila_db, lost)  # already gone: no error
