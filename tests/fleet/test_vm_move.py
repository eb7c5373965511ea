"""A VM moves (live migration, simulated on one machine): instance ``vm-1`` is known to
the fleet by its address; on hypervisor A it reaches gateway gw-0 from 127.0.0.2, on
hypervisor B gateway gw-1 from 127.0.0.3. Each hypervisor's path to its gateway is a
``socat`` relay process binding the VM's source address (the VM's network on that host).
The move: A's relay is SIGKILLed (the VM left host A; its connection ends), then the
orchestrator re-registers ``vm-1`` in the store with its new address. The library client,
knowing both relays, reconnects through B, is refused until the store says who it is,
re-attaches as vm-1 and carries on: a checksummed writer finishes with every byte right.
``pytest -s`` prints the pause."""

from __future__ import annotations

import errno
import hashlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from subprocess import Popen

import anyio
import pytest

from tests.processes import free_port
from vshare.client import open_client, open_share
from vshare.policy import Instance
from vshare.store import InstanceRecord
from vshare.testing.store_conformance import make_rule

from .conftest import Fleet, wait_for

pytestmark = [pytest.mark.etcd, pytest.mark.slow]
if shutil.which("socat") is None:
    pytest.skip("needs socat", allow_module_level=True)

BLOCK = 64 * 1024
BLOCKS = 200


def block(i: int) -> bytes:
    return hashlib.sha256(b"vm" + i.to_bytes(4, "little")).digest() * (BLOCK // 32)


def vm_1(address: str) -> InstanceRecord:
    return InstanceRecord(
        instance=Instance(uuid="vm-1", tenant="acme", name="vm-1", ips=frozenset({address}))
    )


@contextmanager
def relay(to_port: int, source: str, *, fork: bool) -> Iterator[tuple[str, Popen[bytes]]]:
    """``tcp://127.0.0.1:P`` forwarded to the gateway on ``to_port`` from ``source``."""
    port = free_port()
    listen = f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,nodelay" + (",fork" if fork else "")
    proc = subprocess.Popen(["socat", listen, f"TCP:127.0.0.1:{to_port},bind={source},nodelay"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:

        def up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0 or proc.poll() is not None

        if fork:
            wait_for(up, 10, "socat listening")
        else:
            time.sleep(0.3)  # a one-connection relay: probing it would use it up
        yield f"tcp://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_a_vm_moves_to_another_hypervisor_and_keeps_its_share(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    ports = [free_port(), free_port()]
    gw0 = fleet.add_gateway(f"tcp://127.0.0.1:{ports[0]}")
    gw1 = fleet.add_gateway(f"tcp://127.0.0.1:{ports[1]}")
    fleet.control.put_instance(vm_1("127.0.0.2"))
    fleet.control.add_rule(make_rule(fleet.share.id, "vm-1", access_type="instance"))
    name = fleet.share.name
    figures: dict[str, float] = {}

    async def attaches(uri: str) -> bool:
        try:
            async with open_client(uri, 65536) as c:
                await c.attach(name)
        except OSError as exc:
            assert exc.errno == errno.EACCES, exc
            return False
        return True

    with (
        relay(ports[0], "127.0.0.2", fork=False) as (uri_a, socat_a),
        relay(ports[1], "127.0.0.3", fork=True) as (uri_b, _),
    ):

        async def scenario() -> None:
            # Before the move, B does not know this VM: 127.0.0.3 is nobody.
            assert not await attaches(uri_b)
            async with open_share([uri_a, uri_b], name, reconnect_timeout=15) as share:
                f = await share.open("disk.img", "w+b")
                assert gw0.sessions() == 1 and gw1.sessions() == 0
                last, longest = time.monotonic(), 0.0
                for i in range(BLOCKS):
                    if i == BLOCKS // 3:
                        # The move: A's side ends, then the store learns the new address.
                        socat_a.send_signal(signal.SIGKILL)
                        moved = time.monotonic()
                        await anyio.sleep(0.3)
                        await anyio.to_thread.run_sync(
                            fleet.control.put_instance, vm_1("127.0.0.3")
                        )
                        figures["store updated after"] = time.monotonic() - moved
                    await f.pwrite(block(i), i * BLOCK)
                    assert await f.pread(BLOCK, i * BLOCK) == block(i), f"block {i}"
                    now = time.monotonic()
                    longest = max(longest, now - last)
                    last = now
                    await anyio.sleep(0.002)
                await f.close()
                figures["client pause"] = share.longest_pause
                figures["longest gap between writes"] = longest
                assert share.reconnects == 1
                assert share._session is not None and share._session.uri == uri_b
                assert gw1.sessions() >= 1

        anyio.run(scenario)
    data = (fleet.share_dir / "disk.img").read_bytes()
    assert len(data) == BLOCK * BLOCKS
    for i in range(BLOCKS):
        assert data[i * BLOCK : (i + 1) * BLOCK] == block(i), f"block {i} on the volume"
    with capsys.disabled():
        print("\nVM move A → B:", {k: round(v, 3) for k, v in figures.items()})
    # The pause is the orchestrator's delay (0.3 s here) plus the client's backoff.
    assert figures["client pause"] < figures["store updated after"] + 1.5, figures
