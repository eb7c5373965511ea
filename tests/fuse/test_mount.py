"""The FUSE client on real mounts: POSIX through ``os`` and standard tools."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vshare.fuse import unmount

from .conftest import GatewayProc, MountFactory


def sh(*argv: str, cwd: Path | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, check=False)
    assert done.returncode == 0, f"{argv}: {done.stderr}"
    return done.stdout


def test_posix_operations_through_os(gateway_proc: GatewayProc, mount: MountFactory) -> None:
    m = mount(gateway_proc.uri, "alpha", "none").path
    back = gateway_proc.share_dir("alpha")
    (m / "f.txt").write_bytes(b"hello")
    assert (back / "f.txt").read_bytes() == b"hello"
    os.chmod(m / "f.txt", 0o640)
    assert stat.S_IMODE((back / "f.txt").stat().st_mode) == 0o640
    os.truncate(m / "f.txt", 2)
    assert (m / "f.txt").read_bytes() == b"he"
    os.utime(m / "f.txt", ns=(1_000_000_000, 3_000_000_000))
    assert (back / "f.txt").stat().st_mtime_ns == 3_000_000_000
    os.mkdir(m / "d")
    os.rename(m / "f.txt", m / "d" / "g.txt")
    assert (back / "d" / "g.txt").read_bytes() == b"he"
    assert (m / "d" / "g.txt").read_bytes() == b"he"  # the renamed inode's path moved
    os.symlink("g.txt", m / "d" / "ln")
    assert os.readlink(m / "d" / "ln") == "g.txt"
    assert (m / "d" / "ln").read_bytes() == b"he"  # the kernel follows it, not the gateway
    os.link(m / "d" / "g.txt", m / "hard")
    assert os.stat(m / "hard").st_nlink == 2
    assert os.stat(m / "hard").st_ino == os.stat(m / "d" / "g.txt").st_ino
    os.mkfifo(m / "fifo")
    assert stat.S_ISFIFO(os.lstat(back / "fifo").st_mode)
    os.setxattr(m / "hard", "user.k", b"v")
    assert os.getxattr(back / "hard", "user.k") == b"v"
    assert "user.k" in os.listxattr(m / "hard")
    os.removexattr(m / "hard", "user.k")
    with pytest.raises(OSError) as info:
        os.getxattr(m / "hard", "user.k")
    assert info.value.errno == errno.ENODATA
    with pytest.raises(OSError) as info:
        os.rmdir(m / "d")
    assert info.value.errno == errno.ENOTEMPTY
    with pytest.raises(FileNotFoundError):
        os.stat(m / "nope")
    with pytest.raises(FileExistsError):
        os.open(m / "hard", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    for p in ("hard", "fifo", "d/ln", "d/g.txt"):
        os.unlink(m / p)
    os.rmdir(m / "d")
    assert os.listdir(back) == []
    sv = os.statvfs(m)
    assert sv.f_blocks > 0 and sv.f_namemax == os.statvfs(back).f_namemax


def test_standard_tools(gateway_proc: GatewayProc, mount: MountFactory, tmp_path: Path) -> None:
    m = mount(gateway_proc.uri, "alpha", "auto").path
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "data.bin").write_bytes(os.urandom(300_000))
    (src / "top.txt").write_text("top\n")
    os.symlink("top.txt", src / "ln")
    os.chmod(src / "top.txt", 0o604)
    sh("cp", "-a", str(src), str(m / "copy"))
    assert (m / "copy" / "a" / "b" / "data.bin").read_bytes() == (
        src / "a" / "b" / "data.bin"
    ).read_bytes()
    assert os.readlink(m / "copy" / "ln") == "top.txt"
    assert stat.S_IMODE(os.stat(m / "copy" / "top.txt").st_mode) == 0o604
    sh("tar", "-C", str(m), "-cf", str(tmp_path / "t.tar"), "copy")
    sh("tar", "-C", str(m), "--one-top-level=untar", "-xf", str(tmp_path / "t.tar"))
    assert sh("diff", "-r", str(m / "copy"), str(m / "untar" / "copy")) == ""
    sh("mv", str(m / "untar"), str(m / "moved"))
    found = sorted(sh("find", ".", cwd=m / "moved").split())
    assert "./copy/a/b/data.bin" in found and "./copy/ln" in found
    sh("ln", "-s", "moved/copy/top.txt", str(m / "sl"))
    assert (m / "sl").read_text() == "top\n"
    sh("chmod", "-R", "g+w", str(m / "moved"))
    assert os.stat(m / "moved" / "copy" / "top.txt").st_mode & 0o020
    sh("dd", "if=/dev/zero", f"of={m / 'dd.bin'}", "bs=1M", "count=8", "status=none")
    assert os.stat(gateway_proc.share_dir("alpha") / "dd.bin").st_size == 8 << 20
    # flock and fcntl locks: kept by the kernel for this mount (the client has no lock handlers)
    with open(m / "dd.bin", "rb") as f1, open(m / "dd.bin", "rb") as f2:
        fcntl.flock(f1, fcntl.LOCK_EX)
        with pytest.raises(BlockingIOError):
            fcntl.flock(f2, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(f1, fcntl.LOCK_UN)
        fcntl.flock(f2, fcntl.LOCK_EX | fcntl.LOCK_NB)
    out = subprocess.run(["flock", "-n", str(m / "dd.bin"), "true"], check=False)
    assert out.returncode == 0


def test_concurrent_readers_and_writers(gateway_proc: GatewayProc, mount: MountFactory) -> None:
    m = mount(gateway_proc.uri, "alpha", "none").path
    errors: list[BaseException] = []
    blobs = {i: hashlib.sha256(str(i).encode()).digest() * 20_000 for i in range(6)}

    def writer(i: int) -> None:
        try:
            for _ in range(3):
                (m / f"w{i}").write_bytes(blobs[i])
                assert (m / f"w{i}").read_bytes() == blobs[i]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in blobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i, blob in blobs.items():
        assert (gateway_proc.share_dir("alpha") / f"w{i}").read_bytes() == blob


@pytest.mark.slow
def test_readdir_of_10k_entries(gateway_proc: GatewayProc, mount: MountFactory) -> None:
    d = gateway_proc.share_dir("alpha") / "big"
    d.mkdir()
    for i in range(10_000):
        (d / f"entry-{i:05}").touch()
    m = mount(gateway_proc.uri, "alpha", "auto").path
    t0 = time.monotonic()
    names = os.listdir(m / "big")
    elapsed = time.monotonic() - t0
    assert len(names) == 10_000 and set(names) == {f"entry-{i:05}" for i in range(10_000)}
    print(f"readdir of 10k entries with attributes: {elapsed:.2f} s")
    with os.scandir(m / "big") as it:
        assert sum(1 for e in it if e.is_file()) == 10_000


def test_offsets_past_4gib_sparse(gateway_proc: GatewayProc, mount: MountFactory) -> None:
    m = mount(gateway_proc.uri, "alpha", "none").path
    fd = os.open(m / "sparse", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.lseek(fd, 6 << 30, os.SEEK_SET)
        os.write(fd, b"beyond 4 GiB")
        assert os.pread(fd, 12, 6 << 30) == b"beyond 4 GiB"
    finally:
        os.close(fd)
    back = gateway_proc.share_dir("alpha") / "sparse"
    assert back.stat().st_size == (6 << 30) + 12
    with back.open("rb") as f:
        f.seek(6 << 30)
        assert f.read() == b"beyond 4 GiB"


def test_large_io_reaches_gateway_whole(gateway_proc: GatewayProc, mount: MountFactory) -> None:
    m = mount(gateway_proc.uri, "alpha", "none").path
    data = os.urandom(4 << 20)
    fd = os.open(m / "big", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        assert os.write(fd, data) == len(data)
    finally:
        os.close(fd)
    fd = os.open(m / "big", os.O_RDONLY)
    try:
        got = os.read(fd, len(data))
    finally:
        os.close(fd)
    assert got == data


def test_cache_none_is_coherent_and_always_caches(
    gateway_proc: GatewayProc, mount: MountFactory
) -> None:
    back = gateway_proc.share_dir("alpha")
    (back / "c.txt").write_bytes(b"one")
    none = mount(gateway_proc.uri, "alpha", "none").path
    always = mount(gateway_proc.uri, "alpha", "always").path
    auto = mount(gateway_proc.uri, "alpha", "auto").path
    for m in (none, always, auto):
        assert (m / "c.txt").read_bytes() == b"one"
        os.stat(m / "c.txt")
    # another VM (here: the backend directly) changes the file, same size
    (back / "c.txt").write_bytes(b"two")
    assert (none / "c.txt").read_bytes() == b"two"  # direct I/O: seen at once
    assert (always / "c.txt").read_bytes() == b"one"  # page cache kept: read-mostly mode
    # auto: close-to-open: mtime changed, so the next open drops the cache
    os.utime(back / "c.txt", ns=(5_000_000_000, 5_000_000_000))
    time.sleep(1.2)  # the 1 s attribute timeout
    assert (auto / "c.txt").read_bytes() == b"two"
    # a change made through a mount is seen through the none mount at once, sizes too
    (auto / "c.txt").write_bytes(b"three!")
    assert (none / "c.txt").read_bytes() == b"three!"
    assert os.stat(none / "c.txt").st_size == 6


def test_readonly_share_and_readonly_mount(gateway_proc: GatewayProc, mount: MountFactory) -> None:
    m = mount(gateway_proc.uri, "beta", "auto").path
    assert (m / "readme.txt").read_text() == "read only\n"
    with pytest.raises(OSError) as info:
        (m / "new").write_bytes(b"x")
    assert info.value.errno == errno.EROFS
    with pytest.raises(OSError) as info:
        os.mkdir(m / "d")
    assert info.value.errno == errno.EROFS
    ro = mount(gateway_proc.uri, "alpha", "auto", "--readonly").path
    with pytest.raises(OSError) as info:
        (ro / "new").write_bytes(b"x")
    assert info.value.errno == errno.EROFS
    assert not (gateway_proc.share_dir("alpha") / "new").exists()


def test_umount_while_busy(gateway_proc: GatewayProc, mount: MountFactory) -> None:
    mnt = mount(gateway_proc.uri, "alpha", "auto")
    f = (mnt.path / "open.txt").open("wb")
    try:
        with pytest.raises(OSError) as info:
            unmount(str(mnt.path))
        assert info.value.errno == errno.EBUSY
        f.write(b"still works")
    finally:
        f.close()
    assert (gateway_proc.share_dir("alpha") / "open.txt").read_bytes() == b"still works"
    unmount(str(mnt.path))
    assert mnt.proc.wait(10) == 0
    with pytest.raises(OSError) as info:
        unmount(str(mnt.path))
    assert info.value.errno == errno.EINVAL


def test_absent_gateway_is_a_clear_error(tmp_path: Path, mount: MountFactory) -> None:
    m = mount(f"unix://{tmp_path}/absent.sock", "alpha", "auto", expect_fail=True)
    assert m.proc.returncode == 1
    err = m.stderr()
    assert err.startswith("vshare: cannot attach share 'alpha' at unix://"), err
    assert "Traceback" not in err
    assert not os.path.ismount(m.path)


def test_unknown_share_is_a_clear_error(gateway_proc: GatewayProc, mount: MountFactory) -> None:
    m = mount(gateway_proc.uri, "nosuch", "auto", expect_fail=True)
    assert m.proc.returncode == 1
    assert "cannot attach share 'nosuch'" in m.stderr() and "Traceback" not in m.stderr()


def test_background_mount_main(gateway_proc: GatewayProc, tmp_path: Path) -> None:
    from vshare.fuse import is_mounted, mount_main

    mnt = tmp_path / "bg"
    mnt.mkdir()
    try:
        assert (
            mount_main(
                [gateway_proc.uri],
                "alpha",
                str(mnt),
                cache="auto",
                readonly=False,
                reconnect_timeout=5,
                foreground=False,
                msize=65536 + 24,
            )
            == 0
        )
        assert is_mounted(str(mnt))
        (mnt / "bg.txt").write_text("bg")
        assert (gateway_proc.share_dir("alpha") / "bg.txt").read_text() == "bg"
    finally:
        from .conftest import force_unmount

        force_unmount(mnt)
    assert sys.executable  # the child used this interpreter


def test_vshare_mount_and_umount_commands(gateway_proc: GatewayProc, tmp_path: Path) -> None:
    """The CLI pair as a user runs it: `vshare mount` returns with the mount up, `vshare
    umount` takes it down (refusing while busy), and a second umount says why it fails."""
    from tests.processes import VSHARE
    from vshare.fuse import is_mounted

    mnt = tmp_path / "cli"
    mnt.mkdir()

    def vshare(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [VSHARE, *args], capture_output=True, text=True, check=False, timeout=60
        )

    try:
        done = vshare("mount", gateway_proc.uri, "alpha", str(mnt))
        assert done.returncode == 0, done.stderr
        assert is_mounted(str(mnt))
        (mnt / "u.txt").write_text("u")
        with (mnt / "u.txt").open() as busy:
            refused = vshare("umount", str(mnt))
            assert refused.returncode == 1 and "busy" in refused.stderr, refused.stderr
            assert "Traceback" not in refused.stderr
            assert busy.read() == "u"
        done = vshare("umount", str(mnt))
        assert done.returncode == 0, done.stderr
        assert not is_mounted(str(mnt))
        again = vshare("umount", str(mnt))
        assert again.returncode == 1
        assert again.stderr.strip() == f"vshare: {mnt}: not mounted"
    finally:
        from .conftest import force_unmount

        force_unmount(mnt)


def test_mount_reads_ahead_1mib_and_answers_capability_locally(
    gateway_proc: GatewayProc, mount: MountFactory
) -> None:
    """Two data-path settings of the mount: read-ahead raised to a whole 1 MiB message,
    and the kernel's security.capability query before each write answered without a round
    trip (ENODATA), while other attributes still reach the share."""
    from vshare.fuse._mount import READAHEAD_KIB

    m = mount(gateway_proc.uri, "alpha", "auto").path
    st = os.stat(m)
    knob = Path(f"/sys/class/bdi/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/read_ahead_kb")
    deadline = time.monotonic() + 10
    while knob.read_text().strip() != str(READAHEAD_KIB):
        assert time.monotonic() < deadline, f"read-ahead stayed at {knob.read_text().strip()}"
        time.sleep(0.05)
    (m / "cap").write_bytes(b"x")
    with pytest.raises(OSError) as info:
        os.getxattr(m / "cap", "security.capability")
    assert info.value.errno == errno.ENODATA
    os.setxattr(m / "cap", "user.tag", b"v")
    assert os.getxattr(m / "cap", "user.tag") == b"v"
    assert "security.capability" not in os.listxattr(m / "cap")
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    assert "nosuid" in next(line.split()[5] for line in mounts if line.split()[4] == str(m))
