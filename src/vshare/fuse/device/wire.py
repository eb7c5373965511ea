"""The FUSE device protocol (``/dev/fuse``, linux/fuse.h 7.38), sans I/O.

:func:`parse` takes the bytes of one read of the device and returns the request: its
header and its arguments, decoded for the opcodes the client answers. The ``*_reply``
functions return the bytes of one write answering it. Nothing here reads, writes or
waits: :mod:`.session` does.

Bad bytes from the kernel are not expected, but a request too short for its opcode is
:class:`WireError`, which the session answers EIO, never a crash.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from vshare.fuse.device.types import EntryAttributes, StatvfsData

# -- opcodes (enum fuse_opcode) --
LOOKUP: Final = 1
FORGET: Final = 2
GETATTR: Final = 3
SETATTR: Final = 4
READLINK: Final = 5
SYMLINK: Final = 6
MKNOD: Final = 8
MKDIR: Final = 9
UNLINK: Final = 10
RMDIR: Final = 11
RENAME: Final = 12
LINK: Final = 13
OPEN: Final = 14
READ: Final = 15
WRITE: Final = 16
STATFS: Final = 17
RELEASE: Final = 18
FSYNC: Final = 20
SETXATTR: Final = 21
GETXATTR: Final = 22
LISTXATTR: Final = 23
REMOVEXATTR: Final = 24
FLUSH: Final = 25
INIT: Final = 26
OPENDIR: Final = 27
READDIR: Final = 28
RELEASEDIR: Final = 29
FSYNCDIR: Final = 30
ACCESS: Final = 34
CREATE: Final = 35
INTERRUPT: Final = 36
DESTROY: Final = 38
BATCH_FORGET: Final = 42
READDIRPLUS: Final = 44
FALLOCATE: Final = 43
RENAME2: Final = 45

# -- INIT flags --
ASYNC_READ: Final = 1 << 0
ATOMIC_O_TRUNC: Final = 1 << 3
BIG_WRITES: Final = 1 << 5
AUTO_INVAL_DATA: Final = 1 << 12
DO_READDIRPLUS: Final = 1 << 13
ASYNC_DIO: Final = 1 << 15
WRITEBACK_CACHE: Final = 1 << 16
PARALLEL_DIROPS: Final = 1 << 18
MAX_PAGES: Final = 1 << 22
CACHE_SYMLINKS: Final = 1 << 23
HANDLE_KILLPRIV_V2: Final = 1 << 28
INIT_EXT: Final = 1 << 30
# Bits 32..63 travel in ``flags2`` (with INIT_EXT both ways); kernels from 6.6 on.
#: The kernel can expire a name without unhashing it (FUSE_EXPIRE_ONLY below); kernels
#: from 6.2 on offer it.
HAS_EXPIRE_ONLY: Final = 1 << 35
#: Shared mmap of a file opened FOPEN_DIRECT_IO (``--cache none``): SQLite's WAL, mmap'd
#: databases and editors' files map it; without, mmap(MAP_SHARED) fails with ENODEV.
DIRECT_IO_ALLOW_MMAP: Final = 1 << 36

# -- setattr valid bits (FATTR_*) --
FATTR_MODE: Final = 1 << 0
FATTR_UID: Final = 1 << 1
FATTR_GID: Final = 1 << 2
FATTR_SIZE: Final = 1 << 3
FATTR_ATIME: Final = 1 << 4
FATTR_MTIME: Final = 1 << 5
FATTR_FH: Final = 1 << 6
FATTR_ATIME_NOW: Final = 1 << 7
FATTR_MTIME_NOW: Final = 1 << 8
FATTR_CTIME: Final = 1 << 10
FATTR_KILL_SUIDGID: Final = 1 << 11

# -- open reply flags (FOPEN_*) --
FOPEN_DIRECT_IO: Final = 1 << 0
FOPEN_KEEP_CACHE: Final = 1 << 1
FOPEN_NONSEEKABLE: Final = 1 << 2

#: fuse_write_in.write_flags: the writer lacks CAP_FSETID (HANDLE_KILLPRIV_V2).
WRITE_KILL_SUIDGID: Final = 1 << 2
#: fuse_open_in.open_flags: the same for an open with O_TRUNC.
OPEN_KILL_SUIDGID: Final = 1 << 0
FSYNC_FDATASYNC: Final = 1 << 0

# -- notifications (enum fuse_notify_code) --
NOTIFY_INVAL_INODE: Final = 2
NOTIFY_INVAL_ENTRY: Final = 3
#: fuse_notify_inval_entry_out.flags: expire the name (the kernel asks again before it uses
#: it) rather than unhash it (a directory that is a working directory then fails getcwd).
EXPIRE_ONLY: Final = 1 << 0

KERNEL_MAJOR: Final = 7
KERNEL_MINOR: Final = 38
ROOT_ID: Final = 1

IN_HEADER: Final = struct.Struct("<IIQQIIIHH")
OUT_HEADER: Final = struct.Struct("<IiQ")
_ATTR = struct.Struct("<QQQQQQIIIIIIIIII")
_ENTRY_OUT = struct.Struct("<QQQQII" + _ATTR.format[1:])
_ATTR_OUT = struct.Struct("<QII" + _ATTR.format[1:])
_OPEN_OUT = struct.Struct("<QII")
_U32_PAIR = struct.Struct("<II")
_U64 = struct.Struct("<Q")
_SETATTR_IN = struct.Struct("<IIQQQQQQIIIIIIII")
_IO_IN = struct.Struct("<QQIIQII")  # fuse_read_in, fuse_write_in (and readdir)
_RELEASE_IN = struct.Struct("<QIIQ")  # fuse_release_in, fuse_flush_in
_FSYNC_IN = struct.Struct("<QII")
_FALLOCATE_IN = struct.Struct("<QQQII")
_CREATE_IN = struct.Struct("<IIII")
_RENAME2_IN = struct.Struct("<QII")
_INIT_IN = struct.Struct("<IIII")
_INIT_OUT = struct.Struct("<IIIIHHIIHHI28x")
_STATFS_OUT = struct.Struct("<QQQQQIIII24x")
_DIRENT = struct.Struct("<QQII")
_INVAL_INODE = struct.Struct("<Qqq")
_INVAL_ENTRY = struct.Struct("<QII")


class WireError(Exception):
    """The kernel's bytes do not hold the request their header says."""


class Header(NamedTuple):
    opcode: int
    unique: int
    nodeid: int
    uid: int
    gid: int
    pid: int


class SetattrIn(NamedTuple):
    valid: int
    fh: int
    size: int
    atime_ns: int
    mtime_ns: int
    mode: int
    uid: int
    gid: int


class IoIn(NamedTuple):
    """fuse_read_in, fuse_write_in, and READDIR's (a read of the directory)."""

    fh: int
    offset: int
    size: int
    flags: int  # read_flags / write_flags


class InitIn(NamedTuple):
    major: int
    minor: int
    max_readahead: int
    flags: int


def parse_header(buf: bytes | bytearray | memoryview) -> tuple[Header, int]:
    """The header of one request and the request's length (the bytes read)."""
    if len(buf) < IN_HEADER.size:
        raise WireError(f"a request of {len(buf)} bytes")
    length, opcode, unique, nodeid, uid, gid, pid, _, _ = IN_HEADER.unpack_from(buf)
    if length > len(buf):
        raise WireError(f"a request says {length} bytes, {len(buf)} read")
    return Header(opcode, unique, nodeid, uid, gid, pid), length


def names(body: bytes, count: int) -> list[bytes]:
    """The ``count`` NUL-terminated names at the start of ``body``."""
    out: list[bytes] = []
    at = 0
    for _ in range(count):
        end = body.find(b"\0", at)
        if end < 0:
            raise WireError("a name without its NUL")
        out.append(body[at:end])
        at = end + 1
    return out


def _unpack(layout: struct.Struct, body: bytes) -> tuple[int, ...]:
    if len(body) < layout.size:
        raise WireError(f"{len(body)} bytes of arguments, {layout.size} expected")
    return layout.unpack_from(body)


def u64(body: bytes) -> int:
    return int(_unpack(_U64, body)[0])


def u32_pair(body: bytes) -> tuple[int, int]:
    a, b = _unpack(_U32_PAIR, body)
    return a, b


def setattr_in(body: bytes) -> SetattrIn:
    (valid, _, fh, size, _, atime, mtime, _, atimens, mtimens, _, mode, _, uid, gid, _) = _unpack(
        _SETATTR_IN, body
    )
    return SetattrIn(
        valid, fh, size, atime * 10**9 + atimens, mtime * 10**9 + mtimens, mode, uid, gid
    )


def io_in(body: bytes) -> IoIn:
    fh, offset, size, flags, _, _, _ = _unpack(_IO_IN, body)
    return IoIn(fh, offset, size, flags)


def write_data(body: bytes, size: int) -> memoryview:
    """A WRITE's data: a view of ``body``, not a copy."""
    data = memoryview(body)[_IO_IN.size : _IO_IN.size + size]
    if len(data) != size:
        raise WireError(f"a write of {size} bytes carries {len(data)}")
    return data


def release_in(body: bytes) -> int:
    """The file handle of RELEASE, RELEASEDIR and FLUSH."""
    return int(_unpack(_RELEASE_IN, body)[0])


def fsync_in(body: bytes) -> tuple[int, bool]:
    fh, flags, _ = _unpack(_FSYNC_IN, body)
    return fh, bool(flags & FSYNC_FDATASYNC)


class FallocateIn(NamedTuple):
    fh: int
    offset: int
    length: int
    mode: int


def fallocate_in(body: bytes) -> FallocateIn:
    fh, offset, length, mode, _ = _unpack(_FALLOCATE_IN, body)
    return FallocateIn(fh, offset, length, mode)


def create_in(body: bytes) -> tuple[int, int, int, bytes]:
    """(flags, mode, open_flags, name) of CREATE."""
    flags, mode, _umask, open_flags = _unpack(_CREATE_IN, body)
    return flags, mode, open_flags, names(body[_CREATE_IN.size :], 1)[0]


def rename2_in(body: bytes) -> tuple[int, int, bytes, bytes]:
    newdir, flags, _ = _unpack(_RENAME2_IN, body)
    old, new = names(body[_RENAME2_IN.size :], 2)
    return newdir, flags, old, new


def init_in(body: bytes) -> InitIn:
    if len(body) < 8:
        raise WireError("INIT without its version")
    if len(body) < _INIT_IN.size:  # a kernel older than 7.6: no readahead nor flags
        major, minor = struct.unpack_from("<II", body)
        return InitIn(major, minor, 0, 0)
    major, minor, readahead, flags = _INIT_IN.unpack_from(body)
    if flags & INIT_EXT and len(body) >= _INIT_IN.size + 4:
        flags |= struct.unpack_from("<I", body, _INIT_IN.size)[0] << 32
    return InitIn(major, minor, readahead, flags)


# -- replies --


def reply(unique: int, *parts: bytes) -> bytes:
    """A successful reply carrying ``parts``."""
    body = b"".join(parts)
    return OUT_HEADER.pack(OUT_HEADER.size + len(body), 0, unique) + body


def error_reply(unique: int, errno_: int) -> bytes:
    return OUT_HEADER.pack(OUT_HEADER.size, -errno_, unique)


def _split(seconds: float) -> tuple[int, int]:
    if seconds <= 0:
        return 0, 0
    whole = int(seconds)
    return whole, int((seconds - whole) * 1e9)


def _attr_fields(e: EntryAttributes) -> tuple[int, ...]:
    a, m, c = e.st_atime_ns, e.st_mtime_ns, e.st_ctime_ns
    return (
        e.shown_ino or e.st_ino,
        e.st_size,
        e.st_blocks,
        a // 10**9,
        m // 10**9,
        c // 10**9,
        a % 10**9,
        m % 10**9,
        c % 10**9,
        e.st_mode,
        e.st_nlink,
        e.st_uid,
        e.st_gid,
        e.st_rdev,
        e.st_blksize,
        0,
    )


def entry_out(e: EntryAttributes) -> bytes:
    """fuse_entry_out: a name and its attributes (st_ino 0: "no such name", cached for
    ``entry_timeout``)."""
    es, ens = _split(e.entry_timeout)
    as_, ans = _split(e.attr_timeout)
    return _ENTRY_OUT.pack(e.st_ino, e.generation, es, as_, ens, ans, *_attr_fields(e))


def attr_out(e: EntryAttributes) -> bytes:
    as_, ans = _split(e.attr_timeout)
    return _ATTR_OUT.pack(as_, ans, 0, *_attr_fields(e))


def open_out(fh: int, open_flags: int) -> bytes:
    return _OPEN_OUT.pack(fh, open_flags, 0)


def write_out(size: int) -> bytes:
    return _U32_PAIR.pack(size, 0)


def xattr_size_out(size: int) -> bytes:
    """fuse_getxattr_out: the size a value or list would take (asked with size 0)."""
    return _U32_PAIR.pack(size, 0)


def statfs_out(s: StatvfsData) -> bytes:
    return _STATFS_OUT.pack(
        s.f_blocks,
        s.f_bfree,
        s.f_bavail,
        s.f_files,
        s.f_ffree,
        s.f_bsize,
        s.f_namemax,
        s.f_frsize,
        0,
    )


def init_out(
    minor: int,
    max_readahead: int,
    flags: int,
    max_background: int,
    max_write: int,
    max_pages: int,
) -> bytes:
    """``flags``: 64 bits, the high half sent in flags2 (then with INIT_EXT)."""
    congestion = max_background * 3 // 4
    high = flags >> 32
    low = (flags & 0xFFFF_FFFF) | (INIT_EXT if high else 0)
    return _INIT_OUT.pack(
        KERNEL_MAJOR,
        minor,
        max_readahead,
        low,
        max_background,
        congestion,
        max_write,
        1,  # time_gran: nanoseconds
        max_pages,
        0,
        high,
    )


def dirent(name: bytes, ino: int, mode: int, next_offset: int) -> bytes:
    """fuse_dirent, padded to 8 bytes."""
    raw = _DIRENT.pack(ino, next_offset, len(name), (mode & 0o170000) >> 12) + name
    return raw + b"\0" * (-len(raw) % 8)


def direntplus(name: bytes, e: EntryAttributes, next_offset: int) -> bytes:
    """fuse_direntplus: the entry (a lookup the kernel takes, if st_ino) and the dirent."""
    return entry_out(e) + dirent(name, e.shown_ino or e.st_ino, e.st_mode, next_offset)


def notify_inval_inode(ino: int, offset: int, length: int) -> bytes:
    body = _INVAL_INODE.pack(ino, offset, length)
    return OUT_HEADER.pack(OUT_HEADER.size + len(body), NOTIFY_INVAL_INODE, 0) + body


def notify_inval_entry(parent: int, name: bytes, *, expire_only: bool = False) -> bytes:
    flags = EXPIRE_ONLY if expire_only else 0
    body = _INVAL_ENTRY.pack(parent, len(name), flags) + name + b"\0"
    return OUT_HEADER.pack(OUT_HEADER.size + len(body), NOTIFY_INVAL_ENTRY, 0) + body


class ReaddirToken:
    """The reply to one READDIR(PLUS) being filled: entries are added while they fit in
    the size the kernel asked for."""

    __slots__ = ("parts", "plus", "room")

    def __init__(self, size: int, plus: bool) -> None:
        self.room = size
        self.plus = plus
        self.parts: list[bytes] = []

    def add(self, name: bytes, e: EntryAttributes, next_id: int) -> bool:
        """Add an entry; False (nothing added) when it would not fit. With readdirplus,
        an entry added with a nonzero st_ino is a lookup the kernel takes on it."""
        raw = (
            direntplus(name, e, next_id)
            if self.plus
            else dirent(name, e.shown_ino or e.st_ino, e.st_mode, next_id)
        )
        if len(raw) > self.room:
            return False
        self.room -= len(raw)
        self.parts.append(raw)
        return True
