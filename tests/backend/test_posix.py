"""PosixBackend: the shared conformance suite and escape battery, then POSIX-only details.

Everything runs twice: with openat2 (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
RESOLVE_NO_MAGICLINKS) and with the one-component ``openat(O_PATH | O_NOFOLLOW)`` fallback
used on kernels without openat2.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import gc
import itertools
import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backend.name_limits import NameLimitBattery
from tests.page_cache import evict
from vshare.backend import _linux
from vshare.backend._handle import UseCounted
from vshare.backend.base import Node
from vshare.backend.posix import PosixBackend, PosixNode, _QidMap
from vshare.testing.backend_conformance import (
    BackendConformance,
    BackendFactory,
    BackendUnderTest,
    EscapeBattery,
    LocalVolumeFixture,
    raises_errno,
)

SHARE = "shares/a"


def _openat2_works() -> bool:
    try:
        fd = _linux.openat2(_linux.AT_FDCWD, b".", os.O_PATH | os.O_CLOEXEC, 0)
    except OSError:
        return False
    os.close(fd)
    return True


@pytest.fixture(params=["openat2", "openat"])
def resolver(request: pytest.FixtureRequest) -> bool:
    if request.param == "openat2" and not _openat2_works():
        pytest.skip("the kernel has no openat2")
    return bool(request.param == "openat2")


@pytest.fixture
def backend_factory(tmp_path: Path, resolver: bool) -> BackendFactory:
    counter = itertools.count()

    def make() -> BackendUnderTest:
        root = tmp_path / f"vol{next(counter)}"
        (root / SHARE).mkdir(parents=True)
        backend = PosixBackend(str(root), use_openat2=resolver)
        return BackendUnderTest(backend, SHARE, LocalVolumeFixture(str(root)))

    return make


class TestPosixConformance(BackendConformance):
    pass


class TestPosixEscapes(EscapeBattery):
    pass


class TestPosixNameLimits(NameLimitBattery):
    """NAME_MAX and unencodable names, as every backend refuses them."""


# ---------------------------------------------------------------------------------------------
# POSIX-only


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    root = tmp_path / "vol"
    (root / SHARE).mkdir(parents=True)
    return root


@pytest.fixture
def backend(volume: Path, resolver: bool) -> Iterator[PosixBackend]:
    b = PosixBackend(str(volume), use_openat2=resolver)
    yield b
    b.close()


@pytest.fixture
def share(backend: PosixBackend) -> Iterator[Node]:
    node = backend.open_root(SHARE)
    yield node
    node.close()


def _open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def test_openat2_is_used_when_the_kernel_has_it(volume: Path) -> None:
    backend = PosixBackend(str(volume))
    assert backend.uses_openat2 == _openat2_works()
    backend.close()


def test_bad_volume_root(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with raises_errno(errno.ENOTDIR):
        PosixBackend(str(tmp_path / "file"))
    with raises_errno(errno.ENOENT):
        PosixBackend(str(tmp_path / "missing"))


def test_open_root_paths_are_strict(backend: PosixBackend, volume: Path) -> None:
    root = backend.open_root("")
    assert backend.getattr(root).qid_path == os.stat(volume).st_ino
    for path in ("/shares/a", "shares/a/", "shares//a", "./shares/a", "shares/./a"):
        with raises_errno(errno.EINVAL):
            backend.open_root(path)


def test_qid_is_the_inode_on_the_volume_device(
    backend: PosixBackend, share: Node, volume: Path
) -> None:
    node, file = backend.create(share, "f", os.O_RDWR, 0o644)
    file.close()
    st = os.lstat(volume / SHARE / "f")
    assert node.qid_path == st.st_ino
    assert backend.getattr(node).qid_path == st.st_ino
    assert share.qid_path == os.stat(volume / SHARE).st_ino


def test_qid_map_rule() -> None:
    qids = _QidMap(root_dev=100)
    assert qids.qid(100, 12345) == 12345
    assert qids.qid(100, 2**56 - 1) == 2**56 - 1
    high = qids.qid(100, 2**56 + 7)  # an inode number that does not fit in 56 bits
    assert high >> 56 not in (0, 255) and high & (2**56 - 1) == 7
    other = qids.qid(200, 12345)  # another device (a mount inside the volume)
    assert other >> 56 not in (0, 255, high >> 56) and other & (2**56 - 1) == 12345
    assert qids.qid(200, 12345) == other
    assert qids.qid(100, 2**56 + 7) == high
    assert len({qids.qid(dev, 1) for dev in range(300, 553)}) == 253  # indexes 1..254 used up
    overflow = qids.qid(999, 5)
    assert overflow >> 56 == 255
    assert qids.qid(999, 5) == overflow != qids.qid(999, 6)
    assert qids.qid(300, 1) == qids.qid(300, 1)


def _fds_in(volume: Path) -> set[int]:
    """This process's fds on ``volume`` (by what they point at, so that fds other threads
    open and close meanwhile, and numbers reused, do not count)."""
    mine = set()
    real = os.path.realpath(volume)
    for fd in _open_fds():
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target == real or target.startswith(f"{real}/"):
            mine.add(fd)
    return mine


def test_fd_per_inode_held_and_per_open_file(volume: Path) -> None:
    assert _fds_in(volume) == set()
    backend = PosixBackend(str(volume))
    assert len(_fds_in(volume)) == 1  # the volume root
    root = backend.open_root(SHARE)
    node, file = backend.create(root, "f", os.O_RDWR, 0o644)
    dfile = backend.open(root, os.O_RDONLY)
    clone = backend.clone(node)  # the same inode: no new fd
    again = backend.lookup(root, "f")  # likewise
    root2 = backend.open_root(SHARE)
    assert len(_fds_in(volume)) == 5  # volume root, share root, f, and two open files
    for handle in (clone, dfile, file, node, root, root2):
        handle.close()
    assert len(_fds_in(volume)) == 2  # f is still held by `again`
    again.close()
    assert len(_fds_in(volume)) == 1
    backend.close()
    assert _fds_in(volume) == set()


def test_nodes_on_one_inode_share_its_fd_and_close_alone(
    backend: PosixBackend, share: Node, volume: Path
) -> None:
    (volume / SHARE / "f").write_bytes(b"data")
    os.link(volume / SHARE / "f", volume / SHARE / "hard")
    a = backend.lookup(share, "f")
    b = backend.lookup(share, "hard")  # another name, the same inode
    c = backend.clone(a)
    assert isinstance(a, PosixNode) and isinstance(b, PosixNode) and isinstance(c, PosixNode)
    with a._ref as fa, b._ref as fb, c._ref as fc:
        assert fa == fb == fc
    a.close()
    a.close()  # idempotent: one reference given back, not two
    with raises_errno(errno.EBADF):
        backend.getattr(a)  # closed, although its inode is still held
    with raises_errno(errno.EBADF):
        backend.clone(a)
    assert backend.getattr(b).size == 4
    c.close()
    file = backend.open(b, os.O_RDONLY)
    buf = bytearray(4)
    assert backend.read(file, 0, memoryview(buf)) == 4 and buf == b"data"
    file.close()
    b.close()
    assert all(i.qid_path != a.qid_path for i in backend._inodes.values())  # f's is gone


def test_a_node_dropped_without_close_gives_its_inode_back(
    backend: PosixBackend, share: Node, volume: Path
) -> None:
    (volume / SHARE / "f").write_bytes(b"x")
    before = len(_fds_in(volume))
    node = backend.lookup(share, "f")
    assert len(_fds_in(volume)) == before + 1
    del node
    gc.collect()
    assert len(_fds_in(volume)) == before
    assert len(backend._inodes) == 1  # the share root only


def test_inodes_shared_by_many_threads_end_with_no_fd(backend: PosixBackend, volume: Path) -> None:
    root = backend.open_root(SHARE)
    for i in range(4):
        (volume / SHARE / f"f{i}").write_bytes(b"x")
    before = len(_fds_in(volume))
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            for n in range(300):
                node = backend.lookup(root, f"f{n % 4}")
                clone = backend.clone(node)
                node.close()
                backend.getattr(clone)
                clone.close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(_fds_in(volume)) == before
    assert len(backend._inodes) == 1  # the share root's
    root.close()


def test_handles_are_o_path_nofollow(backend: PosixBackend, share: Node) -> None:
    backend.symlink(share, "link", "target")
    link = backend.lookup(share, "link")
    assert isinstance(link, PosixNode)
    with link._ref as fd:
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_PATH
        assert stat.S_ISLNK(os.fstat(fd).st_mode)
        assert not os.get_inheritable(fd)


def test_use_after_close_is_ebadf(backend: PosixBackend, share: Node) -> None:
    node, file = backend.create(share, "f", os.O_RDWR, 0o644)
    node.close()
    file.close()
    with raises_errno(errno.EBADF):
        backend.getattr(node)
    with raises_errno(errno.EBADF):
        backend.open(node, os.O_RDONLY)
    with raises_errno(errno.EBADF):
        backend.read(file, 0, memoryview(bytearray(1)))
    with raises_errno(errno.EBADF):
        backend.lookup(node, "x")
    backend.close()
    with raises_errno(errno.EBADF):
        backend.open_root(SHARE)
    assert backend.lookup(share, "f").file_type == stat.S_IFREG  # nodes outlive the volume


def test_fd_closed_only_after_last_use() -> None:
    fd = os.open("/", os.O_PATH | os.O_CLOEXEC)
    ref = UseCounted(fd, os.close)
    with ref as used:
        ref.close()
        os.fstat(used)  # still open: a call is using it
        with raises_errno(errno.EBADF), ref:
            pass  # but no new use starts
    with pytest.raises(OSError):
        os.fstat(fd)
    ref.close()


def test_close_racing_use_never_reaches_another_file(
    backend: PosixBackend, share: Node, volume: Path
) -> None:
    """A (buggy) use racing close() sees EBADF or the right file, never a reused fd."""
    (volume / SHARE / "a").write_bytes(b"AAAA")
    (volume / SHARE / "b").write_bytes(b"BBBB")
    for _ in range(20):
        node = backend.lookup(share, "a")
        stop = threading.Event()
        bad: list[str] = []

        def user(node: Node = node, stop: threading.Event = stop, bad: list[str] = bad) -> None:
            buf = bytearray(4)
            try:
                while not stop.is_set():
                    try:
                        file = backend.open(node, os.O_RDONLY)
                    except OSError as e:
                        if e.errno != errno.EBADF:
                            raise
                        continue
                    backend.read(file, 0, memoryview(buf))
                    file.close()
                    if buf != b"AAAA":
                        bad.append(bytes(buf).decode())
            except BaseException as e:
                bad.append(repr(e))

        threads = [threading.Thread(target=user) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.005)
        node.close()
        others = [backend.lookup(share, "b") for _ in range(20)]  # reuse fd numbers
        time.sleep(0.005)
        stop.set()
        for t in threads:
            t.join(10)
        for other in others:
            other.close()
        assert not bad, bad[:5]


def test_special_files_are_not_opened(backend: PosixBackend, share: Node, volume: Path) -> None:
    fifo = backend.mknod(share, "fifo", stat.S_IFIFO | 0o600, 0)
    sock = backend.mknod(share, "sock", stat.S_IFSOCK | 0o600, 0)
    for node in (fifo, sock):
        with raises_errno(errno.EPERM):
            backend.open(node, os.O_RDONLY | os.O_NONBLOCK)
    if os.geteuid() == 0:
        os.mknod(volume / SHARE / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        dev = backend.lookup(share, "null")  # a device the host left there
        assert dev.file_type == stat.S_IFCHR
        with raises_errno(errno.EPERM):
            backend.open(dev, os.O_RDWR)
    # metadata of special files is fine: it never opens them
    backend.setattr(fifo, mode=0o644, mtime_ns=TIME)
    assert stat.S_IMODE(os.lstat(volume / SHARE / "fifo").st_mode) == 0o644


TIME = 1_234_567_890_123_456_789


def test_mknod_other_types_einval(backend: PosixBackend, share: Node) -> None:
    for mode in (stat.S_IFREG | 0o644, stat.S_IFDIR | 0o755, stat.S_IFLNK | 0o777, 0o644):
        with raises_errno(errno.EINVAL):
            backend.mknod(share, "x", mode, 0)


def test_setattr_symlink_errnos(backend: PosixBackend, share: Node) -> None:
    link = backend.symlink(share, "link", "x")
    with raises_errno(errno.EOPNOTSUPP):
        backend.setattr(link, mode=0o644)
    with raises_errno(errno.EINVAL):
        backend.setattr(link, size=0)
    with raises_errno(errno.EINVAL):
        backend.setattr(backend.mknod(share, "fifo", stat.S_IFIFO | 0o600, 0), size=0)


def test_open_flags_filtered(backend: PosixBackend, share: Node, volume: Path) -> None:
    (volume / SHARE / "f").write_bytes(b"0123456789")
    node = backend.lookup(share, "f")
    # O_DIRECT would need aligned buffers, O_NOATIME could fail with EPERM: both dropped.
    odd = getattr(os, "O_DIRECT", 0) | getattr(os, "O_NOATIME", 0) | os.O_NOFOLLOW
    file = backend.open(node, os.O_RDONLY | odd)
    buf = bytearray(7)
    assert backend.read(file, 1, memoryview(buf)[1:]) == 6
    file.close()
    with raises_errno(errno.EINVAL):
        backend.open(node, os.O_ACCMODE)
    with raises_errno(errno.ENOTDIR):
        backend.open(node, os.O_RDONLY | os.O_DIRECTORY)
    backend.open(share, os.O_RDONLY | os.O_DIRECTORY).close()


def _resident(path: Path) -> int:
    """Bytes of ``path`` in the page cache: mincore(2) of a mapping never touched (which
    reads nothing, as a read, even RWF_NOWAIT, would start readahead)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long)  # fmt: skip
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    size = path.stat().st_size
    page = os.sysconf("SC_PAGE_SIZE")
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, 0x1, 0x01, fd, 0)  # PROT_READ, MAP_SHARED
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            vec = (ctypes.c_ubyte * ((size + page - 1) // page))()
            assert libc.mincore(addr, size, vec) == 0, os.strerror(ctypes.get_errno())
            return sum(page for v in vec if v & 1)
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def test_a_read_only_open_starts_reading_the_head(
    backend: PosixBackend, share: Node, volume: Path
) -> None:
    """A read-only open has the kernel start reading the file's first 128 KiB, so that the
    first Tread, a round trip later, finds it in the page cache and is answered on the
    event loop (``read_nowait``) instead of by a worker thread; the rest stays unread."""
    path = volume / SHARE / "f"
    path.write_bytes(os.urandom(512 * 1024))
    evict(path)
    if _resident(path):
        pytest.skip(f"{volume} keeps every page in memory (tmpfs?): nothing to read ahead")
    node = backend.lookup(share, "f")
    backend.open(node, os.O_RDWR).close()
    assert _resident(path) == 0  # not for writing
    file = backend.open(node, os.O_RDONLY)
    try:
        deadline = time.monotonic() + 5
        while (n := _resident(path)) < 128 * 1024:
            assert time.monotonic() < deadline, f"{n} bytes read ahead"
            time.sleep(0.001)
        assert n < 512 * 1024, "the whole file was read"
        buf = memoryview(bytearray(4096))
        assert backend.read_nowait(file, 124 * 1024, buf) == 4096
        assert bytes(buf) == path.read_bytes()[124 * 1024 : 128 * 1024]
    finally:
        file.close()
        node.close()


def test_a_span_is_given_only_for_bytes_all_in_the_page_cache(
    backend: PosixBackend, share: Node, volume: Path
) -> None:
    """A large read is sent from the file (sendfile) only if sending cannot wait for the
    disk: every page of the range is cached. Else None, and nothing is read."""
    path = volume / SHARE / "f"
    data = os.urandom(256 * 1024 + 100)
    path.write_bytes(data)
    evict(path)
    if _resident(path):
        pytest.skip(f"{volume} keeps every page in memory (tmpfs?): nothing is ever uncached")
    node = backend.lookup(share, "f")
    file = backend.open(node, os.O_RDONLY)  # (its read-ahead: the first 128 KiB)
    try:
        assert backend.span_nowait(file, 128 * 1024, 64 * 1024) is None
        assert _resident(path) <= 128 * 1024, "asking read something"
        with path.open("rb") as f:
            f.read()  # all of it cached now
        span = backend.span_nowait(file, 200 * 1024, 1024 * 1024)
        assert span is not None
        try:
            # clipped to the file's end; the file's own fd, held
            assert (span.offset, span.count) == (200 * 1024, len(data) - 200 * 1024)
            assert os.pread(span.fd, span.count, span.offset) == data[200 * 1024 :]
        finally:
            span.release()
        assert backend.span_nowait(file, len(data) - 50, 1024, 100) is None  # under least
        assert backend.span_nowait(file, len(data), 1024) is None  # at the end
    finally:
        file.close()
        node.close()


def test_a_span_keeps_its_file_open_until_released(
    backend: PosixBackend, share: Node, volume: Path
) -> None:
    """A clunk of the fid while its span is still being sent closes the file only once the
    span is released: the fd number is never another file's meanwhile."""
    (volume / SHARE / "f").write_bytes(b"x" * 8192)
    node = backend.lookup(share, "f")
    file = backend.open(node, os.O_RDONLY)
    (volume / SHARE / "f").read_bytes()
    span = backend.span_nowait(file, 0, 8192)
    assert span is not None
    file.close()
    node.close()
    assert os.pread(span.fd, 4, 0) == b"xxxx"  # still this file's
    fd = span.fd
    span.release()
    with raises_errno(errno.EBADF):
        os.fstat(fd)


def test_value_errors_become_einval(backend: PosixBackend, share: Node) -> None:
    node, file = backend.create(share, "f", os.O_RDWR, 0o644)
    with raises_errno(errno.EINVAL):
        backend.read(file, 2**64, memoryview(bytearray(1)))
    with raises_errno(errno.EINVAL):
        backend.write(file, -1, memoryview(b"x"))
    with raises_errno(errno.EINVAL):
        backend.setattr(node, size=2**64)
    with raises_errno(errno.EINVAL):
        backend.lookup(share, "\ud800")  # a lone surrogate cannot be encoded
    with raises_errno(errno.EINVAL):
        backend.symlink(share, "l", "a\0b")
    with raises_errno(errno.EINVAL):
        backend.getxattr(node, "user.a\0b")
    file.close()


def test_foreign_handles_are_type_errors(volume: Path, tmp_path: Path) -> None:
    other_root = tmp_path / "other"
    other_root.mkdir()
    a = PosixBackend(str(volume))
    b = PosixBackend(str(other_root))
    a_root = a.open_root(SHARE)
    b_root = b.open_root("")
    with pytest.raises(TypeError):
        a.lookup(b_root, "x")
    with pytest.raises(TypeError):
        b.mkdir(a_root, "x", 0o755)
    node, file = a.create(a_root, "f", os.O_RDWR, 0o644)
    with pytest.raises(TypeError):
        b.link(b_root, "stolen", node)
    with pytest.raises(TypeError):
        b.read(file, 0, memoryview(bytearray(1)))
    assert not (other_root / "stolen").exists()
    for h in (file, node, a_root, b_root):
        h.close()
    a.close()
    b.close()


def test_readdir_cookies_are_d_off(backend: PosixBackend, share: Node, volume: Path) -> None:
    for i in range(10):
        (volume / SHARE / f"f{i}").write_bytes(b"")
    dfile = backend.open(share, os.O_RDONLY)
    entries = list(backend.readdir(dfile, 0, 100).entries)
    raw = os.open(volume / SHARE, os.O_RDONLY | os.O_DIRECTORY)
    buf = ctypes.create_string_buffer(65536)
    kernel = [
        (name.decode(), off & (2**64 - 1))
        for _, off, _, name in _linux.iter_dirents(_linux.getdents64(raw, buf))
    ]
    os.close(raw)
    assert [(e.name, e.cookie) for e in entries] == kernel
    with pytest.raises(OSError):
        backend.readdir(dfile, 2**63, 10)  # a negative loff_t
    dfile.close()


def test_non_utf8_names_surrogateescape(backend: PosixBackend, share: Node, volume: Path) -> None:
    raw = os.fsencode(str(volume / SHARE)) + b"/\xff\xfe-name"
    with open(raw, "wb") as f:
        f.write(b"bytes")
    dfile = backend.open(share, os.O_RDONLY)
    names = [e.name for e in backend.readdir(dfile, 0, 100).entries]
    dfile.close()
    assert "\udcff\udcfe-name" in names
    node = backend.lookup(share, "\udcff\udcfe-name")
    assert node.qid_path == os.lstat(raw).st_ino


def test_btime_from_statx(backend: PosixBackend, share: Node) -> None:
    node, file = backend.create(share, "f", os.O_RDWR, 0o644)
    file.close()
    attr = backend.getattr(node)
    if attr.btime_ns == 0:
        pytest.skip("this file system does not report birth times")
    assert abs(attr.btime_ns - attr.ctime_ns) < 60 * 10**9


def test_statfs_matches_statvfs(backend: PosixBackend, share: Node, volume: Path) -> None:
    st = backend.statfs(share)
    vfs = os.statvfs(volume)
    assert st.bsize == vfs.f_frsize
    assert st.blocks == vfs.f_blocks
    assert st.namelen == vfs.f_namemax
    assert st.files == vfs.f_files


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o777, 0])
def test_modes_are_verbatim_whatever_the_umask(
    backend: PosixBackend, share: Node, volume: Path, umask: int
) -> None:
    old = os.umask(umask)
    try:
        node, file = backend.create(share, "f", os.O_RDWR, 0o666)
        d = backend.mkdir(share, "d", 0o777)
        fifo = backend.mknod(share, "p", stat.S_IFIFO | 0o662, 0)
        private = backend.mkdir(share, "private", 0o700)
    finally:
        os.umask(old)
    file.close()
    assert stat.S_IMODE(backend.getattr(node).mode) == 0o666
    assert stat.S_IMODE(backend.getattr(d).mode) == 0o777
    assert stat.S_IMODE(backend.getattr(fifo).mode) == 0o662
    assert stat.S_IMODE(backend.getattr(private).mode) == 0o700
    assert stat.S_IMODE(os.lstat(volume / SHARE / "f").st_mode) == 0o666


def test_directory_keeps_the_set_gid_bit_it_inherits(
    backend: PosixBackend, share: Node, volume: Path
) -> None:
    os.chmod(volume / SHARE, 0o2775)
    old = os.umask(0o022)
    try:
        d = backend.mkdir(share, "d", 0o777)
    finally:
        os.umask(old)
    assert stat.S_IMODE(backend.getattr(d).mode) == 0o2777


def test_create_node_is_the_created_inode(backend: PosixBackend, share: Node, volume: Path) -> None:
    node, file = backend.create(share, "f", os.O_RDWR, 0o644)
    os.rename(volume / SHARE / "f", volume / SHARE / "g")
    (volume / SHARE / "f").write_bytes(b"impostor")
    backend.write(file, 0, memoryview(b"mine"))
    file.close()
    assert node.qid_path == os.lstat(volume / SHARE / "g").st_ino
    reopened = backend.open(node, os.O_RDONLY)
    buf = bytearray(16)
    assert bytes(buf[: backend.read(reopened, 0, memoryview(buf))]) == b"mine"
    reopened.close()


def test_host_moving_a_directory_out_keeps_the_node(
    backend: PosixBackend, share: Node, volume: Path
) -> None:
    """Documented limit: a node follows its inode even if the *host* moves it out."""
    d = backend.mkdir(share, "d", 0o755)
    os.rename(volume / SHARE / "d", volume / "moved-out")
    backend.mkdir(d, "made-later", 0o755)
    assert (volume / "moved-out" / "made-later").is_dir()


@pytest.fixture
def mounted_tmpfs(volume: Path) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8)")
    point = volume / SHARE / "mnt"
    point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "vshare-test", str(point)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_mount_point_inside_volume(backend: PosixBackend, share: Node, mounted_tmpfs: Path) -> None:
    (mounted_tmpfs / "f").write_bytes(b"on tmpfs")
    mnt = backend.lookup(share, "mnt")
    f = backend.lookup(mnt, "f")
    st = os.lstat(mounted_tmpfs / "f")
    assert f.qid_path >> 56 not in (0, 255)  # another device: another index
    assert f.qid_path & (2**56 - 1) == st.st_ino
    dfile = backend.open(share, os.O_RDONLY)
    entries = {e.name: e for e in backend.readdir(dfile, 0, 100).entries}
    dfile.close()
    # documented: the entry of a mount point carries the covered inode, not the mounted root
    assert entries["mnt"].qid_path != mnt.qid_path
