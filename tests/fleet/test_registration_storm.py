"""A fleet registering at once: every store write is a compare-and-swap on one etcd key,
so 120 gateways registering in the same instant race each other. With a 50 ms backoff
cap about 40 % of them gave up after ``write_timeout`` (10 s) on this machine; with
backoff up to 1 s, 0-56 of them did, run to run; taking turns after a lost race
(``vshare.store._etcd_queue``), all commit in about 5 s. ``pytest -s`` prints the time."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from vshare.store import GatewayRecord, StoreError
from vshare.store.etcd import EtcdStore
from vshare.testing.etcd import EtcdServer

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

WRITERS = 120


def test_a_fleet_registering_at_once_all_commit(etcd: EtcdServer) -> None:
    prefix = f"/storm-{uuid.uuid4().hex[:8]}/"
    stores = [EtcdStore([etcd.endpoint], prefix=prefix) for _ in range(WRITERS)]
    failed: list[str] = []
    go = threading.Event()

    def register(n: int) -> None:
        go.wait()
        try:
            stores[n].heartbeat(GatewayRecord(id=f"hv-{n:03d}"), 30)
        except StoreError as exc:
            failed.append(str(exc))

    threads = [threading.Thread(target=register, args=(n,)) for n in range(WRITERS)]
    try:
        for t in threads:
            t.start()
        start = time.monotonic()
        go.set()
        for t in threads:
            t.join(60)
        took = time.monotonic() - start
        print(f"\n{WRITERS} registrations at once: {took:.1f} s, {len(failed)} failed")
        assert not failed, f"{len(failed)} of {WRITERS} gave up: {failed[0]}"
        listed = stores[0].list_gateways()
        assert len(listed) == WRITERS and all(g.healthy for g in listed)
        assert stores[0].revision() == WRITERS  # one revision each, none lost or doubled
    finally:
        for s in stores:
            s.close()
