"""What the FUSE handlers take and return (the names pyfuse3 gave them, which the client
was first written against)."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Final

ROOT_INODE: Final = 1
RENAME_NOREPLACE: Final = 1 << 0
RENAME_EXCHANGE: Final = 1 << 1


class FUSEError(Exception):
    """The errno a handler answers the kernel with."""

    def __init__(self, errno_: int) -> None:
        super().__init__(errno_)
        self.errno = errno_

    def __str__(self) -> str:
        return errno.errorcode.get(self.errno, str(self.errno))


@dataclass(slots=True)
class EntryAttributes:
    """A name's inode and attributes (st_ino 0 with ``entry_timeout``: no such name).

    ``st_ino`` is the kernel's handle of the inode (FUSE's node id); ``shown_ino`` what
    ``stat`` and ``readdir`` show as its inode number, when it is not that (0)."""

    st_ino: int = 0
    shown_ino: int = 0
    generation: int = 0
    entry_timeout: float = 0.0
    attr_timeout: float = 0.0
    st_mode: int = 0
    st_nlink: int = 0
    st_uid: int = 0
    st_gid: int = 0
    st_rdev: int = 0
    st_size: int = 0
    st_blksize: int = 4096
    st_blocks: int = 0
    st_atime_ns: int = 0
    st_mtime_ns: int = 0
    st_ctime_ns: int = 0


@dataclass(slots=True)
class SetattrFields:
    """Which of a setattr's attributes change."""

    update_mode: bool = False
    update_uid: bool = False
    update_gid: bool = False
    update_size: bool = False
    update_atime: bool = False
    update_mtime: bool = False
    update_ctime: bool = False
    #: The caller lacks CAP_FSETID: set-id bits go with the change (HANDLE_KILLPRIV_V2).
    kill_setid: bool = False


@dataclass(slots=True)
class FileInfo:
    fh: int
    direct_io: bool = False
    keep_cache: bool = False
    nonseekable: bool = False


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who asks: the calling thread's uid, gid and thread id (the kernel's view)."""

    uid: int
    gid: int
    pid: int


@dataclass(slots=True)
class StatvfsData:
    f_bsize: int = 0
    f_frsize: int = 0
    f_blocks: int = 0
    f_bfree: int = 0
    f_bavail: int = 0
    f_files: int = 0
    f_ffree: int = 0
    f_favail: int = 0
    f_namemax: int = 0
