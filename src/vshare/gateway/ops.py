"""The 9P2000.L operations of one session: one handler per T-message.

Each handler takes the decoded request and returns the reply, or raises ``OSError`` whose
errno the session sends back in Rlerror. The handlers live by kind of request in
ops_fids.py (attach, walk, clunk, remove, attributes), ops_io.py (open, create, read,
write, readdir, fsync), ops_names.py (mkdir, symlink, mknod, link, rename, unlink),
ops_xattrs.py (xattrs, locks) and ops_feed.py (the change feed's Twatch), on the state and
plumbing of ops_base.py; this module puts them together in :class:`Operations`, with the
tables that say which requests are answered on the event loop and which fids each request
changes. Blocking backend work runs in a worker thread, bounded per share; a handler does
all of its backend calls in one trip to that thread.

Confinement rests on three rules kept here and in the backend (see backend/posix.py):
every name from the wire goes through :func:`check_name` before a backend sees it; every
lookup is relative to a node the fid already holds; ``..`` is answered from the fid's
lineage, the directories it was walked through from the share root (and stays at the root
when already there: see fids.py), never by asking the backend for a parent.
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable
from typing import Any, Final

from vshare.gateway.context import GatewayContext
from vshare.gateway.fids import INLINE
from vshare.gateway.ops_base import WouldBlock, os_error
from vshare.gateway.ops_feed import FeedOps
from vshare.gateway.ops_fids import FidOps
from vshare.gateway.ops_io import IoOps
from vshare.gateway.ops_names import NameOps
from vshare.gateway.ops_xattrs import XattrLockOps
from vshare.protocol import (
    DOTL_DIRECTORY,
    DOTL_TRUNC,
    MESSAGE_TYPES,
    SETATTR_SIZE,
    Message,
    Rlopen,
    Rwalkopen,
    Tattach,
    Tauth,
    Tclunk,
    Tfallocate,
    Tfsync,
    Tgetattr,
    Tgetattrat,
    Tgetlock,
    Tlcreate,
    Tlcreateat,
    Tlink,
    Tlock,
    Tlopen,
    Tmkdir,
    Tmknod,
    Tread,
    Treaddir,
    Treaddirplus,
    Treadlink,
    Tremove,
    Trename,
    Trenameat,
    Tsetattr,
    Tstatfs,
    Tsymlink,
    Tunlinkat,
    Twalk,
    Twalkopen,
    Twatch,
    Twrite,
    Txattrcreate,
    Txattrwalk,
)
from vshare.transport import PeerIdentity

__all__ = ["FID_CHANGES", "FID_FIELDS", "Operations", "WouldBlock", "fids_of"]

#: A T-message's handler: a function of :class:`Operations`, called with the operations
#: and the message.
Handler = Callable[[Any, Any], Awaitable[Message]]

#: Requests that make no backend call at all (or, for Tread, none that may wait).
_NO_BACKEND: Final = frozenset({Tauth, Tlock, Tgetlock, Txattrcreate, Tread})
#: Requests whose backend calls are metadata only. Not here: data (read, write, readdir,
#: fsync), remove (freeing a large file's blocks can take long), attach. Tunlinkat is, but
#: runs on the loop only when the backend says it is quick (else WouldBlock: a thread).
_METADATA: Final = frozenset({
    Tgetattr, Tgetattrat, Twalk, Twalkopen, Tclunk, Tstatfs, Treadlink, Tlopen, Tlcreate,
    Tlcreateat, Tsetattr, Tmkdir, Tsymlink, Tmknod, Tlink, Trename, Trenameat, Txattrwalk,
    Tunlinkat,
})  # fmt: skip
#: Listings from their start, where metadata is cheap: answered on the loop when the
#: directory ends within a few dozen entries (else WouldBlock: a thread).
_LISTINGS: Final = frozenset({Treaddir, Treaddirplus})
#: Of those, what a backend whose metadata is not cheap may answer from its cache on the
#: event loop (:attr:`Backend.nowait_metadata`; else WouldBlock: a thread): attributes,
#: one-name walks, listings, opens of directories whose listing it holds (a Twalkopen
#: whose open must wait clunks the fid its walk made: nothing is left changed); and the
#: clunk of a fid with no open file, or one never made (handles released in memory).
_FROM_MEMORY: Final = frozenset(
    {Tgetattr, Tgetattrat, Twalk, Tclunk, Treaddirplus, Tlopen, Twalkopen}
)

#: Of each request, the fields that name a fid creates or changes (beyond using it): a fid it makes
#: (attach, walk, xattrwalk, lcreateat), opens (lopen, lcreate, xattrcreate), moves (walk in place,
#: rename: its remembered path) or ends (clunk, remove); and the fids of what a client may ask about
#: in the same write: a directory it adds a name to (mkdir, symlink, mknod, link: a Twalk to the new
#: name follows), a file whose attributes it sets or links (setattr, link: a Tgetattr follows). The
#: session orders requests on one fid by this table and :data:`FID_FIELDS` (see session.py): the
#: promise of 9P2000.L.vshare. Removals and renames are not here: nothing is pipelined after them,
#: and ordering them would make every walk from a directory wait for the unlinks running in it
#: (create+unlink at 16 in flight: 470 µs of gateway CPU each instead of 260).
FID_CHANGES: Final[dict[type, tuple[str, ...]]] = {
    Tattach: ("fid",), Twalk: ("newfid",), Txattrwalk: ("newfid",), Tlopen: ("fid",),
    Tlcreate: ("fid",), Tlcreateat: ("newfid",), Twalkopen: ("newfid",), Txattrcreate: ("fid",),
    Tclunk: ("fid",), Tremove: ("fid",),
    Trename: ("fid",), Tmkdir: ("dfid",), Tsymlink: ("fid",), Tmknod: ("dfid",),
    Tlink: ("dfid", "fid"), Tsetattr: ("fid",), Tfallocate: ("fid",),
}  # fmt: skip
#: Of each request, every field that names a fid (an attach's ``afid`` names none: it must
#: be NOFID). Not Twatch: a long poll, it would hold up every later change of its fid
#: (the clunk of the root at unmount); it only reads the fid's attachment, once, at start.
FID_FIELDS: Final[dict[type, tuple[str, ...]]] = {
    t: tuple(f for f in t._fields if f.endswith("fid") and f != "afid")
    for t in MESSAGE_TYPES.values()
    if t.__name__.startswith("T") and t is not Twatch
}


def fids_of(msg: Message) -> tuple[frozenset[int], frozenset[int]]:
    """The fid numbers ``msg`` only uses, and those it creates or changes (disjoint)."""
    t = type(msg)
    changed = frozenset(getattr(msg, f) for f in FID_CHANGES.get(t, ()))
    used = frozenset(getattr(msg, f) for f in FID_FIELDS.get(t, ())) - changed
    return used, changed


class Operations(FeedOps, FidOps, IoOps, NameOps, XattrLockOps):
    """Handlers and fid table of one session, and which of them run on the event loop."""

    def __init__(
        self, ctx: GatewayContext, identity: PeerIdentity, session_id: int, key: str = ""
    ) -> None:
        """``key``: whom budgets charge (default: ``ctx.identity_key(identity)``)."""
        super().__init__(ctx, identity, session_id, key)
        mode = ctx.config.inline_metadata
        cheap = mode == "always" or (mode == "auto" and ctx.backend.cheap_metadata)
        self.metadata_inline = cheap
        if cheap:
            self._inline_types = _NO_BACKEND | _METADATA | _LISTINGS
        elif mode == "auto" and ctx.backend.nowait_metadata:
            self._inline_types = _NO_BACKEND | _FROM_MEMORY
        else:
            self._inline_types = _NO_BACKEND
        #: The dispatch table: one function of the class per T-message, looked up once per
        #: request and called with the operations. (Bound methods would make a reference
        #: cycle of every session's operations, freed only by the cyclic collector.)
        ops = type(self)
        self._handlers: dict[type, Handler] = {
            Tauth: ops.auth, Tattach: ops.attach, Twalk: ops.walk, Tlopen: ops.lopen,
            Tlcreate: ops.lcreate, Tlcreateat: ops.lcreateat, Twalkopen: ops.walkopen,
            Tfallocate: ops.fallocate,
            Tread: ops.read,
            Twrite: ops.write, Tclunk: ops.clunk,
            Tremove: ops.remove, Tgetattr: ops.getattr, Tgetattrat: ops.getattrat,
            Tsetattr: ops.setattr,
            Treaddir: ops.readdir, Treaddirplus: ops.readdirplus, Tfsync: ops.fsync,
            Tstatfs: ops.statfs,
            Treadlink: ops.readlink, Tsymlink: ops.symlink, Tmknod: ops.mknod,
            Tmkdir: ops.mkdir, Tlink: ops.link, Trename: ops.rename,
            Trenameat: ops.renameat, Tunlinkat: ops.unlinkat, Txattrwalk: ops.xattrwalk,
            Txattrcreate: ops.xattrcreate, Tlock: ops.lock, Tgetlock: ops.getlock,
            Twatch: ops.watch,
        }  # fmt: skip

    async def walkopen(self, msg: Twalkopen) -> Message:
        """vshare's extension (``VERSION_VSHARE_4``): Twalk of ``fid`` to ``newfid`` by at
        most one name, then Tlopen of ``newfid``, with their checks; on an error no fid is
        made. Not with DOTL_TRUNC (EINVAL): a truncation is told to the change feed before
        it runs, from the fid it opens, which a walk has not made yet."""
        if len(msg.wnames) > 1 or msg.flags & DOTL_TRUNC or msg.newfid == msg.fid:
            raise os_error(errno.EINVAL)
        await self.walk(Twalk(msg.fid, msg.newfid, msg.wnames))
        try:
            opened = await self.lopen(Tlopen(msg.newfid, msg.flags))
        except BaseException:
            await self.clunk(Tclunk(msg.newfid))
            raise
        assert isinstance(opened, Rlopen)
        return Rwalkopen(opened.qid, opened.iounit)

    def handler(self, msg_type: type) -> Handler | None:
        """The handler of ``msg_type``, to be called with these operations and the
        message."""
        return self._handlers.get(msg_type)

    def runs_inline(self, msg: Message) -> bool:
        """Whether ``msg`` may be answered on the event loop, before the next request is
        read: it makes no backend call, or only cheap metadata calls (see
        :attr:`Backend.cheap_metadata`), or it is a read, which is answered there only from
        cached data (:meth:`Backend.read_nowait`; else :class:`WouldBlock`), or a listing
        from a directory's start, answered there only if it ends within
        ``INLINE_LISTING_MAX`` entries (or a Treaddir from where the fid's last one ended).
        Truncation may free many blocks: never inline."""
        if type(msg) not in self._inline_types:
            return False
        if isinstance(msg, (Tlopen, Twalkopen)) and not self.metadata_inline:
            return bool(msg.flags & DOTL_DIRECTORY)  # only a directory's open is put off
        if isinstance(msg, Tlopen):
            return not msg.flags & DOTL_TRUNC
        if isinstance(msg, Tsetattr):
            return not msg.valid & SETATTR_SIZE
        if isinstance(msg, (Treaddir, Treaddirplus)):
            # From a directory's start; or a Treaddir asked again from where its last
            # listing ended (it has no end flag), which is answered from memory.
            if msg.offset == 0:
                return True
            fid = self.fids.get(msg.fid)
            return type(msg) is Treaddir and fid is not None and fid.listing_end == msg.offset
        return True

    async def inline(self, msg: Message) -> Message:
        """Answer ``msg`` with its backend calls made here, on the event loop."""
        token = INLINE.set(self.on_loop)  # (a deep chain of links goes after the reply)
        try:
            return await self._handlers[type(msg)](self, msg)
        finally:
            INLINE.reset(token)
