"""The change feed's volume source: changes that other clients of the volume made (another
gateway, GlusterFS's native client), as the backend tells them
(:meth:`Backend.watch_changes`; GlusterFS: its upcalls).

One task per watched share (started by ``feed_watch.Watchers`` for a volume this host
cannot watch itself) registers with the backend and publishes what it is told to the
share's subscribers: CHANGE_ATTR|CHANGE_DATA of each qid path (an upcall says that an
object changed, not how, nor which name of a directory: for a directory the client then
drops its names). The backend only tells of objects it knows to be below the share's root
(``backend/gluster/_volumes.py``: ``Ancestry``), so a session never learns a qid of
another share; names are never sent from here.

The backend calls on its own threads (gfapi's): the callback only queues the qids and
wakes this task through an eventfd; a queue past :data:`MAX_PENDING` becomes one
CHANGE_ALL. A volume that tells nothing (GlusterFS without ``features.cache-invalidation``)
gets the fallback: CHANGE_ALL every ``FALLBACK_SECONDS``, coherent within that time.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import anyio

from vshare.backend.base import Node
from vshare.protocol import CHANGE_ALL, CHANGE_ATTR, CHANGE_DATA, Change

if TYPE_CHECKING:
    from vshare.gateway.feed_watch import Watchers

log = logging.getLogger("vshare.gateway")

#: qids queued between two wake-ups before the share is told to revalidate everything.
MAX_PENDING: Final = 4096
#: A share that cannot be fully watched is told to revalidate everything this often.
FALLBACK_SECONDS: Final = 1.0


class _Pending:
    """qids the backend told of, waiting for the event loop (filled on other threads)."""

    def __init__(self) -> None:
        self.efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._lock = threading.Lock()
        self._qids: dict[int, None] = {}  # in order, each once
        self._overflow = False

    def add(self, qids: list[int]) -> None:
        with self._lock:
            if len(self._qids) + len(qids) > MAX_PENDING:
                self._overflow = True
                self._qids.clear()
            elif not self._overflow:
                self._qids.update(dict.fromkeys(qids))
        os.eventfd_write(self.efd, 1)

    def take(self) -> list[Change]:
        with self._lock:
            qids, self._qids = self._qids, {}
            overflow, self._overflow = self._overflow, False
        if overflow:
            return [Change(CHANGE_ALL, 0)]
        return [Change(CHANGE_ATTR | CHANGE_DATA, q) for q in qids]


async def follow_volume(owner: Watchers, key: str, root: Node, scope: anyio.CancelScope) -> None:
    """Publish to ``key``'s subscribers what the backend tells of objects below ``root``
    until ``scope`` is cancelled (the share's last subscriber went)."""
    pending = _Pending()
    stop: Callable[[], None] | None = None

    def register() -> None:  # sets ``stop`` even if the task is cancelled meanwhile
        nonlocal stop
        stop = owner.backend.watch_changes(root, pending.add)

    try:
        with scope:
            # May ask the volume's options (a round trip): not on the event loop.
            await anyio.to_thread.run_sync(register)
            if stop is None:
                owner.hub.stats.fallbacks += 1
                log.warning(
                    "change feed: share %s: the volume tells no changes made by other"
                    " clients: its subscribers revalidate every %g s",
                    key, FALLBACK_SECONDS,
                )  # fmt: skip
                await owner.fallback(key)
                return
            while True:
                await anyio.wait_readable(pending.efd)
                try:
                    os.eventfd_read(pending.efd)
                except BlockingIOError:
                    continue
                changes = pending.take()
                if changes:
                    owner.hub.publish(key, changes)
    finally:
        if stop is not None:
            stop()
        os.close(pending.efd)
        if owner.scopes.get(key) is scope:
            del owner.scopes[key]
