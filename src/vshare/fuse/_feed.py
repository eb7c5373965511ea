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
  every inode's attributes and pages, every name.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
from typing import TYPE_CHECKING, Final, NamedTuple

import anyio
import pyfuse3

from vshare.client import Session, StatResult
from vshare.protocol import (
    CHANGE_ALL,
    CHANGE_ATTR,
    CHANGE_DATA,
    CHANGE_ENTRY,
    CHANGE_KNOWN,
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

log = logging.getLogger("vshare.fuse")
#: Bytes of change records one Rwatch may carry.
WATCH_COUNT: Final = 64 * 1024


class Replay(NamedTuple):
    """A name changed elsewhere, replayed through the mount so that the guest's inotify
    sees it: made (``st``: its attributes, from the gateway) or removed (``node``: the
    inode it named here). The handlers answer the echo thread's request from it."""

    made: bool
    st: StatResult | None
    node: Inode | None


class Feed:
    """Follows the gateway's change feed for one mount (``run`` is a task of the mount)."""

    def __init__(self, ops: FidOperations, mountpoint: str) -> None:
        self.ops = ops
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
            if reply is None:
                return  # the gateway has no feed: ``coherent`` is served as ``auto``
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
        entries: list[tuple[int, str]] = []
        echoes: list[tuple[Inode, int]] = []
        names: list[tuple[Inode, str, Inode | None]] = []  # directory, name, its inode here
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
                entries.append((node.number, name))
                if node.lookups > 0 or node is self.ops.inodes.root:
                    names.append((node, name, child))
            if kinds & (CHANGE_ATTR | CHANGE_DATA):
                data = bool(kinds & CHANGE_DATA)
                if data and _is_dir(node):
                    # Entries changed, names untold (a GlusterFS upcall): drop them all.
                    node.children = None
                    entries += self._names_in(node)
                    data = False
                if data:
                    node.seen = None
                inval[node.number] = inval.get(node.number, True) and not data
                if node.lookups > 0 and node.parts and not _writing(node):
                    echoes.append((node, kinds if data else CHANGE_ATTR))
        replays = await self._name_replays(names)
        for number, name in entries:
            pyfuse3.invalidate_entry_async(number, os.fsencode(name), ignore_enoent=True)
        if inval or echoes or replays:
            await anyio.to_thread.run_sync(self._invalidate_and_echo, inval, echoes, replays)

    async def _name_replays(
        self, names: list[tuple[Inode, str, Inode | None]]
    ) -> list[tuple[Inode, str, Replay]]:
        """Which changed names to replay: one the gateway has that this mount did not
        know (a regular file or a directory: IN_CREATE), one it knew that the gateway no
        longer has (IN_DELETE). A name that names another file now is left to the
        invalidation (no event)."""
        by_dir: dict[int, tuple[Inode, list[tuple[str, Inode | None]]]] = {}
        for directory, name, known in names:
            by_dir.setdefault(directory.number, (directory, []))[1].append((name, known))
        out: list[tuple[Inode, str, Replay]] = []
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
                    st = StatResult.from_rgetattr(reply)
                    if known is None and (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                        out.append((directory, name, Replay(True, st, None)))
                elif (
                    isinstance(reply, FileNotFoundError)
                    and known is not None
                    and known.attrs is not None
                ):
                    out.append((directory, name, Replay(False, None, known)))
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
                pyfuse3.invalidate_inode(number, attr_only=attr_only)
            except OSError:
                pass  # not in the kernel's cache: nothing to drop
        for node, kinds in echoes:
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
        for directory, name, replay in replays:
            key = (directory.number, name)
            path = os.path.join(self.mountpoint, *directory.parts, name)
            self.replays[key] = replay
            try:
                if replay.made and replay.st is not None and stat.S_ISDIR(replay.st.st_mode):
                    os.mkdir(path, 0o700)
                elif replay.made:
                    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDONLY, 0o600))
                elif replay.node is not None and _is_dir(replay.node):
                    os.rmdir(path)
                else:
                    os.unlink(path)
            except OSError as exc:  # changed again meanwhile: no event
                log.debug("change feed: no replay of %s: %s", path, exc)
            finally:
                self.replays.pop(key, None)

    def _names_in(self, node: Inode) -> list[tuple[int, str]]:
        """Every name of directory ``node`` known here, for ``invalidate_entry``."""
        parts = tuple(node.parts)
        out = []
        for key, child in self.ops.inodes.by_path.items():
            if len(key) == len(parts) + 1 and key[:-1] == parts:
                child.attrs_at = float("-inf")
                out.append((node.number, key[-1]))
        return out

    async def _drop_everything(self) -> None:
        inodes = self.ops.inodes
        names: list[tuple[int, str]] = []
        for node in list(inodes.by_number.values()):
            node.attrs_at = float("-inf")
            node.children = None
            node.seen = None
        for key in list(inodes.by_path):
            parent = inodes.by_path.get(key[:-1]) if len(key) > 1 else inodes.root
            if parent is not None:
                names.append((parent.number, key[-1]))
        numbers = list(inodes.by_number)

        def drop() -> None:
            for number in numbers:
                try:
                    pyfuse3.invalidate_inode(number, attr_only=False)
                except OSError:
                    pass
            for parent, name in names:
                try:
                    pyfuse3.invalidate_entry(parent, os.fsencode(name))
                except OSError:
                    pass

        await anyio.to_thread.run_sync(drop)


def _is_dir(node: Inode) -> bool:
    return node.attrs is not None and stat.S_ISDIR(node.attrs.st_mode)


def _writing(node: Inode) -> bool:
    return any(f.flags & (os.O_WRONLY | os.O_RDWR) for f in node.opens)
