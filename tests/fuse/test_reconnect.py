"""Reconnect: the gateway is killed with SIGKILL under a checksummed write workload and
restarted on the same socket; the workload must finish with every byte right, no EIO."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time

import pytest

from vshare.client import Share

from .conftest import GatewayProc, MountFactory

BLOCK = 64 * 1024
BLOCKS = 400  # 25 MiB


def block(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(4, "little")).digest() * (BLOCK // 32)


class Writer(threading.Thread):
    """pwrite block i at offset i*BLOCK, read it back and compare; records the longest
    gap between two finished blocks (the pause an application sees)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.error: BaseException | None = None
        self.longest_gap = 0.0
        self.done_blocks = 0

    def run(self) -> None:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                last = time.monotonic()
                for i in range(BLOCKS):
                    assert os.pwrite(fd, block(i), i * BLOCK) == BLOCK
                    assert os.pread(fd, BLOCK, i * BLOCK) == block(i), f"block {i} differs"
                    now = time.monotonic()
                    self.longest_gap = max(self.longest_gap, now - last)
                    last = now
                    self.done_blocks = i + 1
                    time.sleep(0.002)
            finally:
                os.close(fd)
        except BaseException as exc:
            self.error = exc


@pytest.mark.slow
def test_gateway_killed_and_restarted_under_fuse_writes(
    gateway_proc: GatewayProc, mount: MountFactory
) -> None:
    m = mount(gateway_proc.uri, "alpha", "none", "--reconnect-timeout", "30").path
    w = Writer(str(m / "checksummed.bin"))
    w.start()
    while w.done_blocks < 100 and w.is_alive():
        time.sleep(0.01)
    gateway_proc.kill()  # SIGKILL: nothing is flushed or closed
    killed_at = time.monotonic()
    time.sleep(1.0)
    gateway_proc.start()
    w.join(120)
    assert not w.is_alive()
    assert w.error is None, repr(w.error)
    data = (gateway_proc.share_dir("alpha") / "checksummed.bin").read_bytes()
    assert len(data) == BLOCK * BLOCKS
    for i in range(BLOCKS):
        assert data[i * BLOCK : (i + 1) * BLOCK] == block(i), f"block {i}"
    print(
        f"reconnect pause seen by the writer: {w.longest_gap:.2f} s "
        f"(gateway down {time.monotonic() - killed_at:.2f} s incl. restart)"
    )
    assert 1.0 <= w.longest_gap < 10


def test_client_reconnects_relocks_and_times_out(gateway_proc: GatewayProc) -> None:
    with Share(gateway_proc.uri, "alpha", reconnect_timeout=3.0) as s:
        s.write_bytes("a.txt", b"before")
        f = s.open("a.txt", "r+b")
        f.lock("w")
        gateway_proc.kill()
        gateway_proc.start()
        # the open file is rebuilt from its path and its lock re-taken
        assert f.pread(6, 0) == b"before"
        assert f.aio.locks == [(1, 0, 0)]
        f.pwrite(b"AFTER!", 0)
        f.close()
        assert s.read_bytes("a.txt") == b"AFTER!"
        assert s.aio.reconnects == 1
        gateway_proc.kill()
        t0 = time.monotonic()
        with pytest.raises(OSError) as info:
            s.stat("a.txt")
        assert info.value.errno == errno.EIO
        assert 2.5 < time.monotonic() - t0 < 6
        gateway_proc.start()
        time.sleep(1.5)  # the supervisor keeps trying after the deadline
        assert s.read_bytes("a.txt") == b"AFTER!"
