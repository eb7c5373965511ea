"""A share's worker threads are shared fairly between tenants (issue 20): one instance
queueing many slow backend calls does not make another instance's call wait for them."""

from __future__ import annotations

import time

import anyio
import pytest

from vshare.gateway.workers import CALLER, ShareWorkers, Workers

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_flooding_caller_delays_another_by_one_call_not_all() -> None:
    workers = Workers(8)
    share = ShareWorkers(workers, in_flight=2)
    slow = 0.02
    done: dict[str, float] = {}
    start = time.monotonic()

    async def call(caller: str, name: str) -> None:
        CALLER.set(caller)
        await share.run(time.sleep, slow)
        done[name] = time.monotonic() - start

    try:
        async with anyio.create_task_group() as tg:
            for i in range(40):  # 40 calls of 20 ms from one tenant: 0.4 s on 2 threads
                tg.start_soon(call, "vm-a", f"a{i}")
            await anyio.sleep(0.005)  # vm-a's calls all wait in line first
            tg.start_soon(call, "vm-b", "b")
    finally:
        workers.close()
    # In turn, vm-b is served within the next couple of calls (~40 ms), not after vm-a's
    # whole queue (~400 ms); and vm-a's calls all ran.
    assert done["b"] < 0.15, done["b"]
    assert len(done) == 41
    assert max(done.values()) >= 0.35


async def test_a_cancelled_waiter_gives_up_its_place() -> None:
    workers = Workers(4)
    share = ShareWorkers(workers, in_flight=1)
    ran: list[str] = []

    async def call(caller: str, name: str) -> None:
        CALLER.set(caller)
        await share.run(lambda: (time.sleep(0.02), ran.append(name)))

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "x", "first")
            await anyio.sleep(0.005)
            with anyio.move_on_after(0.005):
                await call("y", "cancelled")  # waits for the slot, then gives up
            tg.start_soon(call, "z", "last")
    finally:
        workers.close()
    assert ran == ["first", "last"]
    assert share._free == 1 and not share._waiting
