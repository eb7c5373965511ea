"""The change feed across a failover: a coherent mount (``--cache coherent``, every file
cached for an hour) knows two gateways of a fleet; the host rewrites files without pause
while the gateway serving the mount is SIGKILLed. The mount fails over to the other
gateway, whose first Rwatch to it is CHANGE_ALL (the client names the dead gateway's seq),
so nothing of what changed while no gateway told the mount stays stale (the stream stops
right after the kill: its last changes were told by nobody, and the new gateway only
watches the share once the mount subscribes there): every file reads and stats as on the
volume within the bound, and the two-writer checker (tests/two_writers.py) then finds no
stale read through the new gateway."""

from __future__ import annotations

import os
import threading
import time

import pytest

from tests import two_writers
from tests.processes import wait_for

from .conftest import Fleet
from .test_failover import fuse_mount_of, the_serving_gateway

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

FILES = 20
LIMIT = 1.0  # seconds: the bound for a change to show


def version(i: int, n: int) -> bytes:
    return f"file {i} version {n}\n".encode() * (1 + n % 3)


def test_no_stale_data_after_a_failover_in_the_middle_of_a_change_stream(fleet: Fleet) -> None:
    for _ in range(2):
        fleet.add_gateway()
    host = fleet.share_dir
    for i in range(FILES):
        (host / f"f{i}").write_bytes(version(i, 0))
    with fuse_mount_of(fleet, "coherent") as mnt:
        for i in range(FILES):  # cached: pages and attributes, for an hour
            assert (mnt / f"f{i}").read_bytes() == version(i, 0)
        time.sleep(0.3)  # the feed's Twatch is waiting
        stop = threading.Event()
        written = [0] * FILES

        def stream() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                for i in range(FILES):
                    (host / f"f{i}").write_bytes(version(i, n))
                    written[i] = n
                time.sleep(0.01)

        writer = threading.Thread(target=stream, daemon=True)
        writer.start()
        try:
            time.sleep(0.3)
            victim = the_serving_gateway(fleet)
            victim.kill()  # the stream's last changes fall while no gateway tells the mount
        finally:
            stop.set()
            writer.join(10)
        os.listdir(mnt)  # back, on the other gateway: it watches the share from now on
        survivor = the_serving_gateway(fleet)
        assert survivor is not victim
        deadline = time.monotonic() + LIMIT
        for i in range(FILES):
            want = version(i, written[i])
            while (mnt / f"f{i}").read_bytes() != want or os.stat(mnt / f"f{i}").st_size != len(
                want
            ):
                assert time.monotonic() < deadline, f"f{i} stale after the failover"
                time.sleep(0.01)
        metrics = survivor.metrics() or {}
        assert metrics.get("vshare_feed_resyncs_total", 0) >= 1, "no resync on the survivor"
        (host / "two").mkdir()
        two_writers.prepare(host / "two", [mnt / "two"])
        tally = two_writers.check(host / "two", mnt / "two", 10, bound=LIMIT)
        assert tally.stale == 0, tally.failures
    wait_for(lambda: survivor.sessions() == 0, 10, "the mount's session ends")
