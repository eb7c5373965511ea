"""The FUSE client's inodes and open files, each holding a 9P fid as the kernel's v9fs does.

An :class:`Inode` is one file the kernel knows (by qid.path, so hard links share one). It
holds a *walked* fid (unopened) on the current session: every operation on it is one
request on that fid, never a walk from the share root. ``parts`` is the path it was last
seen at; it is used only to rebuild the fid on a new session (after a reconnect or a
failover) or after the fid was given back to bound the fids we hold (:class:`InodeTable`
keeps at most ``max_fids`` walked fids, least recently used first out).

An :class:`OpenFile` holds its own *opened* fid, so reads, writes, fstat and fsetattr work
on a file whose name is gone (unlinked or renamed while open), as on a local disk.

An inode the kernel forgets (``drop_caches``, memory pressure, a tree walked once) is kept
*cold* for a while (:meth:`InodeTable.cool`, at most ``MAX_COLD``, oldest out first),
without its fid: a lookup of its name while its attributes are as fresh as the cache mode
promises is answered from them, with nothing asked (``find`` or ``stat`` after
``drop_caches`` looked every entry up at the gateway again; sshfs answered from the 20 s
cache it keeps in its process).

Why fids are pinned: a fid number is reused once its Tclunk is answered, so a fid given
back while a request that names it is being built could make that request act on another
file. An operation pins (``busy``) the inodes whose fids it uses; only unpinned fids are
given back.
"""

from __future__ import annotations

import asyncio
import stat
from collections import OrderedDict
from dataclasses import dataclass, field

from vshare.client import StatResult
from vshare.fuse import device
from vshare.protocol import Buffer, Tsetattr


@dataclass(eq=False, slots=True)
class Inode:
    number: int
    parts: list[str]
    qid_path: int
    #: Entries handed to the kernel (lookup, create, readdirplus...), less its forgets.
    lookups: int = 0
    fid: int = -1
    epoch: int = -1
    #: Operations using ``fid`` right now: it is not given back meanwhile.
    busy: int = 0
    #: The attributes last seen or set: synthesised replies start from them.
    attrs: StatResult | None = None
    #: When ``attrs`` last came from the gateway (changes of ours since are applied).
    attrs_at: float = float("-inf")
    #: (mtime_ns, size) at the last open: ``auto`` keeps the page cache while unchanged.
    seen: tuple[int, int] | None = None
    #: A directory whose every name we know (we made it, or listed it whole), until
    #: ``complete_until``: a lookup of any other name is answered ENOENT with no request.
    children: set[str] | None = None
    complete_until: float = 0.0
    #: Lookups of its names answered by the gateway since it was last listed whole.
    stale_lookups: int = 0
    #: A regular file whose size or mtime the gateway says changed, not by us: the
    #: kernel's copy of them is stale (see ``FidOperations._for_kernel``).
    stale_in_kernel: bool = False
    #: ``attrs``' mtime is this client's clock at a write of ours, not the gateway's.
    mtime_guessed: bool = False
    #: The inode that took over this one's file (``InodeTable.renew``).
    renewed: Inode | None = None
    #: Open files of this inode (their fids still reach it once its names are gone).
    opens: set[OpenFile] = field(default_factory=set)
    #: Paths it was seen at (hard links: several), so that an unlink of one of them
    #: finds the inode whose link count it changes.
    names: set[tuple[str, ...]] = field(default_factory=set)

    def same_type(self, mode: int) -> bool:
        """Whether this inode is known here as the type of file ``mode`` says."""
        return self.attrs is not None and stat.S_IFMT(self.attrs.st_mode) == stat.S_IFMT(mode)

    def knows_absent(self, name: str, now: float) -> bool:
        return self.children is not None and now < self.complete_until and name not in self.children

    def name_added(self, name: str) -> None:
        if self.children is not None:
            self.children.add(name)

    def name_removed(self, name: str) -> None:
        if self.children is not None:
            self.children.discard(name)


@dataclass(eq=False, slots=True)
class OpenFile:
    node: Inode
    flags: int  # the P9_DOTL flags to re-open with on a new session
    fid: int = -1
    epoch: int = -1
    iounit: int = 0
    #: Attribute changes made through this file and not yet sent (cache modes that allow
    #: it): merged into one Tsetattr, sent before anything else on the file and at flush.
    pending: Tsetattr | None = None
    #: Requests sent behind the application's back (write-behind, the Tsetattr of a
    #: close): how many are unanswered, their bytes, an event set when none is, and the
    #: first error, told at the next operation on the file (as a page cache tells it).
    behind: int = 0
    behind_bytes: int = 0
    idle: asyncio.Event | None = None
    error: OSError | None = None
    #: The file's first bytes, read with its open (a small file opened to read: see
    #: ``FileOperations.open``), until the first read takes them: (data, whether they end
    #: where the file did, the (mtime, size) of the attributes known at the open).
    head: tuple[Buffer, bool, tuple[int, int]] | None = None


@dataclass(eq=False, slots=True)
class OpenDir:
    node: Inode
    fid: int = -1
    epoch: int = -1
    #: The listing with attributes, made at the first readdir so that offsets stay stable
    #: while the kernel pages through it: (name, inode, attributes).
    entries: list[tuple[str, Inode, StatResult]] | None = None


#: Inodes the kernel forgot, kept for the lookups their attributes can still answer.
MAX_COLD = 20_000


class InodeTable:
    """Inodes by FUSE number and by qid.path, and the walked fids held, in LRU order."""

    def __init__(self, max_fids: int, max_cold: int = MAX_COLD) -> None:
        self.max_fids = max_fids
        self.max_cold = max_cold
        #: Inodes the kernel holds no lookup of, oldest first (see the module note).
        self.cold: OrderedDict[Inode, None] = OrderedDict()
        self.root = Inode(device.ROOT_INODE, [], -1, lookups=1)
        self.by_number: dict[int, Inode] = {device.ROOT_INODE: self.root}
        self.by_qid: dict[int, Inode] = {}
        self._next = device.ROOT_INODE + 1
        #: Inodes holding a walked fid (not the root: its fid is the session's).
        self.with_fid: OrderedDict[Inode, None] = OrderedDict()
        self.by_path: dict[tuple[str, ...], Inode] = {}

    def __len__(self) -> int:
        return len(self.by_number)

    def get(self, number: int) -> Inode | None:
        return self.by_number.get(number)

    def for_qid(self, parts: list[str], qid_path: int, mode: int | None = None) -> Inode:
        """The inode of ``qid_path``, made if new (with no lookups yet); ``parts`` is
        where it was just seen, ``mode`` (when known) what it is now. An inode known here
        as another type of file is not it: the volume reused a removed file's inode
        number (ext4 does at once), and handing the kernel the old inode for the new
        file would make it mark that inode bad (EIO from then on)."""
        node = self.by_qid.get(qid_path)
        if (
            node is not None
            and mode is not None
            and node.attrs is not None
            and not node.same_type(mode)
        ):
            del self.by_qid[qid_path]  # the old one lives on for the kernel's FORGET
            for key in node.names:
                if self.by_path.get(key) is node:
                    del self.by_path[key]
            node.names.clear()
            node = None
        if node is None:
            node = Inode(self._next, parts, qid_path)
            self._next += 1
            self.by_qid[qid_path] = node
            self.by_number[node.number] = node
        else:
            node.parts = parts
        key = tuple(parts)
        self.by_path[key] = node
        node.names.add(key)
        return node

    def renew(self, node: Inode) -> Inode:
        """A new inode, under a new number, for ``node``'s file and names. The old one
        lives on, out of the lookups, for the kernel's FORGET (and a request of a
        process that reached it before it was replaced)."""
        new = Inode(self._next, list(node.parts), node.qid_path)
        self._next += 1
        new.attrs, new.attrs_at = node.attrs, node.attrs_at
        node.renewed = new
        self.by_number[new.number] = new
        self.by_qid[node.qid_path] = new
        for key in node.names:
            if self.by_path.get(key) is node:
                self.by_path[key] = new
        new.names, node.names = node.names, set()
        return new

    def unlinked(self, parts: list[str]) -> Inode | None:
        """The name ``parts`` is gone: the inode it was (if known), whose link count and
        times changed, so its attributes are asked for again."""
        node = self.by_path.pop(tuple(parts), None)
        if node is not None:
            node.names.discard(tuple(parts))
            node.attrs_at = float("-inf")
        return node

    def revive(self, node: Inode) -> Inode:
        """``node`` back in the table if it was dropped meanwhile (a listing kept it),
        or the inode that took its qid since."""
        while node.renewed is not None:
            node = node.renewed
        if self.by_number.get(node.number) is node:
            return node
        current = self.by_qid.get(node.qid_path)
        if current is not None:
            return current
        self.by_number[node.number] = node
        self.by_qid[node.qid_path] = node
        for key in node.names:
            self.by_path.setdefault(key, node)
        if node.fid >= 0:
            self.used(node)  # its fid counts against the budget again
        return node

    def cool(self, node: Inode) -> list[Inode]:
        """The kernel holds ``node`` no more (its last lookup went, no file is open on
        it): kept for a lookup its attributes answer (the caller gives its fid back now).
        Returns the oldest kept beyond ``max_cold``, dropped (the caller gives back a fid
        one of them took meanwhile); one looked up again meanwhile just leaves the list."""
        self.cold[node] = None
        self.cold.move_to_end(node)
        dropped: list[Inode] = []
        busy: list[Inode] = []
        while len(self.cold) > self.max_cold:
            old, _ = self.cold.popitem(last=False)
            if old.lookups > 0 or old.opens or old is self.root:
                continue
            if old.busy:
                busy.append(old)  # in use by a request: later
                continue
            self.drop(old)
            dropped.append(old)
        for old in busy:
            self.cold[old] = None
        return dropped

    def drop(self, node: Inode) -> None:
        """Forget ``node`` (its last lookup went): the caller gives its fid back."""
        self.cold.pop(node, None)
        self.by_number.pop(node.number, None)
        if self.by_qid.get(node.qid_path) is node:
            del self.by_qid[node.qid_path]
        self.with_fid.pop(node, None)
        for key in node.names:
            if self.by_path.get(key) is node:
                del self.by_path[key]

    def used(self, node: Inode) -> None:
        if node is not self.root:
            self.with_fid[node] = None
            self.with_fid.move_to_end(node)

    def untrack(self, node: Inode) -> None:
        self.with_fid.pop(node, None)

    def over_budget(self) -> list[Inode]:
        """Unpinned inodes whose fids should be given back, oldest first."""
        extra = len(self.with_fid) - self.max_fids
        if extra <= 0:
            return []
        out = []
        for node in self.with_fid:
            if node.busy == 0:
                out.append(node)
                if len(out) >= extra:
                    break
        return out

    def moved(self, old: list[str], new: list[str]) -> None:
        """A rename: every inode at or below ``old`` is now below ``new``."""
        n = len(old)
        prefix = tuple(old)
        for node in self.by_number.values():
            if node.parts[:n] == old:
                node.parts = new + node.parts[n:]
            moved = {key for key in node.names if key[:n] == prefix}
            for key in moved:
                if self.by_path.get(key) is node:
                    del self.by_path[key]
                node.names.discard(key)
                renamed = (*new, *key[n:])
                node.names.add(renamed)
                self.by_path[renamed] = node
