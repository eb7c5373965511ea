"""The change feed's host source: fanotify on the directories of a POSIX share.

While a share has subscribers, one :class:`_ShareWatch` watches its directories (one
fanotify group per share, owned by :class:`Watchers`, a task of ``Gateway.serve``) and
publishes what other processes do there: a name added, removed or moved (CHANGE_ENTRY of
the directory, and its attributes), a file's contents or attributes (CHANGE_DATA/ATTR of
the file's qid path: one ``fstatat`` of the name in its directory). What this gateway's
process does itself is left out: each event names the process that made it, and the
gateway's own changes are told to the other sessions from the requests that made them
(``feed.describe``), so the session that made a change never hears it back
(``fanotify.py`` says why that matters).

Confinement: directories are found by ``os.fwalk`` from the share root's own fd (it opens
each directory relative to its parent without following symlinks, and checks that what it
opened is what it listed), and each mark is added through ``/proc/self/fd/N`` of an
``O_PATH`` fd of that directory, so a mark lands on exactly that inode inside the share,
never on what a name resolves to later; an event is matched to a directory by the handle
taken from that same fd. A directory moved away or removed loses its marks and those below
it at once, wherever it went; a directory made or moved in is scanned. Events are
published under this share's key only.

Bounds: :data:`WATCHES_PER_SHARE` directories per share (each is a mark and an fd) and
:data:`WATCHES_TOTAL` for the gateway. Past a bound, or where the kernel has no fanotify
with names (before Linux 5.9, or 5.13 for a gateway that is not root), the share is not
fully watched: its subscribers then get CHANGE_ALL ("revalidate everything") every
:data:`FALLBACK_SECONDS`, so they stay coherent within that time, and
``vshare_feed_watch_fallbacks`` counts it.
"""

from __future__ import annotations

import logging
import os
from typing import Final

import anyio
import anyio.abc

from vshare.backend.base import Backend, HostDirectory, Node
from vshare.gateway import fanotify
from vshare.gateway.feed import FeedHub
from vshare.gateway.feed_upcalls import FALLBACK_SECONDS, follow_volume
from vshare.protocol import CHANGE_ALL, CHANGE_ATTR, CHANGE_DATA, CHANGE_ENTRY, Change

log = logging.getLogger("vshare.gateway")

WATCHES_PER_SHARE: Final = 4096
WATCHES_TOTAL: Final = 16384
_MASK: Final = (
    fanotify.FAN_MODIFY | fanotify.FAN_ATTRIB | fanotify.FAN_CLOSE_WRITE
    | fanotify.FAN_CREATE | fanotify.FAN_DELETE | fanotify.FAN_MOVED_FROM
    | fanotify.FAN_MOVED_TO | fanotify.FAN_EVENT_ON_CHILD | fanotify.FAN_ONDIR
)  # fmt: skip
_NAMES: Final = (
    fanotify.FAN_CREATE | fanotify.FAN_DELETE | fanotify.FAN_MOVED_FROM | fanotify.FAN_MOVED_TO
)
_CONTENTS: Final = fanotify.FAN_MODIFY | fanotify.FAN_CLOSE_WRITE
_DIR_GONE: Final = fanotify.FAN_DELETE | fanotify.FAN_MOVED_FROM


class _ShareWatch:
    """The marks of one share: directory key → (O_PATH fd, qid path, parent key, name)."""

    def __init__(self, owner: Watchers, host: HostDirectory) -> None:
        self.owner = owner
        self.group = fanotify.init()
        self.pid = os.getpid()  # the gateway's own changes: told by feed.describe
        self.root_fd = host.fd
        self.qid_path = host.qid_path
        self.dirs: dict[bytes, tuple[int, int, bytes, str]] = {}
        self.children: dict[bytes, set[bytes]] = {}
        self.full = False  # a bound was reached: not every directory is watched

    def qid(self, st: os.stat_result) -> int:
        return self.qid_path(st.st_dev, st.st_ino)

    def scan(self, top: str, dir_fd: int, parent: bytes) -> None:
        """Watch ``top`` (relative to ``dir_fd``) and the directories below it (blocking)."""
        keys: dict[str, bytes] = {}
        for dirpath, _dirs, _files, fd in os.fwalk(top, dir_fd=dir_fd):
            if len(self.dirs) >= WATCHES_PER_SHARE or self.owner.total >= WATCHES_TOTAL:
                self.full = True
                return
            up = keys.get(os.path.dirname(dirpath), parent)
            key = self._watch(fd, up, os.path.basename(dirpath))
            if key is not None:
                keys[dirpath] = key

    def _watch(self, fd: int, parent: bytes, name: str) -> bytes | None:
        own = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
        try:
            key = fanotify.handle_key(own)
            if key in self.dirs:  # watched already (a re-scanned directory)
                os.close(own)
                return key
            fanotify.mark(self.group, b"/proc/self/fd/%d" % own, _MASK)
        except OSError as exc:  # ENOSPC: the host's max_user_marks
            os.close(own)
            log.warning("change feed: cannot watch a directory: %s", exc)
            self.full = True
            return None
        self.dirs[key] = (own, self.qid(os.fstat(own)), parent, name)
        self.children.setdefault(parent, set()).add(key)
        self.owner.total += 1
        return key

    def unwatch(self, key: bytes) -> None:
        """Forget ``key`` and every directory watched below it."""
        todo = [key]
        while todo:
            k = todo.pop()
            entry = self.dirs.pop(k, None)
            if entry is None:
                continue
            try:
                fanotify.unmark(self.group, b"/proc/self/fd/%d" % entry[0], _MASK)
            finally:
                os.close(entry[0])
            self.owner.total -= 1
            self.children.get(entry[2], set()).discard(k)
            todo.extend(self.children.pop(k, ()))

    def translate(self, events: list[fanotify.Event]) -> list[Change]:
        """Changes for a batch of events (blocking: fstatat per changed file)."""
        out: list[Change] = []
        for ev in events:
            if ev.mask & fanotify.FAN_Q_OVERFLOW:
                return [Change(CHANGE_ALL, 0)]
            if ev.pid == self.pid:
                continue
            entry = self.dirs.get(ev.key)
            if entry is None:
                continue
            fd, dqid = entry[0], entry[1]
            if ev.name == b".":  # the directory itself
                out.append(Change(CHANGE_ATTR, dqid))
                continue
            name = os.fsdecode(ev.name)
            if ev.mask & _NAMES:
                out += [Change(CHANGE_ENTRY, dqid, name), Change(CHANGE_ATTR, dqid)]
                if ev.mask & fanotify.FAN_ONDIR:
                    self._moved_dir(ev, ev.key, fd, name)
                if not ev.mask & ~_NAMES & ~fanotify.FAN_ONDIR:
                    continue
            try:
                st = os.stat(ev.name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue  # gone already: its removal is an event of its own
            kinds = CHANGE_ATTR | (CHANGE_DATA if ev.mask & _CONTENTS else 0)
            out.append(Change(kinds, self.qid(st)))
        return out

    def _moved_dir(self, ev: fanotify.Event, key: bytes, fd: int, name: str) -> None:
        if ev.mask & _DIR_GONE:  # wherever it went, no mark follows it
            for k in list(self.children.get(key, ())):
                if self.dirs[k][3] == name:
                    self.unwatch(k)
        if ev.mask & (fanotify.FAN_CREATE | fanotify.FAN_MOVED_TO):
            try:
                self.scan(name, fd, key)
            except OSError:
                pass  # gone again: its removal is an event of its own

    def close(self) -> None:
        for key in list(self.dirs):
            self.unwatch(key)
        os.close(self.group)
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
            log.warning(
                "change feed: share %s: no fanotify (%s): its subscribers revalidate every %g s",
                key, exc, FALLBACK_SECONDS,
            )  # fmt: skip
            self.hub.stats.fallbacks += 1
            try:
                with scope:
                    await self.fallback(key)
            finally:
                if self.scopes.get(key) is scope:
                    del self.scopes[key]
            return
        try:
            with scope:
                await anyio.to_thread.run_sync(share.scan, ".", host.fd, b"")
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
            await anyio.wait_readable(share.group)
            try:
                buf = os.read(share.group, 1 << 16)
            except BlockingIOError:
                continue
            changes = await anyio.to_thread.run_sync(share.translate, fanotify.parse(buf))
            if changes:
                self.hub.publish(key, changes)

    async def fallback(self, key: str) -> None:
        """Tell ``key``'s subscribers to revalidate everything every FALLBACK_SECONDS."""
        while True:
            await anyio.sleep(FALLBACK_SECONDS)
            self.hub.publish(key, [Change(CHANGE_ALL, 0)])
