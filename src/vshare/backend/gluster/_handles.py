"""The GlusterFS backend's handles: gfapi pointers that outlive no call using them
(:class:`Ref`), nodes (a ``glfs_object``) and open files (a ``glfs_fd``, possibly deferred).
Point 7 of the package note is kept here."""

from __future__ import annotations

import errno
import stat
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from vshare.backend import _gfapi
from vshare.backend._common import BackendFile, BackendNode, err
from vshare.backend._handle import UseCounted
from vshare.backend.gluster._fields import qid_of_gfid
from vshare.terms import CacheMode

if TYPE_CHECKING:
    from vshare.backend.gluster._core import GlusterCore

__all__ = ["GlusterNode", "GlusterOpenFile", "Ref"]


class Ref(UseCounted):
    """A gfapi pointer that is not released while a call uses it (see :class:`UseCounted`);
    a release error is dropped (the pointer is gone either way: the package note on close),
    and :meth:`wait_freed` tells when the release happened."""

    __slots__ = ("_freed",)

    def __init__(self, ptr: int, release: Callable[[int], None]) -> None:
        super().__init__(ptr, release)
        self._freed = threading.Event()

    def _free(self) -> None:
        try:
            self._release(self._handle)
        except OSError:
            pass  # the pointer is gone either way (see the package note on close)
        finally:
            self._freed.set()

    def wait_freed(self, timeout: float) -> bool:
        """Whether the pointer was released within ``timeout`` seconds (after close())."""
        return self._freed.wait(timeout)


class GlusterNode(BackendNode):
    """A ``glfs_object`` on one object of the volume."""

    __slots__ = ("_cache", "_file_type", "_qid_path")

    _owner: GlusterCore
    _ref: Ref

    def __init__(
        self, owner: GlusterCore, obj: int, st: _gfapi.Stat, cache: CacheMode = "none"
    ) -> None:
        self._owner = owner
        self._cache = cache
        self._ref = owner._track(obj, _gfapi.h_close)
        self._file_type = stat.S_IFMT(st.st_mode)
        try:
            self._qid_path = qid_of_gfid(_gfapi.h_extract_handle(obj))
        except BaseException:
            self._ref.close()
            raise

    @property
    def qid_path(self) -> int:
        return self._qid_path

    @property
    def file_type(self) -> int:
        return self._file_type

    def close(self) -> None:
        self._ref.close()


class GlusterOpenFile(BackendFile):
    """A ``glfs_fd`` on a regular file or a directory.

    A *deferred* open (``fd`` None, ``deferred`` = (a node of the file, the open flags)) makes
    the ``glfs_fd`` at its first use: a read-only open of a share in cache mode ``all``, whose
    reads the data cache may answer entirely, costs no OPEN and FLUSH at the brick then."""

    __slots__ = (
        "__weakref__",
        "_accmode",
        "_cache_data",
        "_closed",
        "_deferred",
        "_dir_lock",
        "_dirent",
        "_dirstat",
        "_fd",
        "_listings",
        "_open_lock",
        "_qid",
        "_read_unopened",
    )

    _owner: GlusterCore

    def __init__(
        self,
        owner: GlusterCore,
        fd: int | None,
        qid: int,
        *,
        is_dir: bool,
        accmode: int,
        cache_data: bool = False,
        deferred: tuple[GlusterNode, int] | None = None,
        listings: bool = False,
    ) -> None:
        self._owner = owner
        #: A directory whose listings the volume's cache may hold (cache modes meta, all).
        self._listings = listings
        self._cache_data = cache_data  # reads may be answered from the volume's data cache
        self._closed = False
        self._deferred = deferred
        #: Reads may go without an open (see :meth:`unopened`).
        self._read_unopened = deferred is not None and not is_dir
        self._open_lock = threading.Lock()
        self._fd: Ref | None = None
        if fd is not None:
            self._fd = owner._track(fd, _gfapi.closedir if is_dir else _gfapi.close)
        self._qid = qid
        self._is_dir = is_dir
        self._accmode = accmode
        # readdir moves the fd's position: one listing at a time per open directory.
        self._dir_lock = threading.Lock()
        self._dirent = _gfapi.Dirent() if is_dir else None
        self._dirstat = _gfapi.Stat() if is_dir else None

    @property
    def _ref(self) -> Ref:
        """The ``glfs_fd``, opened now if the open was deferred (its errors are the open's:
        another client may have removed the file meanwhile)."""
        ref = self._fd
        if ref is not None:
            return ref
        with self._open_lock:
            if self._fd is None:
                if self._closed or self._deferred is None:
                    raise err(errno.EBADF)
                node, flags = self._deferred
                if self._is_dir:
                    fd = self._owner._opendir(node)
                else:
                    with node._ref as obj:
                        fd = _gfapi.h_open(self._owner._fs, obj, flags)
                self._fd = self._owner._track(fd, _gfapi.closedir if self._is_dir else _gfapi.close)
                self._deferred = None
                node.close()
            return self._fd

    def unopened(self) -> GlusterNode | None:
        """The node of this file while its open is put off and reads may go without it
        (:meth:`GlusterCore._pread`): a regular file not yet opened, nor closed, whose
        reads so far each reached its end. None otherwise."""
        with self._open_lock:
            if self._fd is None and self._deferred is not None and self._read_unopened:
                return self._deferred[0]
            return None

    @property
    def closed(self) -> bool:
        return self._closed

    def read_left_more(self) -> None:
        """A read without an open stopped short of the end: the next read opens the file
        (a reader going on holds it open, as open-behind's read-after-open does)."""
        with self._open_lock:
            self._read_unopened = False

    def close(self) -> None:
        with self._open_lock:
            self._closed = True
            ref, deferred = self._fd, self._deferred
            self._deferred = None
        if ref is not None:
            ref.close()
        if deferred is not None:
            deferred[0].close()

    def __repr__(self) -> str:
        return f"<GlusterOpenFile dir={self._is_dir} mode={self._accmode}>"
