"""What the POSIX and GlusterFS backends share: argument checks, errnos, the handle bases.

Both backends answer the guest with the same errnos for the same mistakes (the table in
:mod:`vshare.backend.posix`); each check that decides one of those errnos before the storage
is asked lives here, once, so the two cannot drift apart. Where they had drifted, both now
do the stricter thing: a name longer than ``NAME_MAX`` bytes is ENAMETOOLONG before any
call is made, and a string no byte string encodes (a lone surrogate) is EINVAL.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, ParamSpec, Protocol, TypeVar

from vshare.backend.base import Node, OpenFile, check_name

if TYPE_CHECKING:
    from vshare.backend.base import Backend

__all__ = [
    "I64_MAX",
    "IO_FLAGS_KEPT",
    "NAME_MAX",
    "NS",
    "U64",
    "BackendFile",
    "BackendNode",
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
    """An open file that belongs to one backend (``_owner``)."""

    __slots__ = ("_owner",)

    _owner: Backend


_Handle = TypeVar("_Handle", bound=BackendNode | BackendFile)


def owned(backend: Backend, handle: object, kind: type[_Handle]) -> _Handle:
    """``handle`` if it is a ``kind`` of ``backend``; TypeError otherwise (a gateway bug:
    a handle of another volume must never reach a call, point 7 of posix.py's note)."""
    if not isinstance(handle, kind) or handle._owner is not backend:
        raise TypeError(f"{handle!r} is not a handle of {backend!r}")
    return handle
