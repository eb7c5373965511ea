"""A typed ctypes binding to libgfapi (glusterfs 10): exactly the calls the gluster backend uses.

Prototypes are those of glusterfs >= 6.0 (``api/src/glfs.h``, ``glfs-handles.h``); the
symbols resolved by ``dlsym`` are the default versions (``glfs_pread@@GFAPI_6.0``, ...),
whose signatures changed in 6.0: ``glfs_pread``/``glfs_pwrite``/``glfs_fsync``/
``glfs_fdatasync``/``glfs_ftruncate`` take ``struct glfs_stat`` pointers (NULL here) that the
PyPI ``gfapi`` 1.2 bindings do not pass, which is why those crash on glusterfs 10.

Rules:

- Pointers (``glfs_t *``, ``glfs_object *``, ``glfs_fd_t *``) are plain ``int`` addresses;
  a NULL result becomes an :class:`OSError` with gfapi's errno (EIO when it left none), and
  nothing here accepts 0 for a pointer (a NULL parent would mean "the volume root" to
  ``glfs_h_lookupat``): :func:`_ptr` refuses it with EBADF.
- Every other failure is an ``OSError`` carrying gfapi's errno; integers are range-checked
  before they reach C (ctypes truncates silently).
- Calls block the calling thread (gfapi waits for the network); ctypes releases the GIL.
- ``struct stat``/``struct statvfs``/``struct dirent``, the constants and the prototypes are
  in :mod:`vshare.backend._gfapi_abi` (64-bit Linux with glibc, x86_64 and aarch64 layouts,
  the two this project runs on); ``Stat``, ``StatVfs`` and ``Dirent`` are re-exported here.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from typing import Any, Final

from vshare.backend._gfapi_abi import (
    HANDLE_LENGTH,
    UPCALL_INODE_INVALIDATE,
    Dirent,
    Stat,
    StatVfs,
)
from vshare.backend._gfapi_abi import PROTOTYPES as _PROTOTYPES

__all__ = [
    "Dirent",
    "Stat",
    "StatVfs",
    "calls",
    "close",
    "closedir",
    "fdatasync",
    "fini",
    "free",
    "fs_new",
    "fstat",
    "fsync",
    "h_anonymous_read",
    "h_close",
    "h_creat",
    "h_creat_open",
    "h_extract_handle",
    "h_getxattr",
    "h_link",
    "h_listxattr",
    "h_lookupat",
    "h_lookupat_root",
    "h_mkdir",
    "h_mknod",
    "h_open",
    "h_opendir",
    "h_readlink",
    "h_removexattr",
    "h_rename",
    "h_setattrs",
    "h_setxattr",
    "h_stat",
    "h_statfs",
    "h_symlink",
    "h_truncate",
    "h_unlink",
    "init",
    "load",
    "object_copy",
    "pread",
    "pwrite",
    "readdirplus",
    "seekdir",
    "set_logging",
    "set_volfile_server",
    "set_xlator_option",
    "upcall_inode_handles",
    "upcall_register",
    "upcall_unregister",
    "xreaddirplus",
]

_P = ctypes.c_void_p

_INT64_MAX: Final = (1 << 63) - 1
_UINT32_MAX: Final = (1 << 32) - 1
_XATTR_BUF: Final = 4096
_READLINK_BUF: Final = 4096

_lib_lock = threading.Lock()
_lib: Any = None

_calls_lock = threading.Lock()
_calls: dict[str, int] = {}


def calls() -> dict[str, int]:
    """How many times each call that reaches the storage (a fop: lookup, stat, read, ...)
    was made by this process, by name; calls answered in memory (``glfs_object_copy``,
    ``glfs_h_extract_handle``, ...) are not counted."""
    with _calls_lock:
        return dict(_calls)


def _count(name: str) -> None:
    with _calls_lock:
        _calls[name] = _calls.get(name, 0) + 1


def load() -> Any:
    """The loaded library with its prototypes set (once).

    Raises:
        OSError(ENOENT): libgfapi is not installed (Debian ``libgfapi0``).
    """
    global _lib
    with _lib_lock:
        if _lib is None:
            try:
                lib = ctypes.CDLL("libgfapi.so.0", use_errno=True)
            except OSError as exc:
                raise OSError(errno.ENOENT, f"libgfapi.so.0: {exc} (Debian libgfapi0)") from exc
            for name, (restype, argtypes) in _PROTOTYPES.items():
                func = getattr(lib, name)
                func.restype = restype
                func.argtypes = argtypes
            _lib = lib
        return _lib


def _error(code: int | None = None) -> OSError:
    if code is None:
        code = ctypes.get_errno() or errno.EIO
    return OSError(code, os.strerror(code))


def _check(ret: int) -> int:
    if ret < 0:
        raise _error()
    return ret


def _ptr(value: int | None) -> int:
    """A non-NULL pointer, or EBADF (never hand NULL to gfapi: it can mean "the root")."""
    if not value:
        raise _error(errno.EBADF)
    return value


def _new(ptr: int | None) -> int:
    """The pointer a constructor returned, or the OSError of its errno."""
    if not ptr:
        raise _error()
    return ptr


def _name(name: bytes) -> bytes:
    if b"\0" in name:
        raise _error(errno.EINVAL)
    return name


def _size(n: int) -> int:
    if not 0 <= n <= _INT64_MAX:
        raise _error(errno.EINVAL)
    return n


# ---------------------------------------------------------------------------------------------
# the volume


def fs_new(volume: str) -> int:
    """``glfs_new(volume)``."""
    ctypes.set_errno(0)
    return _new(load().glfs_new(_name(volume.encode())))


def set_volfile_server(fs: int, host: str, port: int, transport: str = "tcp") -> None:
    if not 0 < port < 65536:
        raise _error(errno.EINVAL)
    _check(
        load().glfs_set_volfile_server(
            _ptr(fs), _name(transport.encode()), _name(host.encode()), port
        )
    )


def set_logging(fs: int, path: str | None, level: int) -> None:
    """``glfs_set_logging``; ``path`` None: gfapi's default log file."""
    raw = None if path is None else _name(os.fsencode(path))
    _check(load().glfs_set_logging(_ptr(fs), raw, level))


def init(fs: int) -> None:
    _check(load().glfs_init(_ptr(fs)))


def fini(fs: int) -> None:
    """``glfs_fini``: ~10 s on glusterfs 10. The pointer is invalid afterwards."""
    _check(load().glfs_fini(_ptr(fs)))


# ---------------------------------------------------------------------------------------------
# handles


def h_lookupat(fs: int, parent: int, name: bytes, *, follow: bool) -> tuple[int, Stat]:
    """``glfs_h_lookupat(fs, parent, name, &st, follow)``: (object, its stat)."""
    _count("lookup")
    st = Stat()
    obj = load().glfs_h_lookupat(_ptr(fs), _ptr(parent), _name(name), ctypes.byref(st), follow)
    return _new(obj), st


def h_lookupat_root(fs: int) -> tuple[int, Stat]:
    """The volume root object: ``glfs_h_lookupat(fs, NULL, "/", &st, 0)``, the one call made
    with a NULL parent (which gfapi reads as "from the root")."""
    st = Stat()
    obj = load().glfs_h_lookupat(_ptr(fs), None, b"/", ctypes.byref(st), 0)
    return _new(obj), st


def h_creat(fs: int, parent: int, name: bytes, flags: int, mode: int) -> tuple[int, Stat]:
    _count("create")
    st = Stat()
    obj = load().glfs_h_creat(
        _ptr(fs), _ptr(parent), _name(name), flags, mode & 0o7777, ctypes.byref(st)
    )
    return _new(obj), st


def h_creat_open(fs: int, parent: int, name: bytes, flags: int, mode: int) -> tuple[int, Stat, int]:
    """``glfs_h_creat_open``: create ``name`` and open it in one call to the brick (a create
    fop that leaves its fd open), not ``glfs_h_creat`` then ``glfs_h_open``: (object, its
    stat, the open ``glfs_fd``)."""
    _count("create")
    st = Stat()
    fd = ctypes.c_void_p()
    obj = load().glfs_h_creat_open(
        _ptr(fs), _ptr(parent), _name(name), flags, mode & 0o7777, ctypes.byref(st),
        ctypes.byref(fd),
    )  # fmt: skip
    if obj and not fd.value:  # never seen; the object must not leak if it happens
        load().glfs_h_close(obj)
        raise _error(errno.EIO)
    return _new(obj), st, _new(fd.value)


def h_mkdir(fs: int, parent: int, name: bytes, mode: int) -> tuple[int, Stat]:
    _count("mkdir")
    st = Stat()
    obj = load().glfs_h_mkdir(_ptr(fs), _ptr(parent), _name(name), mode & 0o7777, ctypes.byref(st))
    return _new(obj), st


def h_mknod(fs: int, parent: int, name: bytes, mode: int, dev: int) -> tuple[int, Stat]:
    _count("mknod")
    if not 0 <= mode <= _UINT32_MAX or not 0 <= dev < 1 << 64:
        raise _error(errno.EINVAL)
    st = Stat()
    obj = load().glfs_h_mknod(_ptr(fs), _ptr(parent), _name(name), mode, dev, ctypes.byref(st))
    return _new(obj), st


def h_symlink(fs: int, parent: int, name: bytes, target: bytes) -> tuple[int, Stat]:
    _count("symlink")
    st = Stat()
    obj = load().glfs_h_symlink(
        _ptr(fs), _ptr(parent), _name(name), _name(target), ctypes.byref(st)
    )
    return _new(obj), st


def h_unlink(fs: int, parent: int, name: bytes) -> None:
    """``glfs_h_unlink``: removes a file *or an empty directory* named ``name``."""
    _count("unlink")
    _check(load().glfs_h_unlink(_ptr(fs), _ptr(parent), _name(name)))


def h_close(obj: int) -> None:
    _check(load().glfs_h_close(_ptr(obj)))


def object_copy(obj: int) -> int:
    """``glfs_object_copy``: a second object on the same inode (closed separately)."""
    ctypes.set_errno(0)
    return _new(load().glfs_object_copy(_ptr(obj)))


def h_truncate(fs: int, obj: int, size: int) -> None:
    _count("truncate")
    _check(load().glfs_h_truncate(_ptr(fs), _ptr(obj), _size(size)))


def h_stat(fs: int, obj: int) -> Stat:
    _count("stat")
    st = Stat()
    _check(load().glfs_h_stat(_ptr(fs), _ptr(obj), ctypes.byref(st)))
    return st


def h_statfs(fs: int, obj: int) -> StatVfs:
    _count("statfs")
    st = StatVfs()
    _check(load().glfs_h_statfs(_ptr(fs), _ptr(obj), ctypes.byref(st)))
    return st


def h_setattrs(fs: int, obj: int, st: Stat, valid: int) -> None:
    _count("setattr")
    _check(load().glfs_h_setattrs(_ptr(fs), _ptr(obj), ctypes.byref(st), valid))


def _getxattrs(fs: int, obj: int, name: bytes | None) -> bytes:
    """Value of ``name`` (None: the list of names), growing the buffer on ERANGE."""
    _count("getxattr")
    lib = load()
    size = _XATTR_BUF
    while True:
        buf = ctypes.create_string_buffer(size)
        ret = lib.glfs_h_getxattrs(_ptr(fs), _ptr(obj), name, buf, size)
        if ret >= 0:
            return buf.raw[:ret]
        err = ctypes.get_errno() or errno.EIO
        if err != errno.ERANGE:
            raise _error(err)
        needed = lib.glfs_h_getxattrs(_ptr(fs), _ptr(obj), name, None, 0)
        if needed < 0:
            raise _error()
        if size >= 1 << 24:
            raise _error(errno.E2BIG)
        size = max(needed, size * 2)


def h_getxattr(fs: int, obj: int, name: bytes) -> bytes:
    return _getxattrs(fs, obj, _name(name))


def h_listxattr(fs: int, obj: int) -> list[bytes]:
    return [n for n in _getxattrs(fs, obj, None).split(b"\0") if n]


def h_setxattr(fs: int, obj: int, name: bytes, value: bytes, flags: int) -> None:
    _count("setxattr")
    _check(load().glfs_h_setxattrs(_ptr(fs), _ptr(obj), _name(name), value, len(value), flags))


def h_removexattr(fs: int, obj: int, name: bytes) -> None:
    _count("removexattr")
    _check(load().glfs_h_removexattrs(_ptr(fs), _ptr(obj), _name(name)))


def h_readlink(fs: int, obj: int) -> bytes:
    _count("readlink")
    size = _READLINK_BUF
    while True:
        buf = ctypes.create_string_buffer(size)
        n = _check(load().glfs_h_readlink(_ptr(fs), _ptr(obj), buf, size))
        if n < size:
            return buf.raw[:n]
        if size >= 1 << 20:
            raise _error(errno.ENAMETOOLONG)
        size *= 4


def h_link(fs: int, target: int, parent: int, name: bytes) -> None:
    """``glfs_h_link(fs, target, parent, name)``: ``parent/name`` becomes ``target``."""
    _count("link")
    _check(load().glfs_h_link(_ptr(fs), _ptr(target), _ptr(parent), _name(name)))


def h_rename(fs: int, old_dir: int, old: bytes, new_dir: int, new: bytes) -> None:
    _count("rename")
    _check(load().glfs_h_rename(_ptr(fs), _ptr(old_dir), _name(old), _ptr(new_dir), _name(new)))


def h_extract_handle(obj: int) -> bytes:
    """The object's 16-byte gfid."""
    buf = ctypes.create_string_buffer(HANDLE_LENGTH)
    n = _check(load().glfs_h_extract_handle(_ptr(obj), buf, HANDLE_LENGTH))
    if n != HANDLE_LENGTH:
        raise _error(errno.EIO)
    return buf.raw


def h_open(fs: int, obj: int, flags: int) -> int:
    """``glfs_h_open``: regular files only (gfapi answers EISDIR/EINVAL otherwise)."""
    _count("open")
    ctypes.set_errno(0)
    return _new(load().glfs_h_open(_ptr(fs), _ptr(obj), flags))


def h_opendir(fs: int, obj: int) -> int:
    _count("opendir")
    ctypes.set_errno(0)
    return _new(load().glfs_h_opendir(_ptr(fs), _ptr(obj)))


# ---------------------------------------------------------------------------------------------
# open files


def close(fd: int) -> None:
    _count("flush")
    _check(load().glfs_close(_ptr(fd)))


def fstat(fd: int) -> Stat:
    _count("fstat")
    st = Stat()
    _check(load().glfs_fstat(_ptr(fd), ctypes.byref(st)))
    return st


def closedir(fd: int) -> None:
    _check(load().glfs_closedir(_ptr(fd)))


class _PyBuffer(ctypes.Structure):
    """CPython's ``Py_buffer`` (stable since 3.3): what ``PyObject_GetBuffer`` fills in."""

    _fields_ = (
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    )


_PyBUF_WRITABLE: Final = 0x0001
_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = (ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int)
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = (ctypes.POINTER(_PyBuffer),)
_release_buffer.restype = None


class _Pinned:
    """The address of a buffer's first byte, held for one C call (``with``): no copy,
    read-only buffers included (a Twrite's data is a slice of the bytes received, 1 MiB
    each: copying it twice cost more than the write itself). Holding the buffer export
    keeps the memory where it is (a bytearray cannot be resized) until released."""

    __slots__ = ("_buffer", "_view", "_writable")

    def __init__(self, buf: memoryview, *, writable: bool) -> None:
        if not buf.c_contiguous:
            raise _error(errno.EINVAL)
        if writable and buf.readonly:
            raise _error(errno.EFAULT)
        self._view = buf
        self._writable = writable
        self._buffer = _PyBuffer()

    def __enter__(self) -> tuple[int, int]:
        _get_buffer(self._view, self._buffer, _PyBUF_WRITABLE if self._writable else 0)
        return self._buffer.buf or 0, self._buffer.len

    def __exit__(self, *exc: object) -> None:
        _release_buffer(self._buffer)


def pread(fd: int, buf: memoryview, offset: int) -> int:
    """``glfs_pread(fd, buf, len, offset, 0, NULL)`` into ``buf``; bytes read."""
    _count("read")
    with _Pinned(buf, writable=True) as (target, n):
        if n == 0:
            return 0
        return _check(load().glfs_pread(_ptr(fd), target, n, _size(offset), 0, None))


def h_anonymous_read(fs: int, obj: int, buf: memoryview, offset: int) -> int:
    """``glfs_h_anonymous_read``: read the object ``obj`` into ``buf`` with no open file (the
    brick reads it through an anonymous fd: one READ, no OPEN, FLUSH or RELEASE); bytes
    read."""
    _count("read")
    with _Pinned(buf, writable=True) as (target, n):
        if n == 0:
            return 0
        return _check(load().glfs_h_anonymous_read(_ptr(fs), _ptr(obj), target, n, _size(offset)))


def pwrite(fd: int, data: memoryview, offset: int) -> int:
    """``glfs_pwrite(fd, data, len, offset, 0, NULL, NULL)``; bytes written."""
    _count("write")
    with _Pinned(data, writable=False) as (source, n):
        if n == 0:
            return 0
        return _check(load().glfs_pwrite(_ptr(fd), source, n, _size(offset), 0, None, None))


def fsync(fd: int) -> None:
    _count("fsync")
    _check(load().glfs_fsync(_ptr(fd), None, None))


def fdatasync(fd: int) -> None:
    _count("fdatasync")
    _check(load().glfs_fdatasync(_ptr(fd), None, None))


def ftruncate(fd: int, length: int) -> None:
    _count("truncate")
    _check(load().glfs_ftruncate(_ptr(fd), _size(length), None, None))


def fallocate(fd: int, offset: int, length: int, *, keep_size: bool) -> None:
    _count("fallocate")
    _check(load().glfs_fallocate(_ptr(fd), int(keep_size), _size(offset), _size(length)))


def discard(fd: int, offset: int, length: int) -> None:
    """``glfs_discard``: a hole punched, the size kept."""
    _count("discard")
    _check(load().glfs_discard(_ptr(fd), _size(offset), _size(length)))


def zerofill(fd: int, offset: int, length: int) -> None:
    """``glfs_zerofill``: the range reads as zeros, the size kept."""
    _count("zerofill")
    _check(load().glfs_zerofill(_ptr(fd), _size(offset), _size(length)))


def seekdir(fd: int, offset: int) -> None:
    """``glfs_seekdir``: the next :func:`readdirplus` starts after the entry whose
    ``d_off`` is ``offset`` (0: from the start)."""
    if not -(1 << 63) <= offset <= _INT64_MAX:
        raise _error(errno.EINVAL)
    load().glfs_seekdir(_ptr(fd), offset)


def readdirplus(fd: int, dirent: Dirent, st: Stat) -> bool:
    """``glfs_readdirplus_r`` into ``dirent``/``st``; False at the end of the directory.
    (Not counted in :func:`calls`: gfapi answers most entries from the batch its last
    READDIRP brought; ``opendir`` is counted.)"""
    result = _P()
    ret = load().glfs_readdirplus_r(
        _ptr(fd), ctypes.byref(st), ctypes.byref(dirent), ctypes.byref(result)
    )
    if ret != 0:
        raise _error(ret if ret > 0 else None)
    return bool(result.value)


#: ``glfs_xreaddirplus_r`` flags, and the bits of its answer saying what it filled.
XREADDIRP_STAT: Final = 0x1
XREADDIRP_HANDLE: Final = 0x2


def xreaddirplus(fd: int, dirent: Dirent, st: Stat) -> tuple[bool, int | None]:
    """``glfs_xreaddirplus_r`` asking for each entry's stat and object: whether an entry
    was read (into ``dirent`` and ``st``, zeroed when gfapi sent no stat), and a copy of its
    object (the caller closes it, :func:`h_close`) or None (``.``, ``..``, none sent).
    The objects are gfapi's inodes of the entries, linked under the directory as a lookup
    would: a later ``glfs_h_unlink`` or lookup of the name finds them there. (Not counted
    in :func:`calls`, as :func:`readdirplus`.)"""
    lib = load()
    xstat, result = _P(), _P()
    ctypes.set_errno(0)
    ret = lib.glfs_xreaddirplus_r(
        _ptr(fd),
        XREADDIRP_STAT | XREADDIRP_HANDLE,
        ctypes.byref(xstat),
        ctypes.byref(dirent),
        ctypes.byref(result),
    )
    try:
        if ret < 0:
            raise _error()
        if ret == 0 or not result.value:
            return False, None
        ctypes.memset(ctypes.byref(st), 0, ctypes.sizeof(st))
        obj = None
        if xstat.value:
            if ret & XREADDIRP_STAT and (sp := lib.glfs_xreaddirplus_get_stat(xstat)):
                ctypes.memmove(ctypes.byref(st), sp, ctypes.sizeof(st))
            if ret & XREADDIRP_HANDLE and (op := lib.glfs_xreaddirplus_get_object(xstat)):
                obj = object_copy(op)  # the one gfapi gave goes with xstat
        return True, obj
    finally:
        if xstat.value:
            lib.glfs_free(xstat)


# ---------------------------------------------------------------------------------------------
# client-side translators and upcalls


def set_xlator_option(fs: int, xlator: str, key: str, value: str) -> None:
    """``glfs_set_xlator_option``: an option of the client graph's translators whose name
    matches the pattern ``xlator`` (``*-md-cache``); before :func:`init` only."""
    _check(
        load().glfs_set_xlator_option(
            _ptr(fs), _name(xlator.encode()), _name(key.encode()), _name(value.encode())
        )
    )


def upcall_register(fs: int, events: int, cbk: Any) -> None:
    """Have gfapi call ``cbk`` (an :data:`UPCALL_CBK`, which the caller keeps alive until
    :func:`upcall_unregister`) on its own threads for each upcall in ``events``. The
    callback owns its argument: it must :func:`free` it."""
    ret = load().glfs_upcall_register(_ptr(fs), events, ctypes.cast(cbk, ctypes.c_void_p), None)
    if ret <= 0:
        raise _error()


def upcall_unregister(fs: int, events: int) -> None:
    _check(load().glfs_upcall_unregister(_ptr(fs), events))


def upcall_inode_handles(up: int) -> tuple[int, list[bytes]]:
    """(reason, the gfids of the objects an inode-invalidation upcall names: the object, its
    parent and, for a rename, its old parent). No gfids for other reasons. Does not free
    ``up``."""
    lib = load()
    reason = int(lib.glfs_upcall_get_reason(_ptr(up)))
    if reason != UPCALL_INODE_INVALIDATE:
        return reason, []
    event = lib.glfs_upcall_get_event(up)
    if not event:
        return reason, []
    gfids = []
    for get in (
        lib.glfs_upcall_inode_get_object,
        lib.glfs_upcall_inode_get_pobject,
        lib.glfs_upcall_inode_get_oldpobject,
    ):
        obj = get(event)
        if obj:
            gfids.append(h_extract_handle(obj))
    return reason, gfids


def free(ptr: int) -> None:
    """``glfs_free``: release memory gfapi handed over (an upcall, with its objects)."""
    load().glfs_free(_ptr(ptr))
