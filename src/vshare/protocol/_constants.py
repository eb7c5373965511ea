"""Constants of 9P2000.L (values as in Linux ``include/net/9p/9p.h`` and diod's ``9p.h``)."""

from __future__ import annotations

import os
from typing import Final

VERSION_9P2000_L: Final = "9P2000.L"
VERSION_UNKNOWN: Final = "unknown"
#: 9P2000.L with one promise more, asked for by vshare's own clients and agreed to by its
#: gateway: a request that makes, opens or ends a fid, adds a name to a directory or sets a
#: file's attributes is carried out before the later requests naming that fid, so a client
#: may send a Twalk and a Tgetattr of the fid it makes in one write (9P itself does not
#: order requests: diod, for one, runs them on several threads). A server that does not
#: know it answers "9P2000.L" or an error, and the client then asks for 9P2000.L.
VERSION_VSHARE: Final = "9P2000.L.vshare"
#: ``VERSION_VSHARE`` and two messages more: Treaddirplus (:mod:`._dirent`), a listing whose
#: entries carry their attributes, so that a client lists a directory and knows every
#: entry's attributes in one request instead of a walk and a getattr per entry; and
#: Tgetattrat, the attributes of a name in a directory without a fid for it. Asked for
#: first; a gateway that does not know it answers "9P2000.L" (its prefix), and the client
#: then asks for ``VERSION_VSHARE``.
VERSION_VSHARE_2: Final = "9P2000.L.vshare.2"
#: Part of ``VERSION_VSHARE_2``: a Txattrwalk of this name (on any fid) reads the extended
#: attribute namespaces the gateway shows (``user.`` by default), each followed by a NUL.
#: Names outside them read as absent, so a client answers them itself: ``ls -l`` asks for
#: ``security.selinux`` and ``system.posix_acl_access`` of every file it lists. No real
#: attribute can have this name: Linux knows no ``vshare.`` namespace.
XATTR_NAMESPACES_NAME: Final = "vshare.xattr_namespaces"
#: ``VERSION_VSHARE_2`` and the change feed (Twatch/Rwatch, :mod:`._changes`,
#: docs/changes-feed.md): a long poll that completes when files of the attachment change,
#: so a client may cache for long and still see other clients' changes at once. Asked for
#: first; a gateway that does not know it answers "9P2000.L" (its prefix), and the client
#: then asks for ``VERSION_VSHARE_2``.
VERSION_VSHARE_3: Final = "9P2000.L.vshare.3"
#: ``VERSION_VSHARE_3`` and two messages that make a fid and open it in one request:
#: Tlcreateat, a create in a directory fid whose file gets a new fid (not a Twalk clone of
#: the directory fid, which Tlcreate turns into the file, and the Tlcreate), and Twalkopen,
#: a walk of at most one name to a new fid and its Tlopen. Asked for first; a gateway that
#: does not know it answers "9P2000.L" (its prefix), and the client then asks for
#: ``VERSION_VSHARE_3``.
VERSION_VSHARE_4: Final = "9P2000.L.vshare.4"
#: ``VERSION_VSHARE_4`` and Tfallocate: fallocate(2) of an open fid, with the modes FUSE
#: passes on (``FALLOCATE_MODES``), which 9P2000.L has no message for. Asked for first; a
#: gateway that does not know it answers "9P2000.L" (its prefix), and the client then asks
#: for ``VERSION_VSHARE_4`` (and answers fallocate EOPNOTSUPP, as v9fs does).
VERSION_VSHARE_5: Final = "9P2000.L.vshare.5"

#: Tfallocate's mode bits (Linux ``FALLOC_FL_*``): keep the size, punch a hole (with
#: KEEP_SIZE), zero a range. The ones FUSE passes on; others are EOPNOTSUPP.
FALLOC_KEEP_SIZE: Final = 0x01
FALLOC_PUNCH_HOLE: Final = 0x02
FALLOC_ZERO_RANGE: Final = 0x10
FALLOCATE_MODES: Final = FALLOC_KEEP_SIZE | FALLOC_PUNCH_HOLE | FALLOC_ZERO_RANGE

NOTAG: Final = 0xFFFF
NOFID: Final = 0xFFFFFFFF
#: size[4] type[1] tag[2]
HEADER_SIZE: Final = 7
#: A 9P message may name at most this many path elements in one walk.
MAXWELEM: Final = 16
#: Bytes of a Rread/Rwrite frame that are not payload: header + count[4].
IOHDRSZ: Final = 24

# qid.type
QTDIR: Final = 0x80
QTAPPEND: Final = 0x40
QTEXCL: Final = 0x20
QTMOUNT: Final = 0x10
QTAUTH: Final = 0x08
QTTMP: Final = 0x04
QTSYMLINK: Final = 0x02
QTLINK: Final = 0x01
QTFILE: Final = 0x00

# Tgetattr request_mask / Rgetattr valid
GETATTR_MODE: Final = 0x00000001
GETATTR_NLINK: Final = 0x00000002
GETATTR_UID: Final = 0x00000004
GETATTR_GID: Final = 0x00000008
GETATTR_RDEV: Final = 0x00000010
GETATTR_ATIME: Final = 0x00000020
GETATTR_MTIME: Final = 0x00000040
GETATTR_CTIME: Final = 0x00000080
GETATTR_INO: Final = 0x00000100
GETATTR_SIZE: Final = 0x00000200
GETATTR_BLOCKS: Final = 0x00000400
GETATTR_BTIME: Final = 0x00000800
GETATTR_GEN: Final = 0x00001000
GETATTR_DATA_VERSION: Final = 0x00002000
GETATTR_BASIC: Final = 0x000007FF
GETATTR_ALL: Final = 0x00003FFF

# Tsetattr valid
SETATTR_MODE: Final = 0x00000001
SETATTR_UID: Final = 0x00000002
SETATTR_GID: Final = 0x00000004
SETATTR_SIZE: Final = 0x00000008
SETATTR_ATIME: Final = 0x00000010
SETATTR_MTIME: Final = 0x00000020
SETATTR_CTIME: Final = 0x00000040
#: With SETATTR_ATIME: set atime to the value given; without it: to the server's time.
SETATTR_ATIME_SET: Final = 0x00000080
SETATTR_MTIME_SET: Final = 0x00000100

# Tlock type / Tgetlock type
LOCK_TYPE_RDLCK: Final = 0
LOCK_TYPE_WRLCK: Final = 1
LOCK_TYPE_UNLCK: Final = 2
# Rlock status
LOCK_SUCCESS: Final = 0
LOCK_BLOCKED: Final = 1
LOCK_ERROR: Final = 2
LOCK_GRACE: Final = 3
# Tlock flags
LOCK_FLAGS_BLOCK: Final = 1
LOCK_FLAGS_RECLAIM: Final = 2

# Tunlinkat flags
AT_REMOVEDIR: Final = 0x200

# Open flags of Tlopen/Tlcreate (P9_DOTL_*). Octal, as in the kernel header.
DOTL_RDONLY: Final = 0o0
DOTL_WRONLY: Final = 0o1
DOTL_RDWR: Final = 0o2
DOTL_NOACCESS: Final = 0o3
DOTL_ACCMODE: Final = 0o3
DOTL_CREATE: Final = 0o100
DOTL_EXCL: Final = 0o200
DOTL_NOCTTY: Final = 0o400
DOTL_TRUNC: Final = 0o1000
DOTL_APPEND: Final = 0o2000
DOTL_NONBLOCK: Final = 0o4000
DOTL_DSYNC: Final = 0o10000
DOTL_FASYNC: Final = 0o20000
DOTL_DIRECT: Final = 0o40000
DOTL_LARGEFILE: Final = 0o100000
DOTL_DIRECTORY: Final = 0o200000
DOTL_NOFOLLOW: Final = 0o400000
DOTL_NOATIME: Final = 0o1000000
DOTL_CLOEXEC: Final = 0o2000000
DOTL_SYNC: Final = 0o4000000

# One table, both directions. Flags this platform's ``os`` lacks are left out.
_DOTL_TO_OS: Final[tuple[tuple[int, int], ...]] = tuple(
    (dotl, getattr(os, name))
    for dotl, name in (
        (DOTL_CREATE, "O_CREAT"),
        (DOTL_EXCL, "O_EXCL"),
        (DOTL_NOCTTY, "O_NOCTTY"),
        (DOTL_TRUNC, "O_TRUNC"),
        (DOTL_APPEND, "O_APPEND"),
        (DOTL_NONBLOCK, "O_NONBLOCK"),
        (DOTL_DSYNC, "O_DSYNC"),
        (DOTL_FASYNC, "O_ASYNC"),
        (DOTL_DIRECT, "O_DIRECT"),
        (DOTL_LARGEFILE, "O_LARGEFILE"),
        (DOTL_DIRECTORY, "O_DIRECTORY"),
        (DOTL_NOFOLLOW, "O_NOFOLLOW"),
        (DOTL_NOATIME, "O_NOATIME"),
        (DOTL_CLOEXEC, "O_CLOEXEC"),
        (DOTL_SYNC, "O_SYNC"),
    )
    if getattr(os, name, 0)  # O_LARGEFILE is 0 on 64-bit Linux: nothing to map
)
_ACCMODE_TO_OS: Final = {
    DOTL_RDONLY: os.O_RDONLY,
    DOTL_WRONLY: os.O_WRONLY,
    DOTL_RDWR: os.O_RDWR,
    DOTL_NOACCESS: os.O_RDONLY,
}
_OS_ACCMODE_TO_DOTL: Final = {
    os.O_RDONLY: DOTL_RDONLY,
    os.O_WRONLY: DOTL_WRONLY,
    os.O_RDWR: DOTL_RDWR,
}


def dotl_to_os_flags(flags: int) -> int:
    """Translate P9_DOTL open flags to this platform's ``os.O_*`` flags.

    O_SYNC contains O_DSYNC on Linux, so both map without loss. Unknown bits are dropped.
    """
    out = _ACCMODE_TO_OS[flags & DOTL_ACCMODE]
    for dotl, osflag in _DOTL_TO_OS:
        if flags & dotl == dotl:
            out |= osflag
    return out


def os_to_dotl_flags(flags: int) -> int:
    """Translate ``os.O_*`` flags to P9_DOTL open flags (the inverse of the above)."""
    out = _OS_ACCMODE_TO_DOTL.get(flags & os.O_ACCMODE, DOTL_RDONLY)
    for dotl, osflag in _DOTL_TO_OS:
        if flags & osflag == osflag:
            out |= dotl
    return out
