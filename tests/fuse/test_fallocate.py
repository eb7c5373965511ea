"""fallocate(2) through the FUSE mount as on a local disk (``place``: a local directory,
then mounts in ``none`` and ``auto``), carried to the gateway by Tfallocate
(``VERSION_VSHARE_5``); on a server without it (diod), refused as v9fs refuses it, and
glibc's posix_fallocate writes the zeros itself."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import pytest

from tests.client.diod import running_diod

from .conftest import MountFactory, force_unmount
from .test_device import place  # noqa: F401 (a fixture)

KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE = 0x01, 0x02, 0x10  # linux/falloc.h
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if _libc.fallocate(fd, mode, offset, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def test_fallocate_as_on_a_local_disk(place: tuple[Path, Path]) -> None:  # noqa: F811
    where, back = place
    (where / "f").write_bytes(b"x" * 8192)
    fd = os.open(where / "f", os.O_RDWR)
    try:
        fallocate(fd, 0, 0, 1 << 20)
        assert os.fstat(fd).st_size == 1 << 20
        fallocate(fd, KEEP_SIZE, 1 << 20, 1 << 20)
        assert os.fstat(fd).st_size == 1 << 20
        fallocate(fd, PUNCH_HOLE | KEEP_SIZE, 0, 4096)
        fallocate(fd, ZERO_RANGE | KEEP_SIZE, 4096, 100)
        fallocate(fd, ZERO_RANGE, (1 << 20) - 10, 20)
        st = os.fstat(fd)
        assert st.st_size == (1 << 20) + 10
        assert st.st_blocks * 512 >= (2 << 20) - 4096  # KEEP_SIZE allocated past the end
        with pytest.raises(OSError) as refused:
            fallocate(fd, PUNCH_HOLE, 0, 10)  # a hole keeps the size: Linux says so
        assert refused.value.errno == errno.EOPNOTSUPP
        assert os.pread(fd, 8, 4090) == bytes(8)
        assert os.pread(fd, 4, 4196) == b"xxxx"
    finally:
        os.close(fd)
    expected = bytes(4196) + b"x" * (8192 - 4196) + bytes((1 << 20) + 10 - 8192)
    assert (back / "f").read_bytes() == expected
    assert os.stat(where / "f").st_blocks == os.stat(back / "f").st_blocks


def test_fallocate_on_diod_is_refused_and_posix_fallocate_still_works(
    tmp_path: Path, mount: MountFactory
) -> None:
    export = tmp_path / "export"
    export.mkdir()
    with running_diod(export, tmp_path / "diod.log") as port:
        try:
            m = mount(f"tcp://127.0.0.1:{port}", str(export), "auto").path
            fd = os.open(m / "f", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                with pytest.raises(OSError) as refused:
                    fallocate(fd, 0, 0, 8192)
                assert refused.value.errno == errno.EOPNOTSUPP
                os.posix_fallocate(fd, 0, 8192)  # glibc writes a zero per block instead
                assert os.fstat(fd).st_size == 8192
            finally:
                os.close(fd)
            assert (export / "f").read_bytes() == bytes(8192)
        finally:
            for mnt in tmp_path.glob("mnt*"):
                force_unmount(mnt)
