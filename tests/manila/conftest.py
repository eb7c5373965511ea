"""What the Manila driver's tests run against: the real ``manila`` package (PyPI, installed
by the ``dev`` extra), a real ``vshare api run`` process and a real ``vshare gateway run``
following the same SQLite store, and Manila's own database (SQLite in memory, its models) for the
driver's private storage and the share manager.

Nothing of Manila or vshare is faked. A Manila share instance given to the driver directly
is a plain mapping with the fields Manila's share-instance model has (as Manila's own
driver tests pass), or, in test_manager.py, the model itself from Manila's database.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from manila import context as manila_context
from manila.db.sqlalchemy import api as db_api
from manila.db.sqlalchemy import models as db_models
from manila.share import configuration, driver
from manila.share import drivers_private_data as private_data
from oslo_config import cfg

from tests.api.server import vshare
from tests.processes import VSHARE, free_port, stop, wait_for
from vshare.manila import vshare_opts

CONF = cfg.CONF
BACKEND = "vshare1"
HOST = f"manila-host@{BACKEND}"


@dataclass
class VshareNode:
    """One store and volume, with an API process and a gateway process on them; either
    can be restarted on the same data (and port)."""

    tmp: Path
    api_port: int = field(default_factory=free_port)
    gateway_port: int = field(default_factory=free_port)
    api: subprocess.Popen[bytes] | None = None
    gateway: subprocess.Popen[bytes] | None = None
    token: str = ""

    @property
    def store(self) -> str:
        return f"sqlite://{self.tmp / 'state.db'}"

    @property
    def volume(self) -> Path:
        return self.tmp / "vol"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def gateway_uri(self) -> str:
        return f"tcp://127.0.0.1:{self.gateway_port}"

    def start_api(self) -> None:
        self.volume.mkdir(parents=True, exist_ok=True)
        if not self.token:
            self.token = vshare("api", "token", "create", "manila", "--store", self.store).stdout
            self.token = self.token.strip()
        command = [
            VSHARE, "api", "run", "--listen", f"127.0.0.1:{self.api_port}",
            "--store", self.store, "--volume", f"default=posix:{self.volume}",
        ]  # fmt: skip
        with (self.tmp / "api.log").open("ab") as log:
            self.api = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        proc = self.api

        def up() -> bool:
            assert proc.poll() is None, (self.tmp / "api.log").read_text()
            try:
                return httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, 30, "the API answers /v1/health")

    def stop_api(self) -> None:
        if self.api is not None:
            self.api.send_signal(signal.SIGTERM)
            assert self.api.wait(20) == 0, (self.tmp / "api.log").read_text()
            self.api = None

    def start_gateway(self) -> None:
        command = [
            VSHARE, "gateway", "run", "--listen", self.gateway_uri,
            "--backend", f"posix:{self.volume}", "--store", self.store,
        ]  # fmt: skip
        with (self.tmp / "gateway.log").open("ab") as log:
            self.gateway = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        proc = self.gateway

        def listening() -> bool:
            assert proc.poll() is None, (self.tmp / "gateway.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", self.gateway_port), timeout=1).close()
            except OSError:
                return False
            return True

        wait_for(listening, 30, "the gateway listens")

    def http(self) -> httpx.Client:
        """vshare's API as the operator uses it (the driver's own token: an admin's)."""
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def register_instance(self, instance: str, project: str, ip: str = "127.0.0.1") -> None:
        """What the gateway's libvirt follower or the operator does on a compute host:
        the Nova instance, its project, and how the gateway knows it (here its address,
        since this host has no vsock loopback; docs/architecture.md). An address names
        one instance: an earlier test's instance there is removed first."""
        with self.http() as api:
            for known in api.get("/v1/instances").json()["instances"]:
                if ip in known["ips"]:
                    assert api.delete(f"/v1/instances/{known['uuid']}").status_code == 204
            answer = api.put(f"/v1/instances/{instance}", json={"tenant": project, "ips": [ip]})
            assert answer.status_code in (200, 201), answer.text

    def close(self) -> None:
        stop(self.gateway)
        self.stop_api()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VshareNode]:
    running = VshareNode(tmp_path_factory.mktemp("vshare"))
    try:
        running.start_api()
        running.start_gateway()
        yield running
    finally:
        running.close()


@pytest.fixture(scope="session")
def manila_db(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Manila's configuration parsed (no files), its database on SQLite with the models'
    schema (as Manila's own tests make it), and an admin request context."""
    state = tmp_path_factory.mktemp("manila")
    CONF([], project="manila", default_config_files=[], default_config_dirs=[])
    # In memory, as Manila's own tests run it: one connection, so the manager's nested
    # sessions (the driver's private storage inside its transactions) never meet a lock.
    CONF.set_override("connection", "sqlite://", group="database")
    CONF.set_override("state_path", str(state))
    CONF.set_override("lock_path", str(state), group="oslo_concurrency")
    engine = db_api.get_engine()
    db_models.BASE.metadata.create_all(engine)
    return manila_context.get_admin_context()


def backend_config(node: VshareNode, group: str = BACKEND) -> Any:
    """A backend section of manila.conf, as ``[vshare1]`` with the driver's options."""
    conf = configuration.Configuration(driver.share_opts, config_group=group)
    conf.append_config_values(vshare_opts)
    for name, value in {
        "share_backend_name": "VSHARE",
        "driver_handles_share_servers": False,
        "vshare_api_endpoint": node.url,
        "vshare_api_token": node.token,
        "vshare_gateway_uris": ["vsock://2:564", node.gateway_uri],
        "vshare_rule_timeout": 10.0,
    }.items():
        CONF.set_override(name, value, group=group)
    return conf


def private_storage(context: Any) -> Any:
    """Manila's private driver storage, in its database (what the share manager gives)."""
    return private_data.DriverPrivateData(context=context, backend_host=HOST)


def share_instance(project: str, size: int = 1, **fields: Any) -> dict[str, Any]:
    """A Manila share instance as the manager hands it to a driver (the fields drivers
    read)."""
    instance_id = str(uuid.uuid4())
    share: dict[str, Any] = {
        "id": instance_id,
        "share_id": str(uuid.uuid4()),
        "name": f"share-{instance_id}",
        "project_id": project,
        "size": size,
        "share_proto": "NFS",
        "host": f"{HOST}#VSHARE",
        "export_locations": [],
        "share_server_id": None,
        "share_group_id": None,
    }
    share.update(fields)
    return share


def rule(access_type: str, access_to: str, level: str = "rw") -> dict[str, Any]:
    """A Manila access rule as update_access receives it."""
    return {
        "id": str(uuid.uuid4()),
        "access_type": access_type,
        "access_to": access_to,
        "access_level": level,
        "access_key": None,
        "state": "applying",
    }
