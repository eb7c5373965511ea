"""libgfapi's ABI as ctypes declares it: constants, ``struct stat``/``statvfs``/``dirent`` for
64-bit glibc (x86_64 and aarch64 layouts), and the glusterfs >= 6.0 prototypes of every call
:mod:`vshare.backend._gfapi` makes (the notes on versions are there)."""

from __future__ import annotations

import ctypes
import platform
from typing import Any, Final

__all__ = [
    "EVENT_INODE_INVALIDATE",
    "HANDLE_LENGTH",
    "PROTOTYPES",
    "SET_ATTR_ATIME",
    "SET_ATTR_GID",
    "SET_ATTR_MODE",
    "SET_ATTR_MTIME",
    "SET_ATTR_SIZE",
    "SET_ATTR_UID",
    "UPCALL_CBK",
    "UPCALL_INODE_INVALIDATE",
    "Dirent",
    "Stat",
    "StatVfs",
    "Timespec",
]

#: ``glfs_h_setattrs`` valid bits (glfs-handles.h).
SET_ATTR_MODE: Final = 0x1
SET_ATTR_UID: Final = 0x2
SET_ATTR_GID: Final = 0x4
SET_ATTR_SIZE: Final = 0x8
SET_ATTR_ATIME: Final = 0x10
SET_ATTR_MTIME: Final = 0x20
#: The length of a handle from ``glfs_h_extract_handle``: the object's gfid.
HANDLE_LENGTH: Final = 16


#: ``glfs_upcall_register`` event: an object changed (``GLFS_EVENT_INODE_INVALIDATE``).
EVENT_INODE_INVALIDATE: Final = 0x1
#: ``glfs_upcall_get_reason``: the event is a ``struct glfs_upcall_inode``.
UPCALL_INODE_INVALIDATE: Final = 1

#: ``void (*glfs_upcall_cbk)(struct glfs_upcall *up_arg, void *data)``
UPCALL_CBK: Final = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)

if ctypes.sizeof(ctypes.c_void_p) != 8:  # pragma: no cover - 32-bit hosts are not supported
    raise ImportError("vshare.backend._gfapi needs a 64-bit Linux")


class Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_long))


if platform.machine() == "aarch64":  # pragma: no cover - the generic 64-bit layout

    class Stat(ctypes.Structure):
        """``struct stat`` of aarch64 glibc."""

        _fields_ = (
            ("st_dev", ctypes.c_uint64),
            ("st_ino", ctypes.c_uint64),
            ("st_mode", ctypes.c_uint32),
            ("st_nlink", ctypes.c_uint32),
            ("st_uid", ctypes.c_uint32),
            ("st_gid", ctypes.c_uint32),
            ("st_rdev", ctypes.c_uint64),
            ("_pad1", ctypes.c_uint64),
            ("st_size", ctypes.c_int64),
            ("st_blksize", ctypes.c_int32),
            ("_pad2", ctypes.c_int32),
            ("st_blocks", ctypes.c_int64),
            ("st_atim", Timespec),
            ("st_mtim", Timespec),
            ("st_ctim", Timespec),
            ("_unused", ctypes.c_int32 * 2),
        )

else:

    class Stat(ctypes.Structure):  # type: ignore[no-redef]
        """``struct stat`` of x86_64 glibc."""

        _fields_ = (
            ("st_dev", ctypes.c_uint64),
            ("st_ino", ctypes.c_uint64),
            ("st_nlink", ctypes.c_uint64),
            ("st_mode", ctypes.c_uint32),
            ("st_uid", ctypes.c_uint32),
            ("st_gid", ctypes.c_uint32),
            ("_pad0", ctypes.c_int32),
            ("st_rdev", ctypes.c_uint64),
            ("st_size", ctypes.c_int64),
            ("st_blksize", ctypes.c_int64),
            ("st_blocks", ctypes.c_int64),
            ("st_atim", Timespec),
            ("st_mtim", Timespec),
            ("st_ctim", Timespec),
            ("_reserved", ctypes.c_int64 * 3),
        )


class StatVfs(ctypes.Structure):
    """``struct statvfs`` of 64-bit glibc."""

    _fields_ = (
        ("f_bsize", ctypes.c_ulong),
        ("f_frsize", ctypes.c_ulong),
        ("f_blocks", ctypes.c_uint64),
        ("f_bfree", ctypes.c_uint64),
        ("f_bavail", ctypes.c_uint64),
        ("f_files", ctypes.c_uint64),
        ("f_ffree", ctypes.c_uint64),
        ("f_favail", ctypes.c_uint64),
        ("f_fsid", ctypes.c_ulong),
        ("f_flag", ctypes.c_ulong),
        ("f_namemax", ctypes.c_ulong),
        ("_spare", ctypes.c_int * 6),
    )


class Dirent(ctypes.Structure):
    """``struct dirent`` of 64-bit glibc."""

    _fields_ = (
        ("d_ino", ctypes.c_uint64),
        ("d_off", ctypes.c_int64),
        ("d_reclen", ctypes.c_uint16),
        ("d_type", ctypes.c_uint8),
        ("d_name", ctypes.c_char * 256),
    )


_P = ctypes.c_void_p
_S = ctypes.c_char_p
_INT = ctypes.c_int
_SIZE = ctypes.c_size_t
_SSIZE = ctypes.c_ssize_t
_OFF = ctypes.c_int64
_STAT_P = ctypes.POINTER(Stat)

# name: (restype, argtypes). The glusterfs 10 prototypes.
PROTOTYPES: Final[dict[str, tuple[Any, tuple[Any, ...]]]] = {
    "glfs_new": (_P, (_S,)),
    "glfs_set_volfile_server": (_INT, (_P, _S, _S, _INT)),
    "glfs_set_logging": (_INT, (_P, _S, _INT)),
    "glfs_init": (_INT, (_P,)),
    "glfs_fini": (_INT, (_P,)),
    # struct glfs_object *glfs_h_lookupat(fs, parent, path, struct stat *, int follow)
    "glfs_h_lookupat": (_P, (_P, _P, _S, _STAT_P, _INT)),
    "glfs_h_creat": (_P, (_P, _P, _S, _INT, ctypes.c_uint32, _STAT_P)),
    # struct glfs_object *glfs_h_creat_open(fs, parent, path, int flags, mode_t,
    #                                       struct stat *, glfs_fd_t **out_fd)  (6.6)
    "glfs_h_creat_open": (_P, (_P, _P, _S, _INT, ctypes.c_uint32, _STAT_P, ctypes.POINTER(_P))),
    "glfs_h_mkdir": (_P, (_P, _P, _S, ctypes.c_uint32, _STAT_P)),
    "glfs_h_mknod": (_P, (_P, _P, _S, ctypes.c_uint32, ctypes.c_uint64, _STAT_P)),
    "glfs_h_symlink": (_P, (_P, _P, _S, _S, _STAT_P)),
    "glfs_h_unlink": (_INT, (_P, _P, _S)),
    "glfs_h_close": (_INT, (_P,)),
    "glfs_h_truncate": (_INT, (_P, _P, _OFF)),
    "glfs_h_stat": (_INT, (_P, _P, _STAT_P)),
    "glfs_h_statfs": (_INT, (_P, _P, ctypes.POINTER(StatVfs))),
    "glfs_h_getxattrs": (_INT, (_P, _P, _S, _P, _SIZE)),
    "glfs_h_setattrs": (_INT, (_P, _P, _STAT_P, _INT)),
    "glfs_h_setxattrs": (_INT, (_P, _P, _S, _P, _SIZE, _INT)),
    "glfs_h_removexattrs": (_INT, (_P, _P, _S)),
    "glfs_h_readlink": (_INT, (_P, _P, _P, _SIZE)),
    # int glfs_h_link(fs, struct glfs_object *linktgt, struct glfs_object *parent, name)
    "glfs_h_link": (_INT, (_P, _P, _P, _S)),
    "glfs_h_rename": (_INT, (_P, _P, _S, _P, _S)),
    "glfs_h_extract_handle": (_SSIZE, (_P, _P, _INT)),
    "glfs_h_open": (_P, (_P, _P, _INT)),
    "glfs_h_opendir": (_P, (_P, _P)),
    "glfs_object_copy": (_P, (_P,)),
    "glfs_close": (_INT, (_P,)),
    "glfs_fstat": (_INT, (_P, _STAT_P)),
    "glfs_closedir": (_INT, (_P,)),
    # ssize_t glfs_pread(fd, buf, count, offset, flags, struct glfs_stat *post)   (6.0)
    "glfs_pread": (_SSIZE, (_P, _P, _SIZE, _OFF, _INT, _P)),
    # ssize_t glfs_h_anonymous_read(fs, struct glfs_object *, buf, count, offset)  (3.7.0)
    "glfs_h_anonymous_read": (_SSIZE, (_P, _P, _P, _SIZE, _OFF)),
    # ssize_t glfs_pwrite(fd, buf, count, offset, flags, *prestat, *poststat)     (6.0)
    "glfs_pwrite": (_SSIZE, (_P, _P, _SIZE, _OFF, _INT, _P, _P)),
    # int glfs_fsync(fd, *prestat, *poststat), glfs_fdatasync likewise           (6.0)
    "glfs_fsync": (_INT, (_P, _P, _P)),
    "glfs_fdatasync": (_INT, (_P, _P, _P)),
    # int glfs_ftruncate(fd, off_t length, *prestat, *poststat)                    (6.0)
    "glfs_ftruncate": (_INT, (_P, _OFF, _P, _P)),
    # int glfs_fallocate(fd, int keep_size, off_t offset, size_t len)              (3.5.0)
    "glfs_fallocate": (_INT, (_P, _INT, _OFF, _SIZE)),
    # int glfs_discard(fd, off_t offset, size_t len)                               (3.5.0)
    "glfs_discard": (_INT, (_P, _OFF, _SIZE)),
    # int glfs_zerofill(fd, off_t offset, off_t len)                               (3.5.0)
    "glfs_zerofill": (_INT, (_P, _OFF, _OFF)),
    # int glfs_readdirplus_r(fd, struct stat *, struct dirent *, struct dirent **res)
    "glfs_readdirplus_r": (_INT, (_P, _STAT_P, ctypes.POINTER(Dirent), ctypes.POINTER(_P))),
    # int glfs_xreaddirplus_r(fd, uint32_t flags, struct glfs_xreaddirp_stat **xstat,
    #                        struct dirent *ext, struct dirent **res)              (3.11.0)
    "glfs_xreaddirplus_r": (
        _INT,
        (_P, ctypes.c_uint32, ctypes.POINTER(_P), ctypes.POINTER(Dirent), ctypes.POINTER(_P)),
    ),
    # struct stat *glfs_xreaddirplus_get_stat(xstat); struct glfs_object *..._get_object(xstat):
    # both freed with glfs_free(xstat)                                              (3.11.0)
    "glfs_xreaddirplus_get_stat": (_P, (_P,)),
    "glfs_xreaddirplus_get_object": (_P, (_P,)),
    "glfs_seekdir": (None, (_P, ctypes.c_long)),
    "glfs_set_xlator_option": (_INT, (_P, _S, _S, _S)),
    # int glfs_upcall_register(fs, uint32_t event_list, glfs_upcall_cbk cbk, void *data)
    "glfs_upcall_register": (_INT, (_P, ctypes.c_uint32, _P, _P)),
    "glfs_upcall_unregister": (_INT, (_P, ctypes.c_uint32)),
    "glfs_upcall_get_reason": (_INT, (_P,)),
    "glfs_upcall_get_event": (_P, (_P,)),
    "glfs_upcall_inode_get_object": (_P, (_P,)),
    "glfs_upcall_inode_get_pobject": (_P, (_P,)),
    "glfs_upcall_inode_get_oldpobject": (_P, (_P,)),
    "glfs_upcall_inode_get_flags": (ctypes.c_uint64, (_P,)),
    "glfs_free": (None, (_P,)),
}
