"""Python's cyclic collector under tenants that hold a lot (gateway/collector.py): an
oldest pass scans what they hold once; what it froze is state in use."""

from __future__ import annotations

import gc
import time
from typing import Any

import anyio
import pytest
from prometheus_client import generate_latest

from vshare.gateway import collector
from vshare.gateway.collector import COLLECTOR

from .conftest import GatewayFactory
from .test_budgets import a_session_of_every_kind, fids_of_one_session, shares
from .test_pipelining import sessions_ended

pytestmark = pytest.mark.anyio


class Scanned:
    """The objects each pass of the collector had to scan, by generation (counted at its
    start: the objects of its generation and the younger ones, frozen ones not)."""

    def __init__(self) -> None:
        self.largest: dict[int, int] = {}

    def __enter__(self) -> Scanned:
        gc.callbacks.append(self._on_pass)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._on_pass)

    def _on_pass(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "start":
            return
        generation = info["generation"]
        count = sum(len(gc.get_objects(g)) for g in range(generation + 1))
        self.largest[generation] = max(self.largest.get(generation, 0), count)


async def test_an_oldest_pass_scans_what_a_tenant_holds_once(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tenant holds 16,000 fids (~49,000 objects). An oldest pass scans them, and what
    survives it is frozen: the next one scans only what came since (before: all of it
    again, each time). When the tenant lets go they are freed, frozen or not, and with no
    session left the gateway thaws: one pass over everything, nobody waiting."""
    monkeypatch.setattr(collector, "THAW_AT_MOST_EVERY", 0.0)
    limits = {"max_fids_per_identity": 20_000, "max_fids": 20_000}
    async with start_gateway(shares=shares(), **limits) as gw:
        fids = gw.gateway.ctx.budgets.fids
        peer = await anyio.to_thread.run_sync(fids_of_one_session, gw.uri, 16_000)
        assert fids.used >= 16_000
        with Scanned() as scanned:
            start = time.perf_counter()
            gc.collect()
            took = time.perf_counter() - start
            first = scanned.largest.pop(2)
            start = time.perf_counter()
            gc.collect()
            took_again = time.perf_counter() - start
            again = scanned.largest.pop(2)
        ms = f"{took * 1e3:.1f} ms, then {took_again * 1e3:.1f} ms, counting included"
        print(f"objects an oldest pass scanned: {first}, then {again} ({ms})")
        assert first >= 2 * 16_000
        assert again < 5_000
        held = COLLECTOR.frozen
        thaws = COLLECTOR.passes["thaw"].count if "thaw" in COLLECTOR.passes else 0
        peer.sock.close()
        await sessions_ended(gw)
        assert fids.used == 0
        assert COLLECTOR.frozen <= held - 2 * 16_000  # freed by reference counts
        assert COLLECTOR.passes["thaw"].count == thaws + 1
        text = generate_latest(gw.gateway.ctx.metrics.registry).decode()
        assert 'vshare_gc_passes_total{kind="thaw"}' in text
        assert "vshare_gc_frozen_objects" in text


async def test_the_thaw_finds_nothing_of_ours_in_what_was_frozen(
    start_gateway: GatewayFactory,
) -> None:
    """Sessions of every kind while oldest passes, every 2 ms, freeze what is alive (a
    request half done, a session half ended); then a thaw, the one pass over everything:
    no object the gateway made was left in a cycle, frozen."""
    async with start_gateway(tcp=True, shares=shares()) as gw:
        (gw.share_dir("alpha") / "f").write_bytes(b"data")
        passes = COLLECTOR.passes["2"].count if "2" in COLLECTOR.passes else 0

        async def oldest_passes() -> None:
            while True:
                gc.collect()
                await anyio.sleep(0.002)

        gc.set_debug(gc.DEBUG_SAVEALL)  # what the thaw finds in cycles is kept to be seen
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(oldest_passes)
                for end in ("EOF", "protocol error") * 5:
                    await anyio.to_thread.run_sync(a_session_of_every_kind, gw.uri, end)
                await sessions_ended(gw)
                tg.cancel_scope.cancel()
            assert COLLECTOR.passes["2"].count > passes + 10
            gc.garbage.clear()
            COLLECTOR.thaw()
            ours = [o for o in gc.garbage if type(o).__module__.startswith("vshare.")]
            print(f"the thaw found {len(gc.garbage)} objects in cycles, {len(ours)} ours")
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        assert not ours, sorted({type(o).__qualname__ for o in ours})
