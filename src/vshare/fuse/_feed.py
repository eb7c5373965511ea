"""The FUSE client's end of the change feed (cache mode ``coherent``; docs/changes-feed.md).

One task of the mount keeps a Twatch waiting on the gateway and applies what comes back:

- the kernel's caches are dropped: ``invalidate_inode`` (attributes, and pages for a data
  change) and ``invalidate_entry`` (a name), and so are ours (attributes, complete
  listings), so that ``coherent`` keeps ``always``'s long timeouts and stays correct;
- the guest's inotify is told, which FUSE's invalidations do not do (measured on Linux
  6.18: ``notify_inval_inode`` and ``notify_inval_entry`` raise no event): for a file whose
  contents or attributes changed, a thread of this process replays the change through the
  mount (``truncate`` to the gateway's size: IN_MODIFY; ``utime`` to its times:
  IN_ATTRIB), and ``setattr`` recognises that thread (:attr:`Feed.echo_tid`) and answers
  it with the gateway's attributes without sending anything. Files open for writing here
  are not replayed (the writer's own events are the truth);
- CHANGE_DATA of a directory (its entries changed, names untold: a GlusterFS upcall)
  drops every name of it known here, and its listing;
- a seq the gateway did not expect (a new session after a reconnect or failover), or a
  CHANGE_ALL (its queue overflowed, or a share too large to watch), drops everything:
  every inode's attributes and pages, every name (directories' names expired, not
  unhashed: the note after ``_is_dir``).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from typing import TYPE_CHECKING, Final, NamedTuple

import anyio

from vshare.client import Session, StatResult, read_dirents
from vshare.protocol import (
    CHANGE_ALL,
    CHANGE_ATTR,
    CHANGE_DATA,
    CHANGE_ENTRY,
    CHANGE_KNOWN,
    DOTL_DIRECTORY,
    DOTL_RDONLY,
    GETATTR_ALL,
    Change,
    Message,
    Rgetattr,
    Rwatch,
    Tgetattr,
    Tgetattrat,
    Twatch,
    unpack_changes,
)

if TYPE_CHECKING:
    from vshare.fuse._base import FidOperations
    from vshare.fuse._inodes import Inode
    from vshare.fuse.device import DeviceSession

log = logging.getLogger("vshare.fuse")
#: Bytes of change records one Rwatch may carry.
WATCH_COUNT: Final = 64 * 1024


class Replay(NamedTuple):
    """A name changed elsewhere, replayed through the mount so that the guest's inotify
    sees it, and how the handlers answer the echo thread's requests about it (nothing is
    sent): made (``st``: its attributes, from the gateway: IN_CREATE), removed (``node``:
    the inode it named here: IN_DELETE), moved to ``to`` (``node`` again, now at the
    directory inode and name ``to``: IN_MOVED_FROM/TO), or the target of such a move
    (``node``: what it named here, replaced by the move, or None)."""

    made: bool
    st: StatResult | None
    node: Inode | None
    to: tuple[Inode, str] | None = None
    target: bool = False


#: What a changed name is now, as the gateway answered (see Feed._name_replays).
_Found = tuple["Inode", str, "Inode | None", "StatResult | None"]


class Feed:
    """Follows the gateway's change feed for one mount (``run`` is a task of the mount)."""

    def __init__(self, ops: FidOperations, mountpoint: str, device: DeviceSession) -> None:
        self.ops = ops
        #: Where the kernel is told to drop what it cached.
        self.device = device
        self.mountpoint = mountpoint
        self.seq = 0
        #: The thread that replays changes through the mount (see the module note).
        self.echo_tid = -1
        self.root_qid: int | None = None
        #: (directory inode, name) → the replay the echo thread is making of it.
        self.replays: dict[tuple[int, str], Replay] = {}
        self.applied = 0  # change records applied (tests, logs)

    async def run(self) -> None:
        share = self.ops.share
        while True:
            try:
                reply = await share.on_session(self._poll)
            except OSError as exc:  # no session within reconnect_timeout: try again
                log.debug("change feed: %s", exc)
                await anyio.sleep(0.5)
                continue
            if reply is None:  # the gateway has no feed: ``coherent`` is served as ``auto``
                self.ops.feed = None  # (and files changed elsewhere get new inodes)
                return
            changes = unpack_changes(reply.data)
            self.seq = reply.seq
            if changes:
                await self._apply(changes)

    async def _poll(self, s: Session, retried: bool) -> Rwatch | None:
        if not s.client.feed:
            log.warning("change feed: the gateway offers none: cache mode auto instead")
            self.ops.timeout = 1.0
            return None
        if self.root_qid is None:
            r = await s.client.rpc(Tgetattr(s.root, GETATTR_ALL))
            if isinstance(r, Rgetattr):
                self.root_qid = r.qid.path
        reply = await s.client.rpc(Twatch(s.root, self.seq, WATCH_COUNT))
        if not isinstance(reply, Rwatch):
            raise OSError(errno.EIO, f"Twatch answered with {reply!r}")
        return reply

    def _node(self, path: int) -> Inode | None:
        inodes = self.ops.inodes
        if path == self.root_qid:
            return inodes.root
        return inodes.by_qid.get(path)

    async def _apply(self, changes: list[Change]) -> None:
        self.applied += len(changes)
        inval: dict[int, bool] = {}  # inode → attributes only
        #: directory, name, and whether to expire it only (the note after ``_is_dir``)
        entries: list[tuple[int, str, bool]] = []
        echoes: list[tuple[Inode, int]] = []
        names: list[tuple[Inode, str, Inode | None]] = []  # directory, name, its inode here
        #: directory, its names if it was known whole, the names known of it
        relist: list[tuple[Inode, set[str] | None, set[str]]] = []
        for kinds, path, name in changes:
            if kinds & CHANGE_ALL or kinds & ~CHANGE_KNOWN:
                await self._drop_everything()
                return
            node = self._node(path)
            if node is None:
                continue  # nothing of it cached here
            node.attrs_at = float("-inf")
            if kinds & CHANGE_ENTRY:
                node.children = None  # no longer a complete listing
                child = self.ops.inodes.by_path.get((*node.parts, name))
                if child is not None:
                    child.attrs_at = float("-inf")
                entries.append((node.number, name, False))
                if node.lookups > 0 or node is self.ops.inodes.root:
                    names.append((node, name, child))
            if kinds & (CHANGE_ATTR | CHANGE_DATA):
                data = bool(kinds & CHANGE_DATA)
                if data and _is_dir(node):
                    # Entries changed, names untold (a GlusterFS upcall): drop them all,
                    # and find which by listing it again (for the guest's inotify).
                    dropped = self._names_in(node)
                    if node.lookups > 0 or node is self.ops.inodes.root:
                        relist.append((node, node.children, {n for _, n, _ in dropped}))
                    node.children = None
                    entries += dropped
                    data = False
                if data:
                    node.seen = None
                inval[node.number] = inval.get(node.number, True) and not data
                if node.lookups > 0 and node.parts and not _writing(node):
                    echoes.append((node, kinds if data else CHANGE_ATTR))
        for directory, before, names_known in relist:
            names += await self._names_changed(directory, before, names_known)
        # The files to echo are asked about with the names (their attributes, for the
        # echo; or their absence: removed elsewhere, an IN_DELETE rather than an echo).
        asked = {(d.number, n) for d, n, _ in names}
        for node, _kinds in echoes:
            parent = self._parent(node)
            if parent is not None and (parent.number, node.parts[-1]) not in asked:
                names.append((parent, node.parts[-1], node))
        found = await self._look_up_changed(names)
        now = time.monotonic()
        for _d, _n, known, st in found:
            if known is not None and st is not None and st.qid.path == known.qid_path:
                known.attrs, known.attrs_at = st, now
        replays = self._name_replays(found)
        for number, name, expire_only in entries:
            self.device.invalidate_entry_async(number, os.fsencode(name), expire_only=expire_only)
        if inval or echoes or replays:
            await anyio.to_thread.run_sync(self._invalidate_and_echo, inval, echoes, replays)

    def _parent(self, node: Inode) -> Inode | None:
        """The directory inode of ``node``'s name here (None at the root)."""
        if not node.parts:
            return None
        if len(node.parts) == 1:
            return self.ops.inodes.root
        return self.ops.inodes.by_path.get(tuple(node.parts[:-1]))

    @staticmethod
    def _name_replays(found: list[_Found]) -> list[tuple[Inode, str, Replay]]:
        """Which changed names to replay, from what the gateway says each is now
        (:meth:`_look_up_changed`): a known inode's name gone and, in the same batch,
        a name that is that inode now — a rename (IN_MOVED_FROM/TO); a name the mount
        did not know (a file, directory or symlink: IN_CREATE); one it knew that is gone
        (IN_DELETE), or that names another file now (an editor's save by rename: IN_DELETE
        then IN_CREATE)."""
        gone = {k.qid_path: (d, n, k) for d, n, k, st in found if st is None and k is not None}
        out: list[tuple[Inode, str, Replay]] = []
        moved: set[int] = set()
        for directory, name, known, st in found:
            if st is None or (known is not None and known.qid_path == st.qid.path):
                continue
            origin = gone.get(st.qid.path)
            if origin is not None and not origin[2].same_type(st.st_mode):
                origin = None  # its inode number reused by another file: not a rename
            if origin is not None and st.qid.path not in moved:  # renamed elsewhere
                moved.add(st.qid.path)
                source, old, node = origin
                out.append((directory, name, Replay(False, None, known, target=True)))
                out.append((source, old, Replay(False, None, node, (directory, name))))
                continue
            if known is not None and known.attrs is not None:  # replaced: say it went
                out.append((directory, name, Replay(False, None, known)))
            if stat.S_IFMT(st.st_mode) in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
                out.append((directory, name, Replay(True, st, None)))
        for directory, name, known, st in found:
            removed = st is None and known is not None and known.attrs is not None
            if removed and known is not None and known.qid_path not in moved:
                out.append((directory, name, Replay(False, None, known)))
        return out

    async def _names_changed(
        self, directory: Inode, before: set[str] | None, known: set[str]
    ) -> list[tuple[Inode, str, Inode | None]]:
        """The names of ``directory`` that changed, found by listing it again: against its
        listing ``before`` if the mount had it whole (names added and removed), else
        against the names it ``known`` (removed only: a name not known may have been there
        all along)."""

        async def fn(s: Session, _fids: list[int], _: bool) -> set[str]:
            fid, _unit = await self.ops._open_node(s, directory, DOTL_RDONLY | DOTL_DIRECTORY)
            try:
                return {e.name for e in await read_dirents(s, fid)}
            finally:
                await self.ops.share.forget_fid(s, fid)

        try:
            now = await self.ops._on([directory], fn, walk=False)
        except OSError as exc:
            log.debug("change feed: cannot list %s: %s", "/".join(directory.parts), exc)
            return []
        self.ops._complete(directory, now)  # the next such change is told against it
        by_path = self.ops.inodes.by_path
        changed = (before ^ now) if before is not None else (known - now)
        return [(directory, n, by_path.get((*directory.parts, n))) for n in sorted(changed)]

    async def _look_up_changed(self, names: list[tuple[Inode, str, Inode | None]]) -> list[_Found]:
        """Each changed name with the inode it named here and what the gateway says it
        is now (None: absent); names the gateway could not be asked about are left out."""
        by_dir: dict[int, tuple[Inode, list[tuple[str, Inode | None]]]] = {}
        for directory, name, known in names:
            by_dir.setdefault(directory.number, (directory, []))[1].append((name, known))
        out: list[_Found] = []
        for directory, asked in by_dir.values():
            # one write per directory: a burst of names made on the host is one round trip

            async def fn(
                s: Session, fids: list[int], _: bool, asked: list[tuple[str, Inode | None]] = asked
            ) -> list[Message | OSError]:
                return await s.client.pipeline(
                    [Tgetattrat(fids[0], name, GETATTR_ALL) for name, _known in asked]
                )

            try:
                replies = await self.ops._on([directory], fn)
            except OSError as exc:
                log.debug("change feed: no replays in %s: %s", "/".join(directory.parts), exc)
                continue
            for (name, known), reply in zip(asked, replies, strict=True):
                if isinstance(reply, Rgetattr):  # Rgetattrat is one
                    out.append((directory, name, known, StatResult.from_rgetattr(reply)))
                elif isinstance(reply, FileNotFoundError):
                    out.append((directory, name, known, None))
        return out

    def replay_for(self, pid: int, directory: int, name: str) -> Replay | None:
        """The replay the echo thread (``pid``) is making of ``name`` in ``directory``."""
        if pid != self.echo_tid:
            return None
        return self.replays.get((directory, name))

    def _invalidate_and_echo(
        self,
        inval: dict[int, bool],
        echoes: list[tuple[Inode, int]],
        replays: list[tuple[Inode, str, Replay]],
    ) -> None:
        """In a thread: the invalidations may wait for the kernel's writeback, and the
        replays go through the mount (answered by this process's event loop)."""
        self.echo_tid = threading.get_native_id()
        for number, attr_only in inval.items():
            try:
                self.device.invalidate_inode(number, attr_only=attr_only)
            except OSError:
                pass  # not in the kernel's cache: nothing to drop
        # Names first: a file removed or renamed elsewhere is not looked up by its old
        # name for an echo (that would leave the kernel a negative entry where the
        # replayed unlink must find the file); a renamed one is echoed at its new name.
        for directory, name, replay in replays:
            key = (directory.number, name)
            self.replays[key] = replay
            if replay.target:
                continue  # answered while its move is replayed (next)
            path = os.path.join(self.mountpoint, *directory.parts, name)
            try:
                self._replay(path, replay)
            except OSError as exc:  # changed again meanwhile: no event
                log.debug("change feed: no replay of %s: %s", path, exc)
            finally:
                self.replays.pop(key, None)
                if replay.to is not None:
                    self.replays.pop((replay.to[0].number, replay.to[1]), None)
        removed = {
            r.node.number for _, _, r in replays
            if r.node is not None and not (r.made or r.target or r.to)
        }  # fmt: skip
        for node, kinds in echoes:
            if node.number in removed:
                continue
            path = os.path.join(self.mountpoint, *node.parts)
            try:
                # The lstat asks the gateway (our attributes were dropped above); its answer
                # is node.attrs. Not lstat's own result: with the writeback cache the kernel
                # keeps its own size and times of a regular file whatever the gateway says,
                # and would have us replay those (the change would never show).
                kernel = os.lstat(path)
                st = node.attrs or kernel
                if stat.S_ISLNK(kernel.st_mode):
                    continue
                if kinds & CHANGE_DATA:
                    os.truncate(path, st.st_size)
                os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
            except OSError as exc:  # gone meanwhile, or a read-only mount: no event
                log.debug("change feed: no replay of %s: %s", path, exc)

    def _replay(self, path: str, replay: Replay) -> None:
        """One name's replay through the mount (in the echo thread)."""
        st = replay.st
        if replay.to is not None:
            to, name = replay.to
            os.rename(path, os.path.join(self.mountpoint, *to.parts, name))
        elif replay.made and st is not None and stat.S_ISDIR(st.st_mode):
            os.mkdir(path, 0o700)
        elif replay.made and st is not None and stat.S_ISLNK(st.st_mode):
            os.symlink("-", path)  # the kernel asks for the target when it needs it
        elif replay.made:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDONLY, 0o600))
        elif replay.node is not None and _is_dir(replay.node):
            os.rmdir(path)
        else:
            os.unlink(path)

    def _names_in(self, node: Inode) -> list[tuple[int, str, bool]]:
        """Every name of directory ``node`` known here, for ``invalidate_entry``, and
        whether it names a directory (the note after ``_is_dir``)."""
        parts = tuple(node.parts)
        out = []
        for key, child in self.ops.inodes.by_path.items():
            if len(key) == len(parts) + 1 and key[:-1] == parts:
                child.attrs_at = float("-inf")
                out.append((node.number, key[-1], _is_dir(child)))
        return out

    async def _drop_everything(self) -> None:
        inodes = self.ops.inodes
        names: list[tuple[int, str, bool]] = []
        for node in list(inodes.by_number.values()):
            node.attrs_at = float("-inf")
            node.children = None
            node.seen = None
        for key, child in list(inodes.by_path.items()):
            parent = inodes.by_path.get(key[:-1]) if len(key) > 1 else inodes.root
            if parent is not None:
                names.append((parent.number, key[-1], _is_dir(child)))
        numbers = list(inodes.by_number)

        def drop() -> None:
            for number in numbers:
                try:
                    self.device.invalidate_inode(number, attr_only=False)
                except OSError:
                    pass
            for parent, name, expire_only in names:
                try:
                    self.device.invalidate_entry(parent, os.fsencode(name), expire_only=expire_only)
                except OSError:
                    pass

        await anyio.to_thread.run_sync(drop)


def _is_dir(node: Inode) -> bool:
    return node.attrs is not None and stat.S_ISDIR(node.attrs.st_mode)


# Names dropped untold (everything, or a directory's names) are expired only when they
# name directories, and unhashed otherwise:
# - an unhashed directory that is a process's working directory keeps being it but loses
#   its path: getcwd fails with ENOENT (`git status`, `make`, `pwd`), though the directory
#   is still there. Expired, the kernel looks it up again before it uses it and drops it
#   then if it is gone or another object (session.invalidate_entry);
# - a file's entry is unhashed, so that the kernel lets its inode go and takes the
#   gateway's size with the next lookup: under the writeback cache (auto, always,
#   coherent) the kernel never takes a size from attributes for an inode it holds.


def _writing(node: Inode) -> bool:
    return any(f.flags & (os.O_WRONLY | os.O_RDWR) for f in node.opens)
