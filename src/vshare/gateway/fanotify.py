"""A typed ctypes binding of Linux fanotify, the few calls the change feed's host source
needs (``feed_watch.py``).

Why fanotify and not inotify: each event says which process made the change
(``pid``). The gateway's own changes are already told to the other sessions, from the
request that made them (``feed.describe``); telling them again from the host source made
every subscriber — the session that made the change too — invalidate and ask again what
it had just written (a coherent mount created files at half of ``always``'s pace). With the
pid, the host source reports exactly what other processes did: no matching of events
against requests, no window in which a host change could be taken for an echo.

The group reports directory handles and names (``FAN_REPORT_DFID_NAME``, Linux 5.9;
unprivileged since 5.13): a directory is known by its handle (:func:`handle_key`, taken
when the feed marks it), an event on a name in it comes with that handle and the name, an
event on a directory itself with the directory's own handle and ``"."``. Marks are added
through a path the caller chooses: the feed passes ``/proc/self/fd/N`` of a directory it
opened itself without following symlinks (see ``feed_watch.py`` for the security
argument).
"""

from __future__ import annotations

import ctypes
import os
import struct
from typing import Final, NamedTuple

FAN_MODIFY: Final = 0x00000002
FAN_ATTRIB: Final = 0x00000004
FAN_CLOSE_WRITE: Final = 0x00000008
FAN_MOVED_FROM: Final = 0x00000040
FAN_MOVED_TO: Final = 0x00000080
FAN_CREATE: Final = 0x00000100
FAN_DELETE: Final = 0x00000200
FAN_Q_OVERFLOW: Final = 0x00004000
FAN_EVENT_ON_CHILD: Final = 0x08000000
FAN_ONDIR: Final = 0x40000000

FAN_CLOEXEC: Final = 0x00000001
FAN_NONBLOCK: Final = 0x00000002
FAN_CLASS_NOTIF: Final = 0x00000000
FAN_REPORT_DFID_NAME: Final = 0x00000C00

FAN_MARK_ADD: Final = 0x00000001
FAN_MARK_REMOVE: Final = 0x00000002
FAN_MARK_ONLYDIR: Final = 0x00000008

#: event_len, vers, reserved, metadata_len, mask, fd, pid
_METADATA: Final = struct.Struct("=IBBHQii")
_METADATA_VERSION: Final = 3
_INFO_HEADER: Final = struct.Struct("=BBH")  # info_type, pad, len
_INFO_DFID_NAME: Final = 2
_INFO_DFID: Final = 3
_FSID_AND_HANDLE: Final = struct.Struct("=8sIi")  # fsid, handle_bytes, handle_type
_MAX_HANDLE: Final = 128  # MAX_HANDLE_SZ
_AT_EMPTY_PATH: Final = 0x1000
_FSID_OFFSET: Final = 56  # of f_fsid in struct statfs on 64-bit Linux (x86-64, arm64)

_libc = ctypes.CDLL(None, use_errno=True)
_init = _libc.fanotify_init
_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_init.restype = ctypes.c_int
_mark = _libc.fanotify_mark
_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
_mark.restype = ctypes.c_int
_name_to_handle_at = _libc.name_to_handle_at
_name_to_handle_at.argtypes = [
    ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int,
]  # fmt: skip
_name_to_handle_at.restype = ctypes.c_int
_fstatfs = _libc.fstatfs
_fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]
_fstatfs.restype = ctypes.c_int


class Event(NamedTuple):
    """One event: what happened (``mask``), by which process (``pid``; 0 when the
    kernel does not say), to ``name`` in the directory known by ``key`` (``"."``: the
    directory itself). ``key`` is empty for an event without a directory (an overflow)."""

    mask: int
    pid: int
    key: bytes
    name: bytes


def _check(result: int) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def init() -> int:
    """A new fanotify group reporting directory handles and names: a non-blocking,
    close-on-exec fd the caller owns (EPERM, EINVAL or ENOSYS where the kernel cannot)."""
    return _check(_init(FAN_CLASS_NOTIF | FAN_REPORT_DFID_NAME | FAN_NONBLOCK | FAN_CLOEXEC,
                        os.O_RDONLY | os.O_CLOEXEC))  # fmt: skip


def mark(group: int, path: bytes, mask: int) -> None:
    """Watch the directory ``path`` and the names in it for ``mask`` (ENOSPC past the
    host's ``max_user_marks``)."""
    _check(_mark(group, FAN_MARK_ADD | FAN_MARK_ONLYDIR, mask, -100, path))  # AT_FDCWD


def unmark(group: int, path: bytes, mask: int) -> None:
    """Stop watching; ENOENT (no mark there any more) is not an error here."""
    if _mark(group, FAN_MARK_REMOVE, mask, -100, path) < 0 and ctypes.get_errno() != 2:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def handle_key(fd: int) -> bytes:
    """What events name the directory open at ``fd`` (``O_PATH`` will do) by: its
    filesystem id and file handle, as the kernel packs them in an event."""
    buf = ctypes.create_string_buffer(8 + _MAX_HANDLE)
    struct.pack_into("=Ii", buf, 0, _MAX_HANDLE, 0)
    mount_id = ctypes.c_int()
    _check(_name_to_handle_at(fd, b"", buf, ctypes.byref(mount_id), _AT_EMPTY_PATH))
    size, kind = struct.unpack_from("=Ii", buf, 0)
    statfs = ctypes.create_string_buffer(120)
    _check(_fstatfs(fd, statfs))
    fsid = statfs.raw[_FSID_OFFSET : _FSID_OFFSET + 8]
    return _FSID_AND_HANDLE.pack(fsid, size, kind) + buf.raw[8 : 8 + size]


def parse(buf: bytes) -> list[Event]:
    """The events in what one ``read`` of the group returned (whole events only: the
    kernel never splits one)."""
    out: list[Event] = []
    pos, end = 0, len(buf)
    while pos + _METADATA.size <= end:
        length, version, _, meta_len, mask, fd, pid = _METADATA.unpack_from(buf, pos)
        if version != _METADATA_VERSION or length < meta_len:
            raise OSError(0, f"fanotify: event version {version} of length {length}")
        if fd >= 0:  # a group reporting handles gets none; close one should it come
            os.close(fd)
        key, name = b"", b""
        info, stop = pos + meta_len, pos + length
        while info + _INFO_HEADER.size <= stop:
            kind, _, info_len = _INFO_HEADER.unpack_from(buf, info)
            if info_len < _INFO_HEADER.size:
                break
            if kind in (_INFO_DFID_NAME, _INFO_DFID) and not key:
                start = info + _INFO_HEADER.size
                _, size, _ = _FSID_AND_HANDLE.unpack_from(buf, start)
                handle_end = start + _FSID_AND_HANDLE.size + size
                key = bytes(buf[start:handle_end])
                if kind == _INFO_DFID_NAME:
                    name = bytes(buf[handle_end : info + info_len]).split(b"\0", 1)[0]
            info += info_len
        out.append(Event(mask, pid, key, name))
        pos += length
    return out
