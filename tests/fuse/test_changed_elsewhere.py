"""A regular file changed elsewhere (another VM, the host) shows its new size, mtime and
bytes through an ``auto`` mount once the mode's second is up, although the kernel's
writeback cache trusts its own size and mtime of an inode it holds: the next lookup gives
the kernel a new inode for the file. A file held open keeps its inode and works on."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.fuse.conftest import GatewayProc, MountFactory


def _mounted(gateway_proc: GatewayProc, mount: MountFactory, cache: str = "auto") -> Path:
    return mount(gateway_proc.uri, "alpha", cache).path


def test_growth_shrink_and_mtime_are_seen(gateway_proc: GatewayProc, mount: MountFactory) -> None:
    host = gateway_proc.share_dir("alpha") / "f"
    host.write_bytes(b"x")
    m = _mounted(gateway_proc, mount) / "f"
    assert (m.stat().st_size, m.read_bytes()) == (1, b"x")
    host.write_bytes(b"grown!!")
    time.sleep(1.2)
    assert (m.stat().st_size, m.read_bytes()) == (7, b"grown!!")
    host.write_bytes(b"sh")
    time.sleep(1.2)
    assert m.read_bytes() == b"sh"  # not "sh" padded with zeros to the old size
    os.utime(host, ns=(7_000_000_000, 7_000_000_000))  # same size, older mtime (make)
    time.sleep(1.2)
    assert m.stat().st_mtime_ns == 7_000_000_000


def test_listing_shows_the_new_size(gateway_proc: GatewayProc, mount: MountFactory) -> None:
    share = gateway_proc.share_dir("alpha")
    (share / "d").mkdir()
    for i in range(5):
        (share / "d" / f"f{i}").write_bytes(b"x")
    d = _mounted(gateway_proc, mount) / "d"
    assert [(d / f"f{i}").stat().st_size for i in range(5)] == [1] * 5
    for i in range(5):
        (share / "d" / f"f{i}").write_bytes(b"y" * (i + 2))
    time.sleep(1.2)
    sizes = {e.name: e.stat().st_size for e in os.scandir(d)}  # ls -l: readdirplus
    assert sizes == {f"f{i}": i + 2 for i in range(5)}


def test_a_file_held_open_keeps_working(gateway_proc: GatewayProc, mount: MountFactory) -> None:
    host = gateway_proc.share_dir("alpha") / "f"
    host.write_bytes(b"one")
    m = _mounted(gateway_proc, mount) / "f"
    with m.open("rb") as held:
        assert held.read() == b"one"
        host.write_bytes(b"two, longer")
        time.sleep(1.2)
        m.stat()  # the name is looked up again while the file is open
        held.seek(0)
        # The same inode, still readable (no EIO); its bytes are the open's (close-to-open).
        assert len(held.read(3)) == 3
        assert os.fstat(held.fileno()).st_ino == m.stat().st_ino
    time.sleep(1.2)
    assert m.read_bytes() == b"two, longer"  # closed: the next lookup sees it whole


def test_our_own_writes_keep_the_inode(gateway_proc: GatewayProc, mount: MountFactory) -> None:
    m = _mounted(gateway_proc, mount)
    f = m / "mine"
    f.write_bytes(b"a" * 10)
    ino = f.stat().st_ino
    with f.open("ab") as out:
        out.write(b"b" * 10)
    time.sleep(1.2)
    assert f.stat().st_size == 20
    assert f.stat().st_ino == ino
    os.truncate(f, 5)
    time.sleep(1.2)
    assert (f.stat().st_size, f.read_bytes()) == (5, b"a" * 5)


def test_files_we_made_keep_their_inodes(gateway_proc: GatewayProc, mount: MountFactory) -> None:
    """Our own clock's guess of a new file's times, or of a time set to now, is not a change
    made elsewhere: such files keep their inodes (and the inotify watches on them) when
    the gateway's own times arrive with a listing."""
    d = _mounted(gateway_proc, mount) / "d"
    d.mkdir()
    names = [f"f{i}" for i in range(10)]
    for name in names:  # created empty (O_EXCL: attributes predicted, nothing asked)
        os.close(os.open(d / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    os.utime(d / "f0")  # touch: mtime set to "now"
    inos = {name: (d / name).stat().st_ino for name in names}
    time.sleep(1.2)  # past auto's second: the names are looked up again
    assert sorted(os.listdir(d)) == names
    assert {name: (d / name).stat().st_ino for name in names} == inos
