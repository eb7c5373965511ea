"""The change feed (``9P2000.L.vshare.3``): changes pushed to the sessions that ask.

A session opts in with its first ``Twatch`` on a fid of an attachment; from then on it has a
:class:`Subscription` to that attachment's share, and each Twatch is a long poll answered
when changes are queued (docs/changes-feed.md has the wire form). Sources publish to the
:class:`FeedHub` by share key:

- this gateway's own sessions: after a request that changed something succeeded, the
  session describes it (:func:`describe`, from the fids it named *before* the handler ran)
  and publishes it to the other subscribers of the same share;
- fanotify on POSIX volumes (``feed_watch.py``): changes made on the host by other
  processes;
- GlusterFS upcalls (``feed_upcalls.py``): changes made by other gateways and native
  clients of the volume.

Security: a change is published under the share it was made through (or whose watched
directories saw it) and reaches only subscriptions to that share: a session never learns
a name or qid of another share. A session that lost access has its subscriptions closed.

Bounded memory: a subscription holds at most :data:`MAX_QUEUED` records, coalesced by
(path, name) (a burst of writes to one file is one record); past that the queue is
replaced by one CHANGE_ALL ("revalidate everything"), counted as an overflow.

Sequence numbers: each subscription starts at a random 63-bit number; an Rwatch carries
the next one and a Twatch must name the last one it got. Any other number (a client that
reconnected and names the seq of its old session, or one whose Rwatch was lost to a
Tflush) gets CHANGE_ALL at once: whatever it missed, it revalidates.

Hot path: sessions that did not opt in pay one attribute test per request
(``hub.active``, false while nobody subscribes anywhere).
"""

from __future__ import annotations

import errno
import secrets
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final, Protocol

import anyio
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from vshare.gateway.metrics import Timings
from vshare.protocol import (
    CHANGE_ALL,
    CHANGE_ATTR,
    CHANGE_DATA,
    CHANGE_ENTRY,
    DOTL_TRUNC,
    SETATTR_SIZE,
    Change,
    Message,
    Tclunk,
    Tfallocate,
    Tlcreate,
    Tlcreateat,
    Tlink,
    Tlopen,
    Tmkdir,
    Tmknod,
    Tremove,
    Trename,
    Trenameat,
    Tsetattr,
    Tsymlink,
    Tunlinkat,
    Twrite,
    pack_changes,
)

if TYPE_CHECKING:
    from vshare.backend.base import Node
    from vshare.gateway.fids import Fid

#: Records one subscription keeps before it overflows to CHANGE_ALL.
MAX_QUEUED: Final = 4096
_ALL: Final = Change(CHANGE_ALL, 0, "")


class Subscription:
    """One session's feed of one share: a coalescing queue and a long poll."""

    def __init__(self, hub: FeedHub, share_key: str, session_id: int) -> None:
        self.hub = hub
        self.share_key = share_key
        self.session_id = session_id
        self.seq = secrets.randbits(63) | 1  # never 0: 0 is the client's "begin"
        self._queue: dict[tuple[int, str], int] = {}  # (path, name) → kinds, in order
        self._since = 0.0  # when the oldest record queued now was published
        self._wake = anyio.Event()
        self._polling = False
        self.closed = False

    def add(self, change: Change) -> None:
        queue = self._queue
        if not queue:
            self._since = time.perf_counter()
        key = (change.path, change.name)
        kinds = queue.get(key)
        if kinds is not None:
            queue[key] = kinds | change.kinds
            self.hub.stats.coalesced += 1
        elif len(queue) >= MAX_QUEUED or (_ALL.path, _ALL.name) in queue:
            if (_ALL.path, _ALL.name) not in queue:
                self.hub.stats.overflows += 1
            queue.clear()
            queue[(_ALL.path, _ALL.name)] = CHANGE_ALL
        else:
            queue[key] = change.kinds
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._queue.clear()
        self._wake.set()

    async def poll(self, since: int, limit: int) -> tuple[int, bytes]:
        """Wait for changes; returns the next seq and the packed records (at most
        ``limit`` bytes). A ``since`` other than 0 or the last seq given: CHANGE_ALL."""
        if self._polling:
            raise OSError(errno.EBUSY, "a Twatch is already waiting on this share")
        if since == 0:  # begin: nothing to tell yet; the client learns the seq
            return self.seq, b""
        if since != self.seq:
            self.hub.stats.resyncs += 1
            self.seq = (self.seq + 1) & ((1 << 63) - 1) or 1
            data, _ = pack_changes([_ALL], limit)
            return self.seq, data
        self._polling = True
        try:
            while not self._queue and not self.closed:
                self._wake = anyio.Event()
                await self._wake.wait()
        finally:
            self._polling = False
        if self.closed:
            raise OSError(errno.EBADF, "the subscription ended")
        changes = [Change(kinds, path, name) for (path, name), kinds in self._queue.items()]
        data, n = pack_changes(changes, limit)
        if n == 0:
            raise OSError(errno.EINVAL, "count too small for one change record")
        for change in changes[:n]:
            del self._queue[(change.path, change.name)]
        stats = self.hub.stats
        stats.sent += n
        # from the first of these changes reaching the feed to the Rwatch that tells it
        stats.delivery.observe(time.perf_counter() - self._since)
        if self._queue:  # what did not fit waits for the next Twatch: its age runs on
            self._since = time.perf_counter()
        self.seq = (self.seq + 1) & ((1 << 63) - 1) or 1
        return self.seq, data


class FeedStats:
    """Counters of the feed (read by Prometheus at scrape time: plain ints, loop only)."""

    def __init__(self, hub: FeedHub) -> None:
        self.hub = hub
        self.published = 0
        self.sent = 0
        self.coalesced = 0
        self.overflows = 0
        self.resyncs = 0
        self.fallbacks = 0  # shares past their watch bound, revalidated on a timer
        self.delivery = Timings()

    def collect(self) -> Iterator[Metric]:
        for name, doc, value in (
            ("vshare_feed_changes_published", "Changes published", self.published),
            ("vshare_feed_changes_sent", "Change records sent in Rwatch", self.sent),
            ("vshare_feed_changes_coalesced", "Changes merged into a record", self.coalesced),
            ("vshare_feed_overflows", "Queues replaced by revalidate-all", self.overflows),
            ("vshare_feed_resyncs", "Twatch of a stale seq: revalidate-all", self.resyncs),
            ("vshare_feed_watch_fallbacks", "Shares not fully watched", self.fallbacks),
        ):  # fmt: skip
            family = CounterMetricFamily(name, doc)
            family.add_metric([], value)
            yield family
        gauge = GaugeMetricFamily("vshare_feed_subscriptions", "Sessions subscribed, per share")
        gauge.add_metric([], sum(len(s) for s in self.hub.by_share.values()))
        yield gauge
        watches = GaugeMetricFamily("vshare_feed_watches", "Directories watched with fanotify")
        watches.add_metric([], self.hub.watch_count())
        yield watches
        delivery = HistogramMetricFamily(
            "vshare_feed_delivery_seconds",
            "From a change reaching the feed (a request's reply, a host event read, an"
            " upcall) to the Rwatch that tells it, oldest change of each Rwatch",
        )
        delivery.add_metric([], self.delivery.buckets(), self.delivery.total)
        yield delivery


class FeedHub:
    """Subscriptions by share key, and the sources' entry point (:meth:`publish`)."""

    def __init__(self) -> None:
        self.by_share: dict[str, set[Subscription]] = {}
        #: Whether anyone subscribes at all: the one test a request pays when nobody does.
        self.active = False
        self.stats = FeedStats(self)
        #: Starts a share's host watcher (set by the gateway's watcher owner, feed_watch).
        self.watchers: WatcherOwner | None = None

    def subscribe(self, share_key: str, session_id: int, root: Node) -> Subscription:
        sub = Subscription(self, share_key, session_id)
        subs = self.by_share.setdefault(share_key, set())
        subs.add(sub)
        self.active = True
        if self.watchers is not None and len(subs) == 1:
            self.watchers.start(share_key, root)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.close()
        subs = self.by_share.get(sub.share_key)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self.by_share[sub.share_key]
            if self.watchers is not None:
                self.watchers.stop(sub.share_key)
        self.active = bool(self.by_share)

    def publish(self, share_key: str, changes: list[Change], origin: int = 0) -> None:
        """Queue ``changes`` for every subscriber of ``share_key`` but session ``origin``
        (which made them and knows)."""
        subs = self.by_share.get(share_key)
        if not subs:
            return
        self.stats.published += len(changes)
        for sub in subs:
            if sub.session_id != origin:
                for change in changes:
                    sub.add(change)

    def watch_count(self) -> int:
        return self.watchers.count() if self.watchers is not None else 0


class WatcherOwner(Protocol):
    """What the hub needs of the host watchers' owner (``feed_watch.Watchers``)."""

    def start(self, share_key: str, root: Node) -> None: ...

    def stop(self, share_key: str) -> None: ...

    def count(self) -> int: ...


# --- changes made through this gateway ----------------------------------------------------


def _where(fid: Fid) -> int | None:
    """The qid path of the directory ``fid`` was walked from (None at the share root)."""
    return None if fid.up is None else fid.up.node.qid_path


#: Of each request that adds or removes a name, the field naming the directory's fid.
_DIR_FIELD: Final[dict[type, str]] = {
    Tlcreate: "fid", Tlcreateat: "dfid", Tmkdir: "dfid", Tmknod: "dfid", Tsymlink: "fid",
    Tunlinkat: "dirfid", Tlink: "dfid",
}  # fmt: skip


def describe(fids: dict[int, Fid], msg: Message) -> tuple[str, list[Change]] | None:
    """What ``msg`` will change if it succeeds, from the fids it names now (before the
    handler runs: Tlcreate turns its directory fid into the file, Tremove ends its fid).
    None for requests that change nothing others cache."""
    t = type(msg)
    if t is Twrite or t is Tfallocate:
        fid = fids.get(msg.fid)  # type: ignore[union-attr]
        if fid is None or fid.xattr_write is not None:  # an xattr's value: told at Tclunk
            return None
        return fid.att.share.key, [Change(CHANGE_ATTR | CHANGE_DATA, fid.node.qid_path)]
    if t is Tclunk:  # an xattr set or removed takes effect here (its ctime changes)
        fid = fids.get(msg.fid)  # type: ignore[union-attr]
        if fid is None or fid.xattr_write is None:
            return None
        return fid.att.share.key, [Change(CHANGE_ATTR, fid.node.qid_path)]
    if t is Tsetattr:
        fid = fids.get(msg.fid)  # type: ignore[union-attr]
        if fid is None:
            return None
        kinds = CHANGE_ATTR | (CHANGE_DATA if msg.valid & SETATTR_SIZE else 0)  # type: ignore[union-attr]
        return fid.att.share.key, [Change(kinds, fid.node.qid_path)]
    if t is Tlopen:
        fid = fids.get(msg.fid)  # type: ignore[union-attr]
        if fid is None or not msg.flags & DOTL_TRUNC:  # type: ignore[union-attr]
            return None
        return fid.att.share.key, [Change(CHANGE_ATTR | CHANGE_DATA, fid.node.qid_path)]
    dir_field = _DIR_FIELD.get(t)
    if dir_field is not None:
        dfid = fids.get(getattr(msg, dir_field))
        if dfid is None:
            return None
        d = dfid.node.qid_path
        out = [Change(CHANGE_ENTRY, d, msg.name), Change(CHANGE_ATTR, d)]  # type: ignore[union-attr]
        if t is Tlink and (target := fids.get(msg.fid)) is not None:  # type: ignore[union-attr]
            out.append(Change(CHANGE_ATTR, target.node.qid_path))
        return dfid.att.share.key, out
    if t is Trenameat:
        old, new = fids.get(msg.olddirfid), fids.get(msg.newdirfid)  # type: ignore[union-attr]
        if old is None or new is None:
            return None
        o, n = old.node.qid_path, new.node.qid_path
        return old.att.share.key, [
            Change(CHANGE_ENTRY, o, msg.oldname),  # type: ignore[union-attr]
            Change(CHANGE_ENTRY, n, msg.newname),  # type: ignore[union-attr]
            Change(CHANGE_ATTR, o),
            Change(CHANGE_ATTR, n),
        ]
    if t in (Trename, Tremove):
        fid = fids.get(msg.fid)  # type: ignore[union-attr]
        if fid is None or (parent := _where(fid)) is None or fid.name is None:
            return None
        out = [Change(CHANGE_ENTRY, parent, fid.name), Change(CHANGE_ATTR, parent)]
        if t is Trename and (target := fids.get(msg.dfid)) is not None:  # type: ignore[union-attr]
            d = target.node.qid_path
            out += [Change(CHANGE_ENTRY, d, msg.name), Change(CHANGE_ATTR, d)]  # type: ignore[union-attr]
        return fid.att.share.key, out
    return None


def clamp_count(count: int, msize: int) -> int:
    """Bytes of records an Rwatch may carry: the client's count, within the msize."""
    return max(0, min(count, msize - 64))


__all__ = ["FeedHub", "Subscription", "WatcherOwner", "clamp_count", "describe"]
