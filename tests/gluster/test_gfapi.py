"""The libgfapi binding against the real volume: the glusterfs 10 prototypes, errnos, NULLs,
gfids; the one-glfs-per-volume registry; URIs; the glusterd helper's FUSE mount."""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

import pytest

from tests.gluster.conftest import Session
from vshare.backend import _gfapi, gluster, open_backend
from vshare.backend.gluster import GlusterBackend, parse_uri, qid_of_gfid
from vshare.testing import glusterd as gd
from vshare.testing.backend_conformance import raises_errno


@pytest.fixture
def top(gluster_session: Session, gfs: int) -> tuple[int, int]:
    """(glfs, a fresh empty directory object); the object is closed by the test's end."""
    rel = gluster_session.fresh_root("gfapi")
    root, _ = _gfapi.h_lookupat_root(gfs)
    obj, st = _gfapi.h_lookupat(gfs, root, rel.encode(), follow=False)
    _gfapi.h_close(root)
    assert stat.S_ISDIR(st.st_mode)
    return gfs, obj


def test_pread_pwrite_fsync_ftruncate_have_the_6_0_prototypes(top: tuple[int, int]) -> None:
    """The calls whose signatures changed in glusterfs 6.0 (the PyPI binding crashes here)."""
    fs, d = top
    obj, _ = _gfapi.h_creat(fs, d, b"f", os.O_RDWR | os.O_EXCL, 0o644)
    fd = _gfapi.h_open(fs, obj, os.O_RDWR)
    data = os.urandom(3 * 1024 * 1024 + 17)
    assert _gfapi.pwrite(fd, memoryview(data), 1000) == len(data)
    _gfapi.fsync(fd)
    _gfapi.fdatasync(fd)
    buf = bytearray(len(data) + 5000)
    got = 0
    while got < len(data) + 1000:
        n = _gfapi.pread(fd, memoryview(buf)[got:], got)
        assert n > 0
        got += n
    assert bytes(buf[1000:got]) == data and bytes(buf[:1000]) == bytes(1000)
    assert _gfapi.pread(fd, memoryview(buf), got) == 0  # EOF
    _gfapi.h_truncate(fs, obj, 10)
    assert _gfapi.h_stat(fs, obj).st_size == 10
    assert _gfapi.fstat(fd).st_size == 10
    _gfapi.close(fd)
    _gfapi.h_close(obj)


def test_errno_is_passed_through(top: tuple[int, int]) -> None:
    fs, d = top
    with raises_errno(errno.ENOENT):
        _gfapi.h_lookupat(fs, d, b"missing", follow=False)
    obj, _ = _gfapi.h_mkdir(fs, d, b"sub", 0o755)
    with raises_errno(errno.EEXIST):
        _gfapi.h_mkdir(fs, d, b"sub", 0o755)
    with raises_errno(errno.ENODATA):
        _gfapi.h_getxattr(fs, obj, b"user.none")
    link, _ = _gfapi.h_symlink(fs, d, b"link", b"sub")
    with raises_errno(errno.EINVAL):
        _gfapi.h_open(fs, link, os.O_RDONLY)  # only files (and, in glusterfs 10, directories)
    _gfapi.h_close(link)
    _gfapi.h_close(obj)


def test_null_pointers_never_reach_gfapi(gfs: int) -> None:
    """NULL as a parent means "the volume root" to glfs_h_lookupat: the binding refuses it."""
    for call in (
        lambda: _gfapi.h_lookupat(gfs, 0, b"x", follow=False),
        lambda: _gfapi.h_creat(gfs, 0, b"x", os.O_RDWR, 0o644),
        lambda: _gfapi.h_mkdir(gfs, 0, b"x", 0o755),
        lambda: _gfapi.h_stat(0, 1),
        lambda: _gfapi.pread(0, memoryview(bytearray(1)), 0),
        lambda: _gfapi.h_close(0),
    ):
        with raises_errno(errno.EBADF):
            call()
    with raises_errno(errno.EINVAL):
        _gfapi.h_lookupat(gfs, 1, b"a\0b", follow=False)


def test_no_gfid_to_object_call_is_bound() -> None:
    """No gfid from anywhere can become an object: glfs_h_create_from_handle and
    glfs_h_find_handle are not bound (security note, point 2)."""
    assert not any("create_from_handle" in n or "find_handle" in n for n in dir(_gfapi))
    assert not any("from_handle" in n for n in _gfapi._PROTOTYPES)
    # glfs_h_acl_set/get on a symlink object resolve its target from the volume root
    assert not any("acl" in n for n in _gfapi._PROTOTYPES)


def test_qid_is_the_gfid_and_st_ino(top: tuple[int, int]) -> None:
    fs, d = top
    obj, st = _gfapi.h_creat(fs, d, b"f", os.O_RDWR | os.O_EXCL, 0o644)
    gfid = _gfapi.h_extract_handle(obj)
    assert len(gfid) == 16
    assert qid_of_gfid(gfid) == st.st_ino == _gfapi.h_stat(fs, obj).st_ino
    root, rst = _gfapi.h_lookupat_root(fs)
    assert _gfapi.h_extract_handle(root) == bytes(15) + b"\1" and rst.st_ino == 1
    _gfapi.h_close(root)
    _gfapi.h_close(obj)


def test_read_only_buffers_and_slices(top: tuple[int, int]) -> None:
    fs, d = top
    obj, _ = _gfapi.h_creat(fs, d, b"f", os.O_RDWR | os.O_EXCL, 0o644)
    fd = _gfapi.h_open(fs, obj, os.O_RDWR)
    assert _gfapi.pwrite(fd, memoryview(b"0123456789")[2:6], 0) == 4  # a read-only slice
    big = bytearray(b"-" * 10)
    assert _gfapi.pread(fd, memoryview(big)[3:5], 1) == 2  # into a slice, in place
    assert big == b"---34-----"
    with raises_errno(errno.EFAULT):
        _gfapi.pread(fd, memoryview(b"read-only"), 0)
    _gfapi.close(fd)
    _gfapi.h_close(obj)


def test_one_glfs_per_volume(gluster_session: Session) -> None:
    a = GlusterBackend(gluster_session.uri)
    b = open_backend(gluster_session.uri)
    assert isinstance(b, GlusterBackend)
    assert a._fs == b._fs == gluster_session.fs
    a.close()
    b.close()
    c = GlusterBackend(gluster_session.uri)  # kept alive in the session (keep_connections)
    assert c._fs == gluster_session.fs
    c.close()


def test_close_invalidates_handles(gluster_session: Session) -> None:
    backend = GlusterBackend(gluster_session.uri)
    root = backend.open_root("")
    file = backend.open(root, os.O_RDONLY)
    backend.close()
    backend.close()
    with raises_errno(errno.EBADF):
        backend.getattr(root)
    with raises_errno(errno.EBADF):
        backend.readdir(file, 0, 10)
    with raises_errno(errno.EBADF):
        backend.open_root("")
    root.close()
    file.close()


def test_uris() -> None:
    assert parse_uri("gluster://h/v") == ("h", 24007, "v", "")
    assert parse_uri("gluster://h:24010/v/a/b") == ("h", 24010, "v", "a/b")
    assert parse_uri("gluster://127.0.1.1/v/") == ("127.0.1.1", 24007, "v", "")
    for bad in (
        "gluster://h",
        "gluster://h/",
        "gluster:///v",
        "gluster://h/v/../x",
        "gluster://h/v//x",
        "gluster://h/v/./x",
        "gluster://h:99999/v",
        "gluster://h/v?x=1",
        "gluster://u@h/v",
        "posix:/x",
    ):
        with pytest.raises(ValueError, match="backend"):
            parse_uri(bad)
    with pytest.raises(ValueError, match="known: posix, gluster"):
        open_backend("nfs://h/v")


def test_unreachable_volume_is_an_oserror(gluster_session: Session, tmp_path: Path) -> None:
    host = gluster_session.volume.host
    with pytest.raises(OSError, match=f"gluster://{host}:24007/no-such-volume"):
        GlusterBackend(f"gluster://{host}/no-such-volume", log_file=str(tmp_path / "log"))


def test_backend_root_dir_must_be_a_directory(gluster_session: Session) -> None:
    rel = gluster_session.fresh_root("rootdir")
    host = gluster_session.host(rel)
    host.host_write("file", b"x")
    host.host_mkdir("outside")
    host.host_symlink("link", "outside")
    with raises_errno(errno.ENOTDIR):
        GlusterBackend(f"{gluster_session.uri}/{rel}/file")
    with raises_errno(errno.ENOTDIR, errno.ELOOP):
        GlusterBackend(f"{gluster_session.uri}/{rel}/link")
    with raises_errno(errno.ENOENT):
        GlusterBackend(f"{gluster_session.uri}/{rel}/missing")


def test_fuse_mount_helper(gluster_session: Session, tmp_path: Path) -> None:
    """vshare.testing.glusterd.fuse_mount: the native client sees what gfapi wrote, and the
    client process is gone after the unmount."""
    rel = gluster_session.fresh_root("fuse")
    gluster_session.host(rel).host_write("hello", b"through gfapi")
    with gd.fuse_mount(gluster_session.volume, tmp_path / "mnt") as mnt:
        assert os.path.ismount(mnt)
        assert (mnt / rel / "hello").read_bytes() == b"through gfapi"
        pids = gd._mount_client_pids(mnt)
        assert pids
    assert not os.path.ismount(tmp_path / "mnt")
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)


def test_glusterd_reports_its_bricks(gluster_session: Session) -> None:
    vol = gluster_session.volume
    pids = vol.brick_pids
    assert pids and all(os.path.exists(f"/proc/{pid}") for pid in pids)
    assert vol.daemon.pid is not None and os.path.exists(f"/proc/{vol.daemon.pid}")
    assert vol.uri == f"gluster://{vol.host}:24007/{vol.name}"
    assert (vol.brick / ".glusterfs").is_dir()


def test_keep_connections_is_on_in_the_session() -> None:
    assert gluster._volumes._keep
