"""Typed ctypes wrappers for the few Linux calls the POSIX backend needs and CPython 3.11 lacks.

Only what :mod:`vshare.backend.posix` uses: ``openat2``, ``getdents64`` (for ``d_off``
cookies), ``statx`` (birth time; ``os.fstat`` when missing), ``utimensat`` and ``fchownat``
with ``AT_EMPTY_PATH`` (they act on an ``O_PATH`` fd itself), ``fstatfs`` (``f_type``),
``cachestat`` (how much of a range is in the page cache) and a parser for ``linux_dirent64``
records.

Rules: every failure is an :class:`OSError` carrying the kernel's errno (``ENOSYS`` when the
call does not exist here); ``EINTR`` is retried, as CPython does for ``os`` (PEP 475); the
arguments handed to C are range-checked first, because ctypes truncates integers silently.
64-bit Linux only (x86_64, aarch64 and the other architectures of the generic syscall table).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

__all__ = [
    "AT_EMPTY_PATH",
    "AT_FDCWD",
    "AT_SYMLINK_NOFOLLOW",
    "RESOLVE_BENEATH",
    "RESOLVE_NO_MAGICLINKS",
    "RESOLVE_NO_SYMLINKS",
    "RESOLVE_NO_XDEV",
    "UTIME_NOW",
    "UTIME_OMIT",
    "FsStat",
    "Stat",
    "cached_pages",
    "fchownat",
    "fstatfs",
    "getdents64",
    "iter_dirents",
    "openat2",
    "stat_at",
    "stat_fd",
    "utimensat",
]

AT_FDCWD: Final = -100
AT_SYMLINK_NOFOLLOW: Final = 0x100
AT_EMPTY_PATH: Final = 0x1000

RESOLVE_NO_XDEV: Final = 0x01
RESOLVE_NO_MAGICLINKS: Final = 0x02
RESOLVE_NO_SYMLINKS: Final = 0x04
RESOLVE_BENEATH: Final = 0x08

UTIME_NOW: Final = (1 << 30) - 1
UTIME_OMIT: Final = (1 << 30) - 2

_STATX_BASIC_STATS: Final = 0x07FF
_STATX_BTIME: Final = 0x0800
_STATX_MNT_ID: Final = 0x1000

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_UINT32_MAX: Final = (1 << 32) - 1

if ctypes.sizeof(ctypes.c_void_p) != 8:  # pragma: no cover - 32-bit hosts are not supported
    raise ImportError("vshare.backend._linux needs a 64-bit Linux")

_libc = ctypes.CDLL(None, use_errno=True)

# Syscall numbers for the calls glibc may lack. openat2 is 437 in the generic table shared by
# every 64-bit architecture we run on (alpha/mips differ: not listed, so openat2 reports ENOSYS).
_MACHINE: Final = platform.machine()
_SYS_OPENAT2: Final = {"x86_64": 437, "aarch64": 437, "ppc64le": 437, "s390x": 437, "riscv64": 437}
_SYS_GETDENTS64: Final = {"x86_64": 217, "aarch64": 61, "ppc64le": 202, "s390x": 220, "riscv64": 61}
_SYS_STATX: Final = {"x86_64": 332, "aarch64": 291, "ppc64le": 383, "s390x": 379, "riscv64": 291}

_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _error(err: int) -> OSError:
    return OSError(err, os.strerror(err))


def _retry(call: Callable[..., int], *args: object) -> int:
    """Call ``call(*args)``; retry on EINTR; raise OSError on a negative result."""
    while True:
        ret = int(call(*args))
        if ret >= 0:
            return ret
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise _error(err)


def _check_fd(fd: int) -> ctypes.c_int:
    if not 0 <= fd <= 0x7FFFFFFF and fd != AT_FDCWD:
        raise _error(errno.EBADF)
    return ctypes.c_int(fd)


# ---------------------------------------------------------------------------------------------
# openat2


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


def openat2(dirfd: int, path: bytes, flags: int, resolve: int, mode: int = 0) -> int:
    """``openat2(dirfd, path, {flags, mode, resolve})``: a new fd, or OSError.

    ENOSYS where the kernel (or this architecture's table here) has no openat2. The kernel
    rejects unknown flag bits with EINVAL rather than ignoring them.
    """
    nr = _SYS_OPENAT2.get(_MACHINE)
    if nr is None:
        raise _error(errno.ENOSYS)
    if b"\0" in path:
        raise _error(errno.EINVAL)
    how = _OpenHow(flags & 0xFFFFFFFF, mode & 0o7777, resolve)
    return _retry(
        _syscall,
        ctypes.c_long(nr),
        _check_fd(dirfd),
        ctypes.c_char_p(path),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )


# ---------------------------------------------------------------------------------------------
# getdents64

_getdents64_func: Any = getattr(_libc, "getdents64", None)
if _getdents64_func is not None:
    _getdents64_func.restype = ctypes.c_ssize_t
    _getdents64_func.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)

_DIRENT_HEAD: Final = struct.Struct("=QqHB")  # d_ino, d_off, d_reclen, d_type; then d_name


def getdents64(fd: int, buf: ctypes.Array[ctypes.c_char]) -> bytes:
    """Read directory records from ``fd``'s current position into ``buf``; return the bytes
    filled (empty at the end of the directory). Parse them with :func:`iter_dirents`."""
    if _getdents64_func is not None:
        n = _retry(_getdents64_func, _check_fd(fd), buf, ctypes.sizeof(buf))
    else:
        nr = _SYS_GETDENTS64.get(_MACHINE)
        if nr is None:
            raise _error(errno.ENOSYS)
        n = _retry(
            _syscall,
            ctypes.c_long(nr),
            _check_fd(fd),
            buf,
            ctypes.c_size_t(ctypes.sizeof(buf)),
        )
    return ctypes.string_at(buf, n)


_dirent_buffers = threading.local()  # this thread's getdents64 buffers, by size


def dirent_buffer(least: int) -> ctypes.Array[ctypes.c_char]:
    """This thread's buffer for :func:`getdents64` of at least ``least`` bytes (rounded up to
    a power of two), kept for the next call. Not one made per call: a buffer of a size not
    alive at the moment makes a new ctypes array type, 8 objects in a reference cycle that
    only the cyclic collector frees."""
    size = 1 << max(0, least - 1).bit_length()
    buffers: dict[int, ctypes.Array[ctypes.c_char]] | None = getattr(
        _dirent_buffers, "by_size", None
    )
    if buffers is None:
        buffers = _dirent_buffers.by_size = {}
    buf = buffers.get(size)
    if buf is None:
        buf = buffers[size] = ctypes.create_string_buffer(size)
    return buf


def iter_dirents(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """``(d_ino, d_off, d_type, name)`` for each ``linux_dirent64`` record in ``data``."""
    pos = 0
    end = len(data)
    head = _DIRENT_HEAD.size
    while pos + head <= end:
        ino, off, reclen, dtype = _DIRENT_HEAD.unpack_from(data, pos)
        if reclen < head or pos + reclen > end:
            raise _error(errno.EIO)  # a malformed record: never from a sane kernel
        nul = data.find(b"\0", pos + head, pos + reclen)
        name = data[pos + head : nul if nul >= 0 else pos + reclen]
        yield ino, off, dtype, name
        pos += reclen


# ---------------------------------------------------------------------------------------------
# statx, fstatfs


class Stat(NamedTuple):
    """What the backend needs of a ``struct statx`` (or ``struct stat``)."""

    mode: int
    ino: int
    dev: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    blksize: int
    blocks: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    btime_ns: int  # 0 when unknown
    mnt_id: int = 0  # the mount the fd was reached through; 0 when unknown (before 5.8)


_statx_func: Any = getattr(_libc, "statx", None)
if _statx_func is not None:
    _statx_func.restype = ctypes.c_int
    _statx_func.argtypes = (
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_void_p,
    )
_statx_missing = _statx_func is None and _MACHINE not in _SYS_STATX

# struct statx up to stx_dev_minor: mask, blksize, attributes, nlink, uid, gid, mode, pad, ino,
# size, blocks, attributes_mask, then atime, btime, ctime, mtime as (sec, nsec, pad), then rdev
# major/minor, dev major/minor and mnt_id.
_STATX: Final = struct.Struct("=IIQIIIHHQQQQ" + "qIi" * 4 + "IIIIQ")
_STATX_SIZE: Final = 256


_statx_buffers = threading.local()  # one struct statx per thread: no allocation per call
_STATX_FLAGS: Final = AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW
_STATX_MASK: Final = _STATX_BASIC_STATS | _STATX_BTIME | _STATX_MNT_ID


def _statx(fd: int, name: bytes = b"") -> Stat:
    buf = getattr(_statx_buffers, "buf", None)
    if buf is None:
        buf = _statx_buffers.buf = ctypes.create_string_buffer(_STATX_SIZE)
    flags = _STATX_FLAGS if not name else AT_SYMLINK_NOFOLLOW
    if _statx_func is not None:
        if not 0 <= fd <= 0x7FFFFFFF:
            raise _error(errno.EBADF)
        while _statx_func(fd, name, flags, _STATX_MASK, buf) < 0:
            err = ctypes.get_errno()
            if err != errno.EINTR:
                raise _error(err)
    else:
        _retry(
            _syscall,
            ctypes.c_long(_SYS_STATX[_MACHINE]),
            _check_fd(fd),
            ctypes.c_char_p(name),
            ctypes.c_int(flags),
            ctypes.c_uint(_STATX_MASK),
            buf,
        )
    (
        got, blksize, _attributes, nlink, uid, gid, mode, _pad, ino, size, blocks,
        _attributes_mask, a_sec, a_nsec, _a_pad, b_sec, b_nsec, _b_pad, c_sec, c_nsec, _c_pad,
        m_sec, m_nsec, _m_pad, rdev_major, rdev_minor, dev_major, dev_minor, mnt_id,
    ) = _STATX.unpack_from(buf)  # fmt: skip
    return Stat(
        mode,
        ino,
        os.makedev(dev_major, dev_minor),
        nlink,
        uid,
        gid,
        os.makedev(rdev_major, rdev_minor),
        size,
        blksize,
        blocks,
        a_sec * 1_000_000_000 + a_nsec,
        m_sec * 1_000_000_000 + m_nsec,
        c_sec * 1_000_000_000 + c_nsec,
        b_sec * 1_000_000_000 + b_nsec if got & _STATX_BTIME else 0,
        mnt_id if got & _STATX_MNT_ID else 0,
    )


def _fstat(fd: int, name: bytes = b"") -> Stat:
    st = os.stat(name, dir_fd=fd, follow_symlinks=False) if name else os.fstat(fd)
    return Stat(
        mode=st.st_mode,
        ino=st.st_ino,
        dev=st.st_dev,
        nlink=st.st_nlink,
        uid=st.st_uid,
        gid=st.st_gid,
        rdev=st.st_rdev,
        size=st.st_size,
        blksize=st.st_blksize,
        blocks=st.st_blocks,
        atime_ns=st.st_atime_ns,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        btime_ns=0,
    )


def stat_fd(fd: int) -> Stat:
    """Stat the object ``fd`` refers to (an ``O_PATH`` fd is fine), never following a symlink:
    ``statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)``, or ``fstat`` without statx."""
    global _statx_missing
    if not _statx_missing:
        try:
            return _statx(fd)
        except OSError as e:
            if e.errno != errno.ENOSYS:
                raise
            _statx_missing = True
    return _fstat(fd)


def stat_at(dirfd: int, name: bytes) -> Stat:
    """Stat ``name``, one component in the directory ``dirfd``, never following a symlink
    (``statx(dirfd, name, AT_SYMLINK_NOFOLLOW)``). The caller has checked ``name``: no
    ``/``, not ``.`` or ``..``, so nothing outside ``dirfd`` is reached."""
    global _statx_missing
    if not _statx_missing:
        try:
            return _statx(dirfd, name)
        except OSError as e:
            if e.errno != errno.ENOSYS:
                raise
            _statx_missing = True
    return _fstat(dirfd, name)


class _Statfs(ctypes.Structure):
    # struct statfs of 64-bit Linux (glibc and musl): __fsword_t is long, counts unsigned long.
    _fields_ = (
        ("f_type", ctypes.c_long),
        ("f_bsize", ctypes.c_long),
        ("f_blocks", ctypes.c_ulong),
        ("f_bfree", ctypes.c_ulong),
        ("f_bavail", ctypes.c_ulong),
        ("f_files", ctypes.c_ulong),
        ("f_ffree", ctypes.c_ulong),
        ("f_fsid", ctypes.c_int * 2),
        ("f_namelen", ctypes.c_long),
        ("f_frsize", ctypes.c_long),
        ("f_flags", ctypes.c_long),
        ("f_spare", ctypes.c_long * 4),
    )


@dataclass(frozen=True, slots=True)
class FsStat:
    """``struct statfs``; ``frsize`` is the unit of the block counts."""

    fs_type: int
    bsize: int
    frsize: int
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    fsid: int
    namelen: int


_fstatfs_func = _libc.fstatfs
_fstatfs_func.restype = ctypes.c_int
_fstatfs_func.argtypes = (ctypes.c_int, ctypes.POINTER(_Statfs))


def fstatfs(fd: int) -> FsStat:
    """``fstatfs(fd)``; works on ``O_PATH`` fds (Linux >= 3.12)."""
    st = _Statfs()
    _retry(_fstatfs_func, _check_fd(fd), ctypes.byref(st))
    return FsStat(
        fs_type=st.f_type & 0xFFFFFFFF,
        bsize=st.f_bsize,
        frsize=st.f_frsize or st.f_bsize,
        blocks=st.f_blocks,
        bfree=st.f_bfree,
        bavail=st.f_bavail,
        files=st.f_files,
        ffree=st.f_ffree,
        fsid=(st.f_fsid[0] & 0xFFFFFFFF) | (st.f_fsid[1] & 0xFFFFFFFF) << 32,
        namelen=st.f_namelen,
    )


# ---------------------------------------------------------------------------------------------
# utimensat, fchownat


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_long))


_utimensat_func = _libc.utimensat
_utimensat_func.restype = ctypes.c_int
_utimensat_func.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int)


def _timespec(t: int | tuple[int, int]) -> _Timespec:
    if isinstance(t, tuple):
        sec, nsec = t
    else:  # UTIME_NOW / UTIME_OMIT
        sec, nsec = 0, t
    if not _INT64_MIN <= sec <= _INT64_MAX or not 0 <= nsec < 1 << 30:
        raise _error(errno.EINVAL)
    return _Timespec(sec, nsec)


def utimensat(
    dirfd: int,
    path: bytes,
    atime: int | tuple[int, int],
    mtime: int | tuple[int, int],
    flags: int,
) -> None:
    """``utimensat(dirfd, path, {atime, mtime}, flags)``. Each time is ``(sec, nsec)`` or
    :data:`UTIME_NOW` / :data:`UTIME_OMIT`. With ``path=b""`` and ``AT_EMPTY_PATH`` it acts
    on ``dirfd`` itself (an ``O_PATH`` fd; Linux >= 5.8)."""
    times = (_Timespec * 2)(_timespec(atime), _timespec(mtime))
    _retry(_utimensat_func, _check_fd(dirfd), path, times, flags)


_fchownat_func = _libc.fchownat
_fchownat_func.restype = ctypes.c_int
_fchownat_func.argtypes = (
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_uint32,
    ctypes.c_uint32,
    ctypes.c_int,
)


def fchownat(dirfd: int, path: bytes, uid: int, gid: int, flags: int) -> None:
    """``fchownat(dirfd, path, uid, gid, flags)``; ``-1`` leaves that id unchanged."""
    for ident in (uid, gid):
        if not -1 <= ident < _UINT32_MAX:
            raise _error(errno.EINVAL)
    _retry(
        _fchownat_func,
        _check_fd(dirfd),
        path,
        uid & _UINT32_MAX,
        gid & _UINT32_MAX,
        flags,
    )


#: fallocate(2)'s mode bits (linux/falloc.h).
FALLOC_FL_KEEP_SIZE: Final = 0x01
FALLOC_FL_PUNCH_HOLE: Final = 0x02
FALLOC_FL_ZERO_RANGE: Final = 0x10

_fallocate_func = _libc.fallocate
_fallocate_func.restype = ctypes.c_int
_fallocate_func.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """``fallocate(fd, mode, offset, length)`` (glibc's, 64-bit offsets)."""
    _retry(_fallocate_func, _check_fd(fd), mode, offset, length)


# ---------------------------------------------------------------------------------------------
# cachestat (Linux 6.5)

_SYS_CACHESTAT: Final = {
    "x86_64": 451,
    "aarch64": 451,
    "ppc64le": 451,
    "s390x": 451,
    "riscv64": 451,
}


class _CachestatRange(ctypes.Structure):
    _fields_ = (("off", ctypes.c_uint64), ("len", ctypes.c_uint64))


class _Cachestat(ctypes.Structure):
    _fields_ = (
        ("nr_cache", ctypes.c_uint64),
        ("nr_dirty", ctypes.c_uint64),
        ("nr_writeback", ctypes.c_uint64),
        ("nr_evicted", ctypes.c_uint64),
        ("nr_recently_evicted", ctypes.c_uint64),
    )


def cached_pages(fd: int, offset: int, length: int) -> int:
    """``cachestat(fd, {offset, length})``'s ``nr_cache``: how many pages of that byte range
    of ``fd``'s file are in the page cache (a large folio counts the pages of it within the
    range). ENOSYS before Linux 6.5. ``length`` must not be 0 (cachestat's "to the end")."""
    nr = _SYS_CACHESTAT.get(_MACHINE)
    if nr is None:
        raise _error(errno.ENOSYS)
    if not (0 <= offset <= _INT64_MAX and 0 < length <= _INT64_MAX):
        raise _error(errno.EINVAL)
    span, stat = _CachestatRange(offset, length), _Cachestat()
    _retry(
        _syscall,
        ctypes.c_long(nr),
        _check_fd(fd),
        ctypes.byref(span),
        ctypes.byref(stat),
        ctypes.c_uint(0),
    )
    return int(stat.nr_cache)
