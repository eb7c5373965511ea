"""Fids: what a client's numbers stand for in one session.

A fid holds a backend :class:`~vshare.backend.base.Node` (an inode handle, not a path),
possibly an :class:`~vshare.backend.base.OpenFile`, and the :class:`Attachment` it was
reached through — which share, at which access level. ``path`` records the names walked
from the share root; it is used only to answer ``..`` and Tremove/Trename (which 9P
addresses by fid, the backend by parent and name), always by walking again from the share
root, one checked component at a time.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field

from vshare.backend.base import Backend, Node, OpenFile
from vshare.gateway.config import Share
from vshare.gateway.quota import ShareUsage
from vshare.gateway.workers import ShareWorkers
from vshare.policy import Level
from vshare.protocol import QTDIR, QTFILE, QTSYMLINK, Qid


def qid_of(file_type: int, qid_path: int) -> Qid:
    if file_type == stat.S_IFDIR:
        return Qid(QTDIR, 0, qid_path)
    if file_type == stat.S_IFLNK:
        return Qid(QTSYMLINK, 0, qid_path)
    return Qid(QTFILE, 0, qid_path)


def node_qid(node: Node) -> Qid:
    return qid_of(node.file_type, node.qid_path)


@dataclass(eq=False, slots=True)
class Attachment:
    """One successful Tattach: a share, the level policy granted, the share root's node."""

    share: Share  # replaced when the share's rules or size change (live enforcement)
    level: Level  # likewise: an rw→ro change applies to the next write
    root: Node
    limiter: ShareWorkers  # the share's bound on backend calls in flight, and its threads
    usage: ShareUsage
    #: Tattach's ``n_uname`` (None when the guest sent none, 0xFFFFFFFF): in ``passthrough``
    #: ownership, the owner of everything created through this attachment's fids, as the
    #: Linux client's ``access=user`` expects (one attach per guest user). Never an input to
    #: access decisions.
    uid: int | None = None
    refs: int = 0  # fids that use it

    @property
    def writable(self) -> bool:
        return self.level is Level.RW and not self.share.readonly


@dataclass(slots=True)
class XattrWrite:
    """A fid turned into an extended-attribute write by Txattrcreate."""

    name: str
    size: int
    flags: int
    data: bytearray = field(default_factory=bytearray)


@dataclass(eq=False, slots=True)
class Fid:
    att: Attachment
    node: Node
    path: tuple[str, ...]
    file: OpenFile | None = None
    flags: int = 0  # os.O_* flags it was opened with
    xattr_data: bytes | None = None  # after Txattrwalk: the value (or the name list)
    xattr_write: XattrWrite | None = None

    @property
    def is_open(self) -> bool:
        return self.file is not None or self.xattr_data is not None or self.xattr_write is not None

    def close(self) -> None:
        """Release backend handles (blocking: call from a worker thread)."""
        if self.file is not None:
            self.file.close()
            self.file = None
        self.node.close()


def walk_from_root(backend: Backend, att: Attachment, path: tuple[str, ...]) -> Node:
    """A fresh node for ``path`` below the share root, one component at a time."""
    node = backend.clone(att.root)
    try:
        for name in path:
            child = backend.lookup(node, name)
            node.close()
            node = child
    except BaseException:
        node.close()
        raise
    return node
