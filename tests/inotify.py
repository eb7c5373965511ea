"""A typed ctypes binding of Linux inotify, the few calls the tests and benchmarks of the
change feed need to watch a mount as a program in the guest would (CPython has no inotify
module; the three calls are small)."""

from __future__ import annotations

import ctypes
import os
import struct
from typing import Final, NamedTuple

IN_ACCESS: Final = 0x00000001
IN_MODIFY: Final = 0x00000002
IN_ATTRIB: Final = 0x00000004
IN_CLOSE_WRITE: Final = 0x00000008
IN_MOVED_FROM: Final = 0x00000040
IN_MOVED_TO: Final = 0x00000080
IN_CREATE: Final = 0x00000100
IN_DELETE: Final = 0x00000200
IN_DELETE_SELF: Final = 0x00000400
IN_MOVE_SELF: Final = 0x00000800
IN_UNMOUNT: Final = 0x00002000
IN_Q_OVERFLOW: Final = 0x00004000
IN_IGNORED: Final = 0x00008000
IN_ONLYDIR: Final = 0x01000000
IN_DONT_FOLLOW: Final = 0x02000000
IN_EXCL_UNLINK: Final = 0x04000000
IN_ISDIR: Final = 0x40000000
IN_NONBLOCK: Final = os.O_NONBLOCK
IN_CLOEXEC: Final = os.O_CLOEXEC

_HEADER: Final = struct.Struct("iIII")  # wd, mask, cookie, len

_libc = ctypes.CDLL(None, use_errno=True)
_init1 = _libc.inotify_init1
_init1.argtypes = [ctypes.c_int]
_init1.restype = ctypes.c_int
_add = _libc.inotify_add_watch
_add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_add.restype = ctypes.c_int
_rm = _libc.inotify_rm_watch
_rm.argtypes = [ctypes.c_int, ctypes.c_int]
_rm.restype = ctypes.c_int


class Event(NamedTuple):
    wd: int
    mask: int
    cookie: int
    name: bytes


def _check(result: int) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def init() -> int:
    """A new inotify instance: a non-blocking, close-on-exec fd the caller owns."""
    return _check(_init1(IN_NONBLOCK | IN_CLOEXEC))


def add_watch(fd: int, path: bytes, mask: int) -> int:
    """Watch ``path`` (ENOSPC past ``max_user_watches``); returns the watch descriptor,
    the same one again for an inode already watched."""
    return _check(_add(fd, path, mask))


def rm_watch(fd: int, wd: int) -> None:
    """Stop watching; EINVAL (the inode went, the watch with it) is not an error here."""
    if _rm(fd, wd) < 0 and ctypes.get_errno() != 22:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def parse(buf: bytes) -> list[Event]:
    """The events in what one ``read`` of an inotify fd returned (whole events only:
    the kernel never splits one)."""
    out: list[Event] = []
    pos, end = 0, len(buf)
    while pos + _HEADER.size <= end:
        wd, mask, cookie, length = _HEADER.unpack_from(buf, pos)
        pos += _HEADER.size
        name = bytes(buf[pos : pos + length]).rstrip(b"\0")
        pos += length
        out.append(Event(wd, mask, cookie, name))
    return out
