"""GlusterFS's structs and names in the backend's terms: ``struct stat`` → :class:`Attr`,
times → ``Timespec``, gfids → qid paths, and the xattr name rule (point 6 of the package
note: ``user.*`` but not ``user.glusterfs*``, and the POSIX ACL names)."""

from __future__ import annotations

import errno
import time
from typing import Final

from vshare.backend import _gfapi, _gfapi_abi
from vshare.backend._common import I64_MAX, NS, check_xattr_flags, err
from vshare.backend.base import TIME_NOW, Attr

__all__ = [
    "attr_of",
    "check_xattr_value",
    "ns_of",
    "qid_of_gfid",
    "setattrs_of",
    "timespec",
    "xattr_allowed",
    "xattr_name",
]

XATTR_NAME_MAX: Final = 255
XATTR_SIZE_MAX: Final = 64 * 1024
_XATTR_ACL: Final = frozenset({"system.posix_acl_access", "system.posix_acl_default"})


def qid_of_gfid(gfid: bytes) -> int:
    """GlusterFS's ``gfid_to_ino``: the last 8 bytes of the gfid, big-endian."""
    return int.from_bytes(gfid[8:16], "big")


def xattr_name(name: str) -> bytes:
    """An allowed xattr name (package note, point 6) as bytes."""
    if not name or "\0" in name:
        raise err(errno.EINVAL)
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > XATTR_NAME_MAX:
        raise err(errno.ERANGE)
    if not xattr_allowed(name):
        raise err(errno.EOPNOTSUPP)
    return raw


def check_xattr_value(value: bytes, flags: int) -> None:
    """EINVAL for flags other than 0, XATTR_CREATE, XATTR_REPLACE; E2BIG past 64 KiB."""
    check_xattr_flags(flags)
    if len(value) > XATTR_SIZE_MAX:
        raise err(errno.E2BIG)


def xattr_allowed(name: str) -> bool:
    if name in _XATTR_ACL:
        return True
    return name.startswith("user.") and not name.startswith("user.glusterfs")


def ns_of(ts: _gfapi_abi.Timespec) -> int:
    return int(ts.tv_sec) * NS + int(ts.tv_nsec)


def attr_of(st: _gfapi.Stat, qid: int) -> Attr:
    return Attr(
        qid_path=qid,
        mode=st.st_mode,
        uid=st.st_uid,
        gid=st.st_gid,
        nlink=st.st_nlink,
        rdev=st.st_rdev,
        size=st.st_size,
        blksize=st.st_blksize,
        blocks=st.st_blocks,
        atime_ns=ns_of(st.st_atim),
        mtime_ns=ns_of(st.st_mtim),
        ctime_ns=ns_of(st.st_ctim),
    )


def timespec(ns: int) -> _gfapi_abi.Timespec:
    if ns == TIME_NOW:
        ns = time.time_ns()
    sec, nsec = divmod(ns, NS)
    if not -(1 << 63) <= sec <= I64_MAX:
        raise err(errno.EINVAL)
    return _gfapi_abi.Timespec(sec, nsec)


def setattrs_of(*fields: tuple[str, object, int]) -> tuple[_gfapi.Stat, int]:
    """For ``glfs_h_setattrs``: a ``struct stat`` with each ``(field, value, SET_ATTR bit)``
    whose value is not None set, and the bits of those."""
    st = _gfapi.Stat()
    valid = 0
    for name, value, bit in fields:
        if value is not None:
            setattr(st, name, value)
            valid |= bit
    return st, valid
