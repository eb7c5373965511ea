"""What the POSIX and GlusterFS backends share: argument checks, errnos, the handle bases.

Both backends answer the guest with the same errnos for the same mistakes (the table in
:mod:`vshare.backend.posix`); each check that decides one of those errnos before the storage
is asked lives here, once, so the two cannot drift apart. Where they had drifted, both now
do the stricter thing: a name longer than ``NAME_MAX`` bytes is ENAMETOOLONG before any
call is made, and a string no byte string encodes (a lone surrogate) is EINVAL.
"""

from __future__ import annotations

import abc
import errno
import functools
import os
import stat
from collections.abc import Callable
from typing import Final, Generic, NamedTuple, ParamSpec, Protocol, TypeVar

from vshare.backend.base import Backend, DirEntry, Listing, Node, OpenFile, check_name

__all__ = [
    "I64_MAX",
    "IO_FLAGS_KEPT",
    "NAME_MAX",
    "NS",
    "U64",
    "AttrChange",
    "BackendFile",
    "BackendNode",
    "CheckedBackend",
    "check_link_target",
    "check_offset",
    "check_open",
    "check_readlink",
    "check_setattr",
    "check_xattr_flags",
    "decode",
    "einval_on_value_error",
    "err",
    "mknod_kind",
    "name_bytes",
    "owned",
    "owner_id",
    "readdir_position",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: The open flags a backend keeps (the rest are dropped: the module notes on Opening).
IO_FLAGS_KEPT: Final = os.O_ACCMODE | os.O_APPEND | os.O_TRUNC | os.O_DSYNC | os.O_SYNC
#: The longest name, in bytes, of one path component (Linux's NAME_MAX).
NAME_MAX: Final = 255
U64: Final = (1 << 64) - 1
I64_MAX: Final = (1 << 63) - 1
NS: Final = 1_000_000_000


def err(code: int) -> OSError:
    """The OSError of ``code`` with its standard message."""
    return OSError(code, os.strerror(code))


def einval_on_value_error(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn ValueError/OverflowError/UnicodeError (NUL in a string, a lone surrogate, a
    number out of range) into EINVAL."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except (ValueError, OverflowError, UnicodeError) as e:
            raise err(errno.EINVAL) from e

    return wrapper


def name_bytes(name: str) -> bytes:
    """One path component (:func:`~vshare.backend.base.check_name`) as bytes.

    Raises:
        OSError(EINVAL): not one component, or a lone surrogate no byte string encodes.
        OSError(ENAMETOOLONG): longer than :data:`NAME_MAX` bytes.
    """
    check_name(name)
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeError as e:
        raise err(errno.EINVAL) from e
    if len(raw) > NAME_MAX:
        raise err(errno.ENAMETOOLONG)
    return raw


def decode(raw: bytes) -> str:
    """A name from the storage: bytes that are not UTF-8 round-trip as surrogate escapes."""
    return raw.decode("utf-8", "surrogateescape")


def owner_id(ident: int | None) -> int:
    """A uid/gid: -1 (unchanged) for None; EINVAL if not a valid id."""
    if ident is None:
        return -1
    if not 0 <= ident < 0xFFFFFFFF:
        raise err(errno.EINVAL)
    return ident


def check_offset(offset: int) -> None:
    """EINVAL unless ``offset`` is a file offset (0 to 2**63-1)."""
    if not 0 <= offset <= I64_MAX:
        raise err(errno.EINVAL)


def check_open(file_type: int, flags: int) -> tuple[bool, int]:
    """Whether an object of ``file_type`` may be opened with ``flags``: (is it a
    directory, the access mode). ELOOP for a symlink, EPERM for anything but a regular file
    or a directory, EINVAL for access mode 3, ENOTDIR for O_DIRECTORY on a non-directory."""
    if file_type == stat.S_IFLNK:
        raise err(errno.ELOOP)
    if file_type not in (stat.S_IFREG, stat.S_IFDIR):
        raise err(errno.EPERM)
    accmode = flags & os.O_ACCMODE
    if accmode == os.O_ACCMODE:
        raise err(errno.EINVAL)
    is_dir = file_type == stat.S_IFDIR
    if flags & os.O_DIRECTORY and not is_dir:
        raise err(errno.ENOTDIR)
    return is_dir, accmode


def check_setattr(file_type: int, mode: int | None, size: int | None) -> None:
    """The errnos of a setattr that no storage is asked for (the table in posix.py)."""
    if mode is not None:
        if not 0 <= mode <= 0o7777:
            raise err(errno.EINVAL)
        if file_type == stat.S_IFLNK:
            raise err(errno.EOPNOTSUPP)  # Linux has no symlink modes
    if size is not None:
        check_offset(size)
        if file_type == stat.S_IFDIR:
            raise err(errno.EISDIR)
        if file_type != stat.S_IFREG:
            raise err(errno.EINVAL)


def mknod_kind(mode: int) -> int:
    """The S_IFMT of a mknod: FIFOs and sockets only (EPERM for devices, EINVAL else)."""
    kind = stat.S_IFMT(mode)
    if kind in (stat.S_IFCHR, stat.S_IFBLK):
        raise err(errno.EPERM)  # never device nodes, whoever asks
    if kind not in (stat.S_IFIFO, stat.S_IFSOCK):
        raise err(errno.EINVAL)  # regular files: create(); directories: mkdir()
    return kind


def check_link_target(file_type: int) -> None:
    """EPERM for a hard link to a directory."""
    if file_type == stat.S_IFDIR:
        raise err(errno.EPERM)


def check_readlink(file_type: int) -> None:
    """EINVAL for readlink of a non-symlink."""
    if file_type != stat.S_IFLNK:
        raise err(errno.EINVAL)


def check_xattr_flags(flags: int) -> None:
    """EINVAL unless ``flags`` is 0, XATTR_CREATE or XATTR_REPLACE."""
    if flags not in (0, os.XATTR_CREATE, os.XATTR_REPLACE):
        raise err(errno.EINVAL)


def readdir_position(cookie: int, max_entries: int) -> int:
    """The signed directory offset (``loff_t``) of a cookie, which is that offset seen as
    an unsigned 64-bit number; EINVAL for a cookie out of range or ``max_entries < 1``."""
    if max_entries < 1 or not 0 <= cookie <= U64:
        raise err(errno.EINVAL)
    return cookie - (1 << 64) if cookie > I64_MAX else cookie


class _Closable(Protocol):
    @property
    def closed(self) -> bool: ...


class BackendNode(Node):
    """A node that belongs to one backend (``_owner``) and uses its handle through
    ``_ref`` (``with node._ref as handle``), which says whether it is closed."""

    __slots__ = ("_owner", "_ref")

    _owner: Backend
    _ref: _Closable

    @property
    def closed(self) -> bool:
        return self._ref.closed

    def __repr__(self) -> str:
        return f"<{type(self).__name__} qid={self.qid_path:#x} type={self.file_type:#o}>"


class BackendFile(OpenFile):
    """An open file that belongs to one backend (``_owner``): a regular file or, if
    ``_is_dir``, a directory."""

    __slots__ = ("_is_dir", "_owner")

    _owner: Backend
    _is_dir: bool


_Handle = TypeVar("_Handle", bound=BackendNode | BackendFile)


def owned(backend: Backend, handle: object, kind: type[_Handle]) -> _Handle:
    """``handle`` if it is a ``kind`` of ``backend``; TypeError otherwise (a gateway bug:
    a handle of another volume must never reach a call, point 7 of posix.py's note)."""
    if not isinstance(handle, kind) or handle._owner is not backend:
        raise TypeError(f"{handle!r} is not a handle of {backend!r}")
    return handle


class AttrChange(NamedTuple):
    """What a :meth:`~vshare.backend.base.Backend.setattr` changes: what is not None."""

    mode: int | None
    uid: int | None
    gid: int | None
    size: int | None
    atime_ns: int | None
    mtime_ns: int | None


_N = TypeVar("_N", bound=BackendNode)
_F = TypeVar("_F", bound=BackendFile)


class CheckedBackend(Backend, Generic[_N, _F]):
    """The operations whose checks both backends share: each resolves its handles to the
    backend's own types (TypeError for another backend's), checks its names and numbers
    (the errnos of posix.py's table), then calls the ``_``-prefixed hook of the same name,
    which does the work. ValueError/OverflowError/UnicodeError in a hook is EINVAL too."""

    @abc.abstractmethod
    def _node(self, node: Node) -> _N:
        """``node``, if it is one of this backend's (TypeError otherwise)."""

    @abc.abstractmethod
    def _file(self, file: OpenFile) -> _F:
        """``file``, if it is one of this backend's (TypeError otherwise)."""

    def _parent(self, node: Node) -> _N:
        """The directory of a name operation (a backend may refuse a non-directory here)."""
        return self._node(node)

    @einval_on_value_error
    def lookup(self, parent: Node, name: str) -> Node:
        return self._lookup(self._parent(parent), name_bytes(name))

    @einval_on_value_error
    def setattr(
        self,
        node: Node,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
    ) -> None:
        n = self._node(node)
        check_setattr(n.file_type, mode, size)
        self._setattr(n, AttrChange(mode, uid, gid, size, atime_ns, mtime_ns))

    @einval_on_value_error
    def open(self, node: Node, flags: int) -> OpenFile:
        n = self._node(node)
        is_dir, accmode = check_open(n.file_type, flags)
        return self._open(n, flags, is_dir=is_dir, accmode=accmode)

    @einval_on_value_error
    def readdir(self, file: OpenFile, cookie: int, max_entries: int) -> Listing[DirEntry]:
        f = self._file(file)
        if not f._is_dir:
            raise err(errno.ENOTDIR)
        return self._readdir(f, readdir_position(cookie, max_entries), max_entries)

    @einval_on_value_error
    def fallocate(
        self,
        file: OpenFile,
        offset: int,
        length: int,
        *,
        keep_size: bool = False,
        punch_hole: bool = False,
        zero_range: bool = False,
    ) -> None:
        f = self._file(file)
        if f._is_dir:
            raise err(errno.EISDIR)
        if punch_hole and (zero_range or not keep_size):  # as Linux's vfs_fallocate
            raise err(errno.EOPNOTSUPP)
        if offset < 0 or length <= 0:
            raise err(errno.EINVAL)
        if offset + length > I64_MAX:
            raise err(errno.EFBIG)
        self._fallocate(f, offset, length, keep_size, punch_hole, zero_range)

    @abc.abstractmethod
    def _fallocate(
        self, f: _F, offset: int, length: int, keep_size: bool, punch_hole: bool, zero_range: bool
    ) -> None: ...

    @einval_on_value_error
    def mkdir(self, parent: Node, name: str, mode: int) -> Node:
        return self._mkdir(self._parent(parent), name_bytes(name), mode & 0o7777)

    @einval_on_value_error
    def symlink(self, parent: Node, name: str, target: str) -> Node:
        p = self._parent(parent)
        raw = name_bytes(name)
        raw_target = target.encode("utf-8", "surrogateescape")
        if not raw_target:
            raise err(errno.ENOENT)  # as symlink(2)
        return self._symlink(p, raw, raw_target)

    @einval_on_value_error
    def mknod(self, parent: Node, name: str, mode: int, rdev: int) -> Node:
        p = self._parent(parent)
        raw = name_bytes(name)
        return self._mknod(p, raw, mknod_kind(mode) | (mode & 0o7777))

    def readlink(self, node: Node) -> str:
        n = self._node(node)
        check_readlink(n.file_type)
        return self._readlink(n)

    @einval_on_value_error
    def link(self, parent: Node, name: str, target: Node) -> None:
        p = self._parent(parent)
        t = self._node(target)
        raw = name_bytes(name)
        check_link_target(t.file_type)
        self._link(p, raw, t)

    @einval_on_value_error
    def rename(self, old_parent: Node, old_name: str, new_parent: Node, new_name: str) -> None:
        old_dir = self._parent(old_parent)
        new_dir = self._parent(new_parent)
        self._rename(old_dir, name_bytes(old_name), new_dir, name_bytes(new_name))

    @einval_on_value_error
    def unlink(self, parent: Node, name: str, *, rmdir: bool) -> None:
        self._unlink(self._parent(parent), name_bytes(name), rmdir=rmdir)

    # -- the hooks: arguments checked, handles this backend's ------------------------------------

    @abc.abstractmethod
    def _lookup(self, parent: _N, raw: bytes) -> _N: ...

    @abc.abstractmethod
    def _setattr(self, n: _N, change: AttrChange) -> None:
        """Apply owner, then mode, then size, then times (not atomic: module notes)."""

    @abc.abstractmethod
    def _open(self, n: _N, flags: int, *, is_dir: bool, accmode: int) -> OpenFile: ...

    @abc.abstractmethod
    def _readdir(self, f: _F, position: int, max_entries: int) -> Listing[DirEntry]:
        """Entries after the signed directory offset ``position``, and whether they reach
        the directory's end (:class:`~vshare.backend.base.Listing`)."""

    @abc.abstractmethod
    def _mkdir(self, parent: _N, raw: bytes, perms: int) -> _N: ...

    @abc.abstractmethod
    def _symlink(self, parent: _N, raw: bytes, target: bytes) -> _N: ...

    @abc.abstractmethod
    def _mknod(self, parent: _N, raw: bytes, mode: int) -> _N:
        """``mode``: a FIFO's or a socket's type and permission bits."""

    @abc.abstractmethod
    def _readlink(self, n: _N) -> str: ...

    @abc.abstractmethod
    def _link(self, parent: _N, raw: bytes, target: _N) -> None: ...

    @abc.abstractmethod
    def _rename(self, old_dir: _N, old_raw: bytes, new_dir: _N, new_raw: bytes) -> None: ...

    @abc.abstractmethod
    def _unlink(self, parent: _N, raw: bytes, *, rmdir: bool) -> None: ...
