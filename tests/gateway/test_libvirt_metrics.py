"""The libvirt follower's status as metrics (``vshare_libvirt_*``), through the gateway,
against libvirt's in-process test driver (``test:///default``)."""

from __future__ import annotations

import anyio
import pytest
from prometheus_client import generate_latest

from .conftest import GatewayFactory, Running
from .test_libvirt_events import CidHistory, Domains

pytest.importorskip("libvirt", reason="libvirt-python is not installed")
pytestmark = pytest.mark.anyio


def scrape(gw: Running) -> dict[str, float]:
    text = generate_latest(gw.gateway.ctx.metrics.registry).decode()
    return {
        name: float(value)
        for line in text.splitlines()
        if line.startswith("vshare_libvirt")
        for name, value in [line.rsplit(" ", 1)]
    }


async def test_libvirt_metrics_follow_the_follower(start_gateway: GatewayFactory) -> None:
    domains = Domains("test:///default")
    try:
        async with start_gateway(libvirt="test:///default", libvirt_poll=30.0) as gw:
            status = gw.gateway.libvirt_status
            with anyio.fail_after(5):
                while status.mode != "events":
                    await anyio.sleep(0.005)
            history = CidHistory(gw.gateway.instances, 7)
            a = await domains.start("metrics-vm", "t1", 7)
            await history.wait(a)
            await domains.destroy(a)
            await history.wait(None)
            m = scrape(gw)
        assert m['vshare_libvirt_mode{mode="events"}'] == 1.0
        assert m['vshare_libvirt_mode{mode="polling"}'] == 0.0
        assert m["vshare_libvirt_connects_total"] == 1.0
        assert m["vshare_libvirt_cids_learned_total"] >= 1.0
        assert m["vshare_libvirt_cids_forgotten_total"] >= 1.0
        assert "vshare_libvirt_resyncs_total" in m
        assert 0 <= m["vshare_libvirt_forget_lag_seconds"] < 1.0
    finally:
        domains.close()


async def test_no_libvirt_metrics_without_libvirt(gw: Running) -> None:
    assert scrape(gw) == {}
