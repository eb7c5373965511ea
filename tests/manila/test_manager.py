"""Manila's own share service with the vshare driver loaded: ``manila.share.manager.
ShareManager`` (what ``manila-share`` runs), its database on SQLite, oslo.messaging's
in-process ``fake://`` transport, and Manila's quota engine, against a real vshare API and
gateway. Shares and rules are made in Manila's database as manila-api makes them, then the
manager is called as manila-api's RPC casts call it; states are read back from Manila's
database, and the guest checks enforcement through the gateway.

Not run here: manila-api (its WSGI stack and Keystone auth), manila-scheduler (share
placement; a share is given its host as the scheduler would), and RabbitMQ (the fake
transport delivers casts to nobody, which only affects notifications and the scheduler's
capability updates).
"""

from __future__ import annotations

import errno
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from manila import db, exception, quota, rpc
from manila.common import constants
from manila.share import configuration
from manila.share import manager as share_manager
from manila.tests import db_utils
from oslo_config import cfg

from tests.manila.conftest import BACKEND, HOST, VshareNode, backend_config
from tests.manila.test_driver import eventually, guest, vshare_rules, vshare_share
from tests.processes import stop
from vshare.client import Share

CONF = cfg.CONF
DRIVER = "vshare.manila.driver.VshareShareDriver"


def grow(gw: str, share: str, name: str, size: int) -> str:
    """Make ``name`` in ``share`` ``size`` bytes long (sparse): "ok", or the errno's name."""
    try:
        with Share(gw, share) as s:
            s.write_bytes(name, b"x")
            s.truncate(name, size)
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    return "ok"


def start_manager(node: VshareNode, context: Any) -> Any:
    """manila-share's start for one backend: the manager loads the driver by its path in
    the backend's section, then init_host (do_setup, checks, ensure_shares if the
    backend's info changed, capabilities)."""
    backend_config(node)
    configuration.Configuration(share_manager.share_manager_opts, config_group=BACKEND)
    CONF.set_override("share_driver", DRIVER, group=BACKEND)
    CONF.set_override("enabled_share_backends", [BACKEND])
    manager = share_manager.ShareManager(service_name=BACKEND, host=HOST)
    manager.init_host()
    assert type(manager.driver).__name__ == "VshareShareDriver"
    return manager


@pytest.fixture(scope="module")
def messaging(manila_db: Any) -> Iterator[Any]:
    rpc.init(CONF)  # registers transport_url (the default would be RabbitMQ's)
    rpc.cleanup()
    CONF.set_override("transport_url", "fake:/")
    rpc.init(CONF)
    # the service row manila-share's service wrapper makes at start (ensure_shares reads it)
    service = {"host": HOST, "binary": "manila-share", "topic": "manila-share"}
    db.service_create(manila_db, {**service, "report_count": 0, "availability_zone": "nova"})
    try:
        yield manila_db
    finally:
        rpc.cleanup()


def instance_of(context: Any, share_id: str) -> Any:
    return db.share_get(context, share_id).instance


def rule_state(context: Any, instance_id: str, access_id: str) -> str:
    mapping = db.share_instance_access_get(context, access_id, instance_id)
    return str(mapping["state"])


def test_share_manager_runs_the_driver(node: VshareNode, messaging: Any) -> None:
    ctx = messaging
    project = uuid.uuid4().hex
    vm = str(uuid.uuid4())
    node.register_instance(vm, project)
    manager = start_manager(node, ctx)

    # manila-api: the share row, scheduled to this backend; the manager creates it
    share = db_utils.create_share(
        project_id=project, size=2, host=f"{HOST}#VSHARE", status=constants.STATUS_CREATING
    )
    instance_id = share.instance["id"]
    manager.create_share_instance(ctx, instance_id)
    created = instance_of(ctx, share["id"])
    assert created["status"] == constants.STATUS_AVAILABLE
    paths = [e["path"] for e in created["export_locations"]]
    assert f"vsock://2:564/{instance_id}" in paths
    assert vshare_share(node, instance_id)["tenant"] == project  # type: ignore[index]

    # manila-api's allow_access: rules queued, the manager applies them through the driver
    ro = db_utils.create_access(
        share_id=share["id"], access_type="user", access_to=vm, access_level="ro"
    )
    bad = db_utils.create_access(share_id=share["id"], access_type="user", access_to="alice")
    manager.update_access(ctx, instance_id)
    assert rule_state(ctx, instance_id, ro["id"]) == constants.ACCESS_STATE_ACTIVE
    assert rule_state(ctx, instance_id, bad["id"]) == constants.ACCESS_STATE_ERROR
    gw = node.gateway_uri
    assert guest(gw, instance_id) == "ok"
    assert guest(gw, instance_id, "f", b"x") == "EROFS"

    # deny: Manila queues it, the manager withdraws it, the guest is refused
    db.share_instance_access_update(
        ctx, ro["id"], instance_id, {"state": constants.ACCESS_STATE_QUEUED_TO_DENY}
    )
    manager.update_access(ctx, instance_id)
    assert guest(gw, instance_id) == "EACCES"
    rw = db_utils.create_access(
        share_id=share["id"], access_type="user", access_to=vm, access_level="rw"
    )
    manager.update_access(ctx, instance_id)
    eventually("ok", lambda: guest(gw, instance_id, "f", b"x"))

    # extend, with Manila's quota reservation as manila-api makes it
    reservations = quota.QUOTAS.reserve(ctx, project_id=project, gigabytes=1, user_id="fake")
    manager.extend_share(ctx, share["id"], 3, reservations)
    assert db.share_get(ctx, share["id"])["size"] == 3
    assert vshare_share(node, instance_id)["size_gib"] == 3  # type: ignore[index]

    # shrink below usage: Manila keeps the share available at its size, with a message.
    # The gateway applies the new size within its follow cycle, as it does rules: until
    # then the old 2 GiB holds, and 2.5 GiB is refused (EDQUOT).
    eventually("ok", lambda: grow(gw, instance_id, "big", 5 << 29))  # 2.5 GiB
    with pytest.raises(exception.ShareShrinkingError, match="possible data loss"):
        manager.shrink_share(ctx, share["id"], 1)  # raised into the RPC cast, logged
    after = db.share_get(ctx, share["id"])
    assert (after["size"], after["status"]) == (3, constants.STATUS_AVAILABLE)
    assert vshare_share(node, instance_id)["size_gib"] == 3  # type: ignore[index]

    # restart: API, gateway and manila-share; an operator adds a gateway URI, so the
    # backend's info changes and init_host runs ensure_shares
    stop(node.gateway)
    node.stop_api()
    node.start_api()
    node.start_gateway()
    CONF.set_override("vshare_gateway_uris", ["vsock://2:564", gw, "tcp://192.0.2.9:564"],
                      group=BACKEND)  # fmt: skip
    manager = share_manager.ShareManager(service_name=BACKEND, host=HOST)
    manager.init_host()
    ensured = instance_of(ctx, share["id"])
    assert ensured["status"] == constants.STATUS_AVAILABLE
    assert f"tcp://192.0.2.9:564/{instance_id}" in [e["path"] for e in ensured["export_locations"]]
    assert rule_state(ctx, instance_id, rw["id"]) == constants.ACCESS_STATE_ACTIVE
    assert vshare_rules(node, instance_id) == [("instance", vm, "rw", "active")]
    eventually("ok", lambda: guest(gw, instance_id, "g", b"after restart"))

    # delete
    manager.delete_share_instance(ctx, instance_id)
    assert vshare_share(node, instance_id) is None
