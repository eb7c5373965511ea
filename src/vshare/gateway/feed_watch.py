"""The change feed's host source: inotify on the directories of a POSIX share.

While a share has subscribers, one :class:`_ShareWatch` watches its directories (one
inotify instance per share, owned by :class:`Watchers`, a task of ``Gateway.serve``) and
publishes what it sees to the feed: a name added, removed or moved (CHANGE_ENTRY of the
directory, and its attributes), a file's contents or attributes (CHANGE_DATA/ATTR of the
file's qid path: one ``fstatat`` of the name in its directory).

Confinement: directories are found by ``os.fwalk`` from the share root's own fd (it opens
each directory relative to its parent without following symlinks, and checks that what it
opened is what it listed), and each watch is added through ``/proc/self/fd/N`` of an
``O_PATH`` fd of that directory, so a watch lands on exactly that inode inside the share,
never on what a name resolves to later. A directory moved away (IN_MOVED_FROM) loses its
watches and those below it at once, wherever it went; a directory moved in is scanned.
Events are published under this share's key only.

Bounds: :data:`WATCHES_PER_SHARE` directories per share (each is a watch and an fd) and
:data:`WATCHES_TOTAL` for the gateway. Past a bound the share is not fully watched: its
subscribers then get CHANGE_ALL ("revalidate everything") every :data:`FALLBACK_SECONDS`,
so they stay coherent within that time, and ``vshare_feed_watch_fallbacks`` counts it.
"""

from __future__ import annotations

import logging
import os
from typing import Final

import anyio
import anyio.abc

from vshare.backend.base import Backend, HostDirectory, Node
from vshare.gateway import inotify
from vshare.gateway.feed import FeedHub
from vshare.gateway.feed_upcalls import FALLBACK_SECONDS, follow_volume
from vshare.protocol import CHANGE_ALL, CHANGE_ATTR, CHANGE_DATA, CHANGE_ENTRY, Change

log = logging.getLogger("vshare.gateway")

WATCHES_PER_SHARE: Final = 4096
WATCHES_TOTAL: Final = 16384
_MASK: Final = (
    inotify.IN_MODIFY | inotify.IN_ATTRIB | inotify.IN_CLOSE_WRITE | inotify.IN_CREATE
    | inotify.IN_DELETE | inotify.IN_MOVED_FROM | inotify.IN_MOVED_TO
    | inotify.IN_ONLYDIR | inotify.IN_EXCL_UNLINK
)  # fmt: skip
# Not IN_DONT_FOLLOW: the path is /proc/self/fd/N, a magic link that must be followed to
# the very inode of the fd (never a name lookup; see the module note).
_NAMES: Final = inotify.IN_CREATE | inotify.IN_DELETE | inotify.IN_MOVED_FROM | inotify.IN_MOVED_TO


class _ShareWatch:
    """The watches of one share: wd → (O_PATH fd, qid path, parent wd, name there)."""

    def __init__(self, owner: Watchers, host: HostDirectory) -> None:
        self.owner = owner
        self.ifd = inotify.init()
        self.root_fd = host.fd
        self.qid_path = host.qid_path
        self.dirs: dict[int, tuple[int, int, int, str]] = {}
        self.children: dict[int, set[int]] = {}
        self.full = False  # a bound was reached: not every directory is watched

    def qid(self, st: os.stat_result) -> int:
        return self.qid_path(st.st_dev, st.st_ino)

    def scan(self, top: str, dir_fd: int, parent: int) -> None:
        """Watch ``top`` (relative to ``dir_fd``) and the directories below it (blocking)."""
        wds: dict[str, int] = {}
        for dirpath, _dirs, _files, fd in os.fwalk(top, dir_fd=dir_fd):
            if len(self.dirs) >= WATCHES_PER_SHARE or self.owner.total >= WATCHES_TOTAL:
                self.full = True
                return
            up = wds.get(os.path.dirname(dirpath), parent)
            wd = self._watch(fd, up, os.path.basename(dirpath))
            if wd is not None:
                wds[dirpath] = wd

    def _watch(self, fd: int, parent: int, name: str) -> int | None:
        own = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
        try:
            wd = inotify.add_watch(self.ifd, b"/proc/self/fd/%d" % own, _MASK)
        except OSError as exc:  # ENOSPC: the host's max_user_watches
            os.close(own)
            log.warning("change feed: cannot watch a directory: %s", exc)
            self.full = True
            return None
        if wd in self.dirs:  # watched already (a hard-linked or re-scanned directory)
            os.close(own)
            return wd
        self.dirs[wd] = (own, self.qid(os.fstat(own)), parent, name)
        self.children.setdefault(parent, set()).add(wd)
        self.owner.total += 1
        return wd

    def unwatch(self, wd: int) -> None:
        """Forget ``wd`` and every directory watched below it."""
        todo = [wd]
        while todo:
            w = todo.pop()
            entry = self.dirs.pop(w, None)
            if entry is None:
                continue
            os.close(entry[0])
            self.owner.total -= 1
            inotify.rm_watch(self.ifd, w)
            self.children.get(entry[2], set()).discard(w)
            todo.extend(self.children.pop(w, ()))

    def translate(self, events: list[inotify.Event]) -> list[Change]:
        """Changes for a batch of events (blocking: fstatat per changed file)."""
        out: list[Change] = []
        for ev in events:
            if ev.mask & inotify.IN_Q_OVERFLOW:
                return [Change(CHANGE_ALL, 0)]
            entry = self.dirs.get(ev.wd)
            if entry is None:
                continue
            fd, dqid = entry[0], entry[1]
            if ev.mask & inotify.IN_IGNORED:  # the directory went
                self.unwatch(ev.wd)
                continue
            name = os.fsdecode(ev.name)
            if not name:  # the directory itself
                out.append(Change(CHANGE_ATTR, dqid))
                continue
            if ev.mask & _NAMES:
                out += [Change(CHANGE_ENTRY, dqid, name), Change(CHANGE_ATTR, dqid)]
                if ev.mask & inotify.IN_ISDIR:
                    self._moved_dir(ev, fd, name)
                continue
            try:
                st = os.stat(ev.name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue  # gone already: its removal is an event of its own
            kinds = CHANGE_ATTR
            if ev.mask & (inotify.IN_MODIFY | inotify.IN_CLOSE_WRITE):
                kinds |= CHANGE_DATA
            out.append(Change(kinds, self.qid(st)))
        return out

    def _moved_dir(self, ev: inotify.Event, fd: int, name: str) -> None:
        if ev.mask & (inotify.IN_CREATE | inotify.IN_MOVED_TO):
            self.scan(name, fd, ev.wd)
        elif ev.mask & inotify.IN_MOVED_FROM:  # wherever it went, no watch follows it
            for w in list(self.children.get(ev.wd, ())):
                if self.dirs[w][3] == name:
                    self.unwatch(w)

    def close(self) -> None:
        for wd in list(self.dirs):
            self.unwatch(wd)
        os.close(self.ifd)
        os.close(self.root_fd)


class Watchers:
    """Owns the host watchers of every share with subscribers: one task each, in the task
    group of :meth:`run` (a task of ``Gateway.serve``); a share's task is cancelled when
    its last subscriber goes."""

    def __init__(self, hub: FeedHub, backend: Backend) -> None:
        self.hub = hub
        self.backend = backend
        self.total = 0
        self._tg: anyio.abc.TaskGroup | None = None
        self.scopes: dict[str, anyio.CancelScope] = {}

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self.hub.watchers = self
                await anyio.sleep_forever()
        finally:
            self.hub.watchers = None
            self._tg = None

    def start(self, share_key: str, root: Node) -> None:
        if self._tg is None or share_key in self.scopes:
            return
        scope = self.scopes[share_key] = anyio.CancelScope()
        host = self.backend.host_directory(root)
        if host is not None:
            self._tg.start_soon(self._watch, share_key, host, scope)
        else:  # another client of the volume tells, if it can (feed_upcalls.py)
            self._tg.start_soon(follow_volume, self, share_key, root, scope)

    def stop(self, share_key: str) -> None:
        scope = self.scopes.pop(share_key, None)
        if scope is not None:
            scope.cancel()

    def count(self) -> int:
        return self.total

    async def _watch(self, key: str, host: HostDirectory, scope: anyio.CancelScope) -> None:
        try:
            share = _ShareWatch(self, host)
        except OSError as exc:
            os.close(host.fd)
            log.warning("change feed: share %s: no inotify: %s", key, exc)
            return
        try:
            with scope:
                await anyio.to_thread.run_sync(share.scan, ".", host.fd, 0)
                async with anyio.create_task_group() as tg:
                    if share.full:
                        self.hub.stats.fallbacks += 1
                        log.warning(
                            "change feed: share %s has more directories than %d watches:"
                            " its subscribers revalidate every %g s",
                            key, WATCHES_PER_SHARE, FALLBACK_SECONDS,
                        )  # fmt: skip
                        tg.start_soon(self.fallback, key)
                    await self._read(key, share)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(share.close)
            if self.scopes.get(key) is scope:
                del self.scopes[key]

    async def _read(self, key: str, share: _ShareWatch) -> None:
        while True:
            await anyio.wait_readable(share.ifd)
            try:
                buf = os.read(share.ifd, 1 << 16)
            except BlockingIOError:
                continue
            changes = await anyio.to_thread.run_sync(share.translate, inotify.parse(buf))
            if changes:
                self.hub.publish(key, changes)

    async def fallback(self, key: str) -> None:
        """Tell ``key``'s subscribers to revalidate everything every FALLBACK_SECONDS."""
        while True:
            await anyio.sleep(FALLBACK_SECONDS)
            self.hub.publish(key, [Change(CHANGE_ALL, 0)])
