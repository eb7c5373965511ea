"""A small file opened to read is read with its open: the Twalkopen and a Tread of the new
fid go in one write (one round trip for both), and the kernel's first READ is answered
from those bytes — unless the file changed meanwhile, as far as the client knows. The
bytes held so are bounded."""

from __future__ import annotations

import os
import time

from tests.fuse.conftest import GatewayProc, MountFactory
from tests.fuse.relay import Relay


def test_a_small_file_is_read_with_its_open(
    gateway_proc: GatewayProc, relay: Relay, mount: MountFactory
) -> None:
    share = gateway_proc.share_dir("alpha")
    small, large = os.urandom(3000), os.urandom(300 * 1024)
    (share / "small").write_bytes(small)
    (share / "large").write_bytes(large)
    m = mount(relay.uri, "alpha", "auto").path
    assert sorted(os.listdir(m)) == ["large", "small"]  # their sizes known now
    assert (m / "small").read_bytes() == small
    assert [(r.offset, r.count) for r in relay.reads_with_opens()] == [(0, 4096)]
    assert (m / "large").read_bytes() == large  # past 128 KiB: opened alone
    assert len(relay.reads_with_opens()) == 1


def test_bytes_read_with_an_open_go_stale_with_the_file(
    gateway_proc: GatewayProc, mount: MountFactory
) -> None:
    """Changed on the host between the open and the first read: the change feed tells the
    client (coherent), and that read asks the gateway again instead of answering with
    what came with the open."""
    host = gateway_proc.share_dir("alpha") / "f.txt"
    host.write_bytes(b"old\n" * 100)
    m = mount(gateway_proc.uri, "alpha", "coherent").path
    assert os.stat(m / "f.txt").st_size == 400
    time.sleep(0.3)  # the feed's Twatch is waiting
    fd = os.open(m / "f.txt", os.O_RDONLY)  # its first 400 bytes read with it
    try:
        host.write_bytes(b"new!\n" * 100)
        deadline = time.monotonic() + 5
        while os.stat(m / "f.txt").st_size != 500:
            assert time.monotonic() < deadline, "the change never reached the mount"
            time.sleep(0.01)
        assert os.pread(fd, 4096, 0) == b"new!\n" * 100
    finally:
        os.close(fd)


def test_the_bytes_held_so_are_bounded(
    gateway_proc: GatewayProc, relay: Relay, mount: MountFactory
) -> None:
    """200 files of 100 KiB opened and held unread: heads for 16 MiB of them, no more; once
    they are closed, an open is read with its head again."""
    share = gateway_proc.share_dir("alpha")
    for i in range(201):
        (share / f"f{i:03d}").write_bytes(bytes([i % 256]) * 100 * 1024)
    m = mount(relay.uri, "alpha", "auto").path
    assert len(os.listdir(m)) == 201
    fds = [os.open(m / f"f{i:03d}", os.O_RDONLY) for i in range(200)]
    try:
        held = len(relay.reads_with_opens())
        assert 100 < held <= 16 * 1024 * 1024 // (100 * 1024) + 1
    finally:
        for fd in fds:
            os.close(fd)
    deadline = time.monotonic() + 5
    while True:  # the releases are sent after close returns
        fd = os.open(m / "f200", os.O_RDONLY)
        try:
            assert os.read(fd, 10) == bytes([200]) * 10
        finally:
            os.close(fd)
        if len(relay.reads_with_opens()) == held + 1:
            break
        assert time.monotonic() < deadline, "no head once the others were closed"
        held = len(relay.reads_with_opens())
        time.sleep(0.05)
