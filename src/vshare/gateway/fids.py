"""Fids: what a client's numbers stand for in one session.

A fid holds a backend :class:`~vshare.backend.base.Node` (an inode handle, not a path),
possibly an :class:`~vshare.backend.base.OpenFile`, and the :class:`Attachment` it was
reached through — which share, at which access level — and its place in the share: the
:class:`Link` of the directory it was walked from (``up``) and the name it was walked by
(``name``); both None at the share root. Links answer ``..`` and Tremove/Trename (which 9P
addresses by fid, the backend by parent and name) in constant time, whatever the depth.

Why ``..`` by lineage stays in the share
----------------------------------------
A link holds the node of a directory the client walked *through*, one checked lookup at a
time from the share root, and the link of the directory it was walked from in turn; the
chain ends at the attachment's root link, whose ``..`` is the root itself. So ``..`` only
ever yields a node that the client reached by walking down from the share root, and could
have kept a fid on at the time: it grants nothing a client could not already hold.

The path re-walk it replaces (``..`` = walk the names again from the root) answered with
whatever the remembered path names *now*. The two differ only when a directory on the way
was renamed or moved since the walk: the re-walk gave the directory now at the old path
(another directory, or ENOENT), the lineage gives the directory the fid came through. If
the host moved that directory out of the share, ``..`` leads to it outside the share —
as a fid kept on it would; it never leads above it, nor to anything never walked through.
Tremove/Trename act on the name in the directory the fid came through, after checking the
name still names the fid's inode (ESTALE otherwise), as before.

Links are shared: a fid's own link (``here``) is made at its first walk down and shared
by every walk from it; an intermediate directory of a walk of several names gets a link
holding the node the walk looked up (no clone). A link lives while a fid or a link below
it holds it, and is charged to the session's fid budget: it may hold an fd. On the event
loop a chain is let go of ``RELEASE_STEP`` links at a time (:func:`releasing_in_steps`):
the last fid on the bottom of a chain 5,000 deep frees 5,000 links.
"""

from __future__ import annotations

import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Final

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


#: Guards every link's count: links are taken on the event loop and in worker threads.
_refs = threading.Lock()


class Link:
    """A directory a fid was walked from: its node, the name it was itself walked by in
    ``up``'s directory, and ``up`` (None for the share root's link). Counted: fids and
    links below hold it; the last release closes the node."""

    __slots__ = ("name", "node", "refs", "root", "up")

    def __init__(self, node: Node, name: str | None, up: Link | None, *, root: bool = False):
        self.node = node
        self.name = name
        self.up = up  # the reference to it is this link's
        self.refs = 1
        self.root = root  # the attachment's: neither counted nor closed here


def hold(link: Link | None) -> Link | None:
    """One more reference to ``link`` (for a fid or a link that keeps it)."""
    if link is not None and not link.root:
        with _refs:
            link.refs += 1
    return link


#: The links freed by one :func:`release` on the event loop before the rest is put off: a
#: link costs ~10 µs to close and free, and a fid may hold a chain of thousands (one
#: session's end let go of 5,000 in one step: 40-60 ms with every tenant waiting).
RELEASE_STEP: Final = 32


class OnLoop:
    """What work done on the event loop carries (the ``INLINE`` context variable): where
    :func:`release` puts the link it stops at once it has freed ``RELEASE_STEP``, with the
    reference it was to drop, for the session to let go of in steps of its own
    (:meth:`OperationsBase.let_go_of_put_off`)."""

    __slots__ = ("put_off",)

    def __init__(self, put_off: list[Link]) -> None:
        self.put_off = put_off


#: Set while a session does a request's backend work on its event loop (see
#: :meth:`Operations.inline`): backend calls then run where they are, without a worker
#: thread, and :func:`release` frees a bounded number of links. A context variable, not an
#: attribute, so a request task that happens to run meanwhile keeps its own setting. Unset
#: (None) in worker threads, which free a whole chain.
INLINE: ContextVar[OnLoop | None] = ContextVar("vshare_inline", default=None)


@contextmanager
def releasing_in_steps(on_loop: OnLoop) -> Iterator[None]:
    """Within (on the loop): :func:`release` frees at most ``RELEASE_STEP`` links, the
    rest goes to ``on_loop.put_off``."""
    token = INLINE.set(on_loop)
    try:
        yield
    finally:
        INLINE.reset(token)


def release(link: Link | None) -> int:
    """Drop one reference to ``link``, and each link above it whose last reference that
    was (in a loop: a chain may be thousands deep). Closes their nodes (blocking: call
    from a worker thread, or on the loop within :func:`releasing_in_steps`, which bounds
    the links freed here). Returns how many links were freed (given back to the budget)."""
    freed = 0
    on_loop = INLINE.get()
    put_off = on_loop.put_off if on_loop is not None else None
    while link is not None and not link.root:
        if put_off is not None and freed >= RELEASE_STEP:
            put_off.append(link)  # with the reference this call was to drop
            break
        with _refs:
            link.refs -= 1
            if link.refs:
                break
        link.node.close()
        freed += 1
        link = link.up
    return freed


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
    #: The root's link, the top of every lineage of this attachment (its node is ``root``,
    #: closed with the attachment, not by links).
    link: Link = field(init=False)

    def __post_init__(self) -> None:
        self.link = Link(self.root, None, None, root=True)

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
    up: Link | None = None  # the directory it was walked from; None at the share root
    name: str | None = None  # the name it was walked by there
    file: OpenFile | None = None
    flags: int = 0  # os.O_* flags it was opened with
    xattr_data: bytes | None = None  # after Txattrwalk: the value (or the name list)
    xattr_write: XattrWrite | None = None
    here: Link | None = None  # this fid's own place as a link, once something walked down
    #: The cookie after which its last listing reached the directory's end: Treaddir (which
    #: has no end flag) asks once more from there, and is answered empty from this.
    listing_end: int | None = None

    @property
    def at_root(self) -> bool:
        return self.up is None

    @property
    def is_open(self) -> bool:
        return self.file is not None or self.xattr_data is not None or self.xattr_write is not None

    def close(self) -> int:
        """Release backend handles (blocking: call from a worker thread). Returns the links
        freed."""
        if self.file is not None:
            self.file.close()
            self.file = None
        self.node.close()
        return self.leave()

    def leave(self) -> int:
        """Drop the fid's links (its place is about to change, or it is closed)."""
        here, up = self.here, self.up
        self.here = self.up = None
        return release(here) + release(up)

    def link_here(self, backend: Backend) -> tuple[Link, int]:
        """A reference to the fid's own place as a link (for something walked from it or
        created in it), and how many links that made (0 or 1)."""
        if self.up is None:
            return self.att.link, 0
        with _refs:
            here = self.here
            if here is not None:
                here.refs += 1
                return here, 0
        new_link = Link(backend.clone(self.node), self.name, hold(self.up))
        with _refs:
            here = self.here
            if here is None:  # another walk from this fid may have made it meanwhile
                self.here = new_link
                new_link.refs += 1
                return new_link, 1
            here.refs += 1
        release(new_link)
        return here, 0


@dataclass(slots=True)
class Walked:
    """What a walk of every name reached: a node and its place, owned by the caller."""

    node: Node
    up: Link | None
    name: str | None


WalkResult = tuple[list[Qid], Walked | None, int, int]


def walk(
    backend: Backend,
    fid: Fid,
    names: tuple[str, ...],
    lookup: Callable[[Node, str], Node] | None = None,
) -> WalkResult:
    """Walk ``names`` (each checked already, or ``.``/``..``) from ``fid`` (blocking: call
    from a worker thread). Returns the qids walked, the place reached if every name was
    walked (else None: a partial walk, nothing kept), the links made and the links freed
    (for the budget). The first name failing raises its error. ``lookup``: the backend's
    (this default) or what stands for it."""
    lookup = lookup or backend.lookup
    node, up, name = fid.node, fid.up, fid.name
    at_fid = True  # node/up are the fid's (borrowed); else this walk owns them
    links_made = freed = 0
    qids: list[Qid] = []

    def drop() -> None:
        nonlocal freed
        if not at_fid:
            node.close()
            freed += release(up)

    try:
        for i, step in enumerate(names):
            if step == "." or (step == ".." and up is None):
                pass  # diodls walks "."; at the share root ".." is the root (as "/..")
            elif step == "..":
                parent = backend.clone(up.node)  # type: ignore[union-attr]
                above = hold(up.up)  # type: ignore[union-attr]
                above_name = up.name  # type: ignore[union-attr]
                drop()
                node, up, name, at_fid = parent, above, above_name, False
            else:
                try:
                    child = lookup(node, step)
                except OSError:
                    if i == 0:
                        raise
                    drop()
                    return qids, None, links_made, freed
                try:
                    if at_fid:
                        link, n = fid.link_here(backend)
                        links_made += n
                    elif up is None:  # this walk's clone of the root: the root's link
                        link = fid.att.link
                        node.close()
                    else:  # the node looked up on the way becomes its link's
                        link = Link(node, name, up)
                        links_made += 1
                except BaseException:
                    child.close()
                    raise
                node, up, name, at_fid = child, link, step, False
            qids.append(node_qid(node))
        if at_fid:
            node, up = backend.clone(node), hold(up)
            at_fid = False
    except BaseException:
        drop()
        raise
    return qids, Walked(node, up, name), links_made, freed


def walk_from_memory(backend: Backend, fid: Fid, names: tuple[str, ...]) -> WalkResult | None:
    """:func:`walk` of one name whose node the backend holds in memory
    (:meth:`Backend.lookup_nowait`: no call that may wait, the rest of a walk makes none),
    or of no name (a clone: :meth:`Backend.clone` never waits, and a directory's
    Twalkopen from its own fid is one); or None, having done nothing."""
    if not names:
        return walk(backend, fid, names)
    if len(names) != 1 or names[0] in (".", ".."):
        return None
    child = backend.lookup_nowait(fid.node, names[0])
    if child is None:
        return None
    return walk(backend, fid, names, lambda _node, _name: child)
