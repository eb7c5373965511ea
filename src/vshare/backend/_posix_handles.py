"""The POSIX backend's handles: qid paths, the inode map's entries, nodes and open files.

The rules they keep (qid paths, Inodes, fds, point 6 of the security argument) are stated
in :mod:`vshare.backend.posix`, the module that makes them.
"""

from __future__ import annotations

import errno
import os
import threading
from typing import TYPE_CHECKING, Final

from vshare.backend._common import U64, BackendFile, BackendNode, err
from vshare.backend._handle import UseCounted

if TYPE_CHECKING:
    from vshare.backend.posix import PosixBackend

__all__ = [
    "CLOSED_REF",
    "Inode",
    "InodeKey",
    "InodeMap",
    "NodeRef",
    "PosixNode",
    "PosixOpenFile",
    "QidMap",
]

_INO_BITS: Final = 56
_INO_MASK: Final = (1 << _INO_BITS) - 1
_OVERFLOW_INDEX: Final = 255


class _ClosedRef:
    closed = True


CLOSED_REF: Final = _ClosedRef()  # what a node half-made (its __init__ failed) looks like


def _mix(a: int, b: int) -> int:
    """A deterministic 64-bit hash of two integers (splitmix64 finaliser)."""
    x = (a * 0x9E3779B97F4A7C15 + b) & U64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & U64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & U64
    return x ^ (x >> 31)


class QidMap:
    """``(st_dev, st_ino)`` → a 64-bit qid path; the rule is in :mod:`vshare.backend.posix`."""

    def __init__(self, root_dev: int) -> None:
        self._index: dict[tuple[int, int], int] = {(root_dev, 0): 0}
        self._used: set[int] = {0}
        self._lock = threading.Lock()

    def qid(self, dev: int, ino: int) -> int:
        key = (dev, ino >> _INO_BITS)
        index = self._index.get(key)
        if index is None:
            index = self._assign(key)
        if index == _OVERFLOW_INDEX:
            return _OVERFLOW_INDEX << _INO_BITS | (_mix(dev, ino) & _INO_MASK)
        return index << _INO_BITS | (ino & _INO_MASK)

    def _assign(self, key: tuple[int, int]) -> int:
        with self._lock:
            index = self._index.get(key)
            if index is not None:
                return index
            first = _mix(*key) % 254
            for step in range(254):
                candidate = 1 + (first + step) % 254
                if candidate not in self._used:
                    self._used.add(candidate)
                    break
            else:
                candidate = _OVERFLOW_INDEX
            self._index[key] = candidate
            return candidate


InodeKey = tuple[int, int, int]  # (st_dev, st_ino, mnt_id)


class Inode:
    """One object of the volume that nodes hold: its ``O_PATH | O_NOFOLLOW`` fd, shared by
    every node on it (see Inodes in :mod:`vshare.backend.posix`). ``refs`` counts those nodes; it
    changes only under the backend's inode lock."""

    __slots__ = ("dev", "file_type", "key", "qid_path", "ref", "refs")

    def __init__(self, key: InodeKey, fd: int, file_type: int, qid_path: int) -> None:
        self.key = key
        self.dev = key[0]
        self.ref = UseCounted(fd, os.close)
        self.file_type = file_type
        self.qid_path = qid_path
        self.refs = 1


class InodeMap:
    """The inodes that nodes hold, by ``(st_dev, st_ino, mnt_id)``, each with the count of
    its nodes (see Inodes in :mod:`vshare.backend.posix`). The lock is reentrant: a node
    dropped without close() may be collected, and release its inode, while this thread
    holds it."""

    def __init__(self) -> None:
        self._inodes: dict[InodeKey, Inode] = {}
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._inodes)

    def values(self) -> list[Inode]:
        with self._lock:
            return list(self._inodes.values())

    def hold(self, key: InodeKey, fd: int, file_type: int, qid_path: int) -> Inode:
        """One more reference on inode ``key``; ``fd`` (on that inode) is taken over: kept
        as the inode's fd, or closed when the map holds the inode already."""
        with self._lock:
            inode = self._inodes.get(key)
            if inode is None:
                inode = self._inodes[key] = Inode(key, fd, file_type, qid_path)
                fd = -1  # the inode's now
            else:
                inode.refs += 1
        if fd >= 0:
            os.close(fd)  # the inode was held already: its fd serves this node too
        return inode

    def share(self, node: PosixNode) -> Inode:
        """One more reference on the inode of ``node`` (no system call); EBADF if closed."""
        with self._lock:
            if node._ref.closed:
                raise err(errno.EBADF)
            node._inode.refs += 1
            return node._inode

    def release(self, node: PosixNode) -> None:
        """Close ``node``: one reference fewer on its inode, whose fd is closed with the
        last (once no call uses it any more)."""
        with self._lock:
            ref = node._ref
            if ref.closed:
                return
            ref.closed = True
            inode = node._inode
            inode.refs -= 1
            if inode.refs:
                return
            if self._inodes.get(inode.key) is inode:
                del self._inodes[inode.key]
        inode.ref.close()


class NodeRef:
    """How a node's fd is used: ``with node._ref as fd``. EBADF once the node is closed,
    even while other nodes still hold the inode; the fd itself is the inode's, which stays
    open until its last use ends (``UseCounted``)."""

    __slots__ = ("closed", "shared")

    def __init__(self, shared: UseCounted) -> None:
        self.closed = False
        self.shared = shared

    def __enter__(self) -> int:
        if self.closed:
            raise err(errno.EBADF)
        return self.shared.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.shared.__exit__(None, None, None)


class PosixNode(BackendNode):
    """A handle on one object of the volume: a reference to its shared ``O_PATH`` fd."""

    __slots__ = ("_inode",)

    _owner: PosixBackend
    _ref: NodeRef

    def __init__(self, owner: PosixBackend, inode: Inode) -> None:
        self._owner = owner
        self._inode = inode
        self._ref = NodeRef(inode.ref)

    @property
    def qid_path(self) -> int:
        return self._inode.qid_path

    @property
    def file_type(self) -> int:
        return self._inode.file_type

    @property
    def _dev(self) -> int:
        return self._inode.dev

    def close(self) -> None:
        self._owner._release(self)

    def __del__(self) -> None:  # dropped without close(): give the inode its reference back
        if not getattr(self, "_ref", CLOSED_REF).closed:
            try:
                self.close()
            except Exception:
                pass


class PosixOpenFile(BackendFile):
    """A real fd (not ``O_PATH``) on a regular file or a directory."""

    __slots__ = ("_append", "_dev", "_dir_lock", "_ref")

    _owner: PosixBackend

    def __init__(
        self, owner: PosixBackend, fd: int, *, is_dir: bool, dev: int, append: bool
    ) -> None:
        self._owner = owner
        self._ref = UseCounted(fd, os.close)
        self._is_dir = is_dir
        self._dev = dev
        self._append = append
        # readdir moves the fd's position: one listing at a time per open directory.
        self._dir_lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._ref.closed

    def close(self) -> None:
        self._ref.close()

    def __repr__(self) -> str:
        return f"<PosixOpenFile dir={self._is_dir} append={self._append}>"
