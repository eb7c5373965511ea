"""The fleet store: the control plane's state in etcd (3.4 or later), for many gateways.

Strategy and invariants:

- **Client.** etcd's v3 JSON gateway over HTTP (``_etcd_client``): synchronous,
  thread-safe, no protobuf. ``etcd://h1:2379,h2:2379/prefix`` names the members and the key
  prefix (default ``/vshare/``); several stores can share one etcd under different prefixes.
- **One revision, by compare-and-swap.** The store keeps its own revision in
  ``<prefix>meta/rev`` (not etcd's revision, which also moves for gateway heartbeats and
  for other users of the cluster). Every write is optimistic: read ``meta/rev`` (and its
  etcd ``mod_revision``), read whatever the write depends on *at that same etcd revision*,
  then commit in one etcd transaction guarded by "``meta/rev`` was not modified since".
  The transaction writes the data, ``meta/rev + 1`` and the change-feed entry together, or
  nothing. A write that loses the race queues behind the writers that lost before it
  and retries in turn, up to ``write_timeout`` (``_etcd_queue``). Backoff alone
  collapses with many writers: with full jitter doubling to 1 s, 200 writers at once — a
  fleet registering — committed 28-32 in 10 s and failed the rest; queued, all 200 in
  8-10 s (docs/scale.md).
  Since every write modifies ``meta/rev``, the guard makes writes serializable:
  uniqueness rules (share names, live rules, identities, token hashes) and quotas (a
  tenant's usage is a scan of ``share/`` in the same view) are checked by reads and
  cannot be raced past — two API servers creating the same share name at once:
  one commits, the other retries, sees the name, and gets ``Conflict`` (409).
- **Keys** (under the prefix): ``share/<id>``, ``sharename/<name>`` → id; ``rule/<id>``
  and ``rulesof/<share id>/<rule id>`` (the same JSON, so a share's rules are one range
  read and a share's deletion removes them with one range delete); ``inst/<uuid>``,
  ``ident/<kind>/<value>`` → uuid; ``token/<name>``, ``tokenhash/<hash>`` → name;
  ``quota/<tenant>`` (``quota/`` alone: the defaults);
  ``gw/<id>`` (what a gateway says about itself), ``seen/<id>`` (its last heartbeat and
  ttl), ``alive/<id>`` (attached to the gateway's lease); ``chg/<revision>`` (the changes of
  one revision, in order); ``meta/rev``, ``meta/compacted``. Values are the JSON of
  ``vshare.store._codec``, the same text SQLite stores.
- **Change feed.** ``changes_since`` reads ``chg/`` at one etcd revision. Each write drops
  feed entries older than ``keep_revisions``; ``compact`` drops more. etcd's own history
  is not the feed: run etcd with ``--auto-compaction-retention`` as usual.
- **Waiting.** One background thread per store object watches ``meta/rev`` (an etcd watch
  over a streaming HTTP response) and wakes ``wait_for_change``. A broken watch (etcd
  restarted, a member lost) resumes from the last etcd revision it saw; if etcd has
  compacted that revision away, it re-reads ``meta/rev`` and watches from there (a
  resync: nothing is missed, because the revision is a counter and the feed is in the
  store). Waiters also re-read the revision every 2 s (every 0.25 s while the watch is
  down), so a silently dead stream costs latency, never a missed change.
- **Gateways.** A heartbeat registers ``gw/<id>`` (a store write only when the record
  changes), renews the gateway's etcd lease (``ttl`` rounded up to whole seconds; etcd's
  floor is 1.5 election timeouts) and writes ``seen/<id>`` and ``alive/<id>`` under that
  lease — etcd writes that leave the store's revision alone. A gateway is healthy while its
  lease lives and its last heartbeat is younger than its ttl; killed with -9, its lease
  expires and it turns unhealthy within the ttl. It stays listed until removed (the Store
  contract). Closing the store revokes its leases: a gateway that stops cleanly shows
  unhealthy at once.
- **Transactions** stay within etcd's ``--max-txn-ops`` (128 by default) except for deleting
  a share with more than ~120 rules in one step, which needs a larger limit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from vshare.store._codec import dumps, load_as, loads
from vshare.store._errors import NotFound, StoreUnavailable
from vshare.store._etcd_client import (
    Compare,
    EtcdClient,
    EtcdError,
    EtcdUnavailable,
    KeyValue,
    Op,
    WatchStream,
    prefix_end,
)
from vshare.store._etcd_queue import Place
from vshare.store._etcd_view import COMPACTED, REV, EtcdTx, EtcdView, Retry, chg_key
from vshare.store._ledger import LedgerStore, Tx, View, check_compact, check_feed, snapshot_of
from vshare.store._records import (
    Change,
    GatewayRecord,
    GatewayStatus,
    Snapshot,
)

__all__ = ["DEFAULT_PREFIX", "EtcdStore"]

log = logging.getLogger("vshare.store")

DEFAULT_PREFIX: Final = "/vshare/"
_T = TypeVar("_T")


class EtcdStore(LedgerStore):
    """A :class:`Store` in etcd (see the module note).

    Args:
        endpoints: ``host:port`` of the etcd members.
        prefix: the key prefix of this store's data (ends with ``/``).
        timeout: seconds for each etcd request.
        wait: seconds to keep trying (with backoff) when etcd is unreachable on open.
        keep_revisions: how many recent revisions the change feed keeps.
        write_timeout: seconds a write keeps retrying lost compare-and-swap races.

    Raises:
        StoreUnavailable: etcd stayed unreachable for ``wait`` seconds, or refused.
        ValueError: a parameter is out of range.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 5.0,
        wait: float = 0.0,
        keep_revisions: int = 10_000,
        write_timeout: float = 10.0,
    ) -> None:
        if not endpoints:
            raise ValueError("etcd store: no endpoints")
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise ValueError(f"etcd store: prefix {prefix!r} must start and end with '/'")
        if not timeout > 0 or not math.isfinite(timeout):
            raise ValueError("etcd store: timeout must be more than 0 seconds")
        if keep_revisions < 1:
            raise ValueError("etcd store: keep_revisions must be at least 1")
        self.endpoints = tuple(endpoints)
        self.prefix = prefix
        self.label = f"etcd://{','.join(self.endpoints)}{prefix.rstrip('/') or ''}"
        self.keep_revisions = keep_revisions
        self.write_timeout = write_timeout
        self._prefix = prefix.encode()
        self._client = EtcdClient(self.endpoints, timeout=timeout)
        self._closed = False
        self._cond = threading.Condition()
        self._known = 0  # the highest store revision seen (watch or own writes)
        self._watching = False
        self._watcher: threading.Thread | None = None
        self._stream: WatchStream | None = None
        self._watch_open = threading.Event()  # cleared: the watcher holds off (tests)
        self._watch_open.set()
        self._stop = threading.Event()
        self._leases: dict[str, tuple[int, int]] = {}  # gateway id → (lease, wanted ttl)
        self._leases_lock = threading.Lock()
        #: How often the watch has been re-established, and how often from scratch
        #: because etcd had compacted the revision it would have resumed from (counted
        #: once the fresh read is published, so a reader of the count sees its result).
        self.watch_reconnects = 0
        self.watch_resyncs = 0
        try:
            self._connect(wait)
        except BaseException:
            self._client.close()
            raise

    def __repr__(self) -> str:
        return f"EtcdStore({self.label!r})"

    def _connect(self, wait: float) -> None:
        deadline = time.monotonic() + max(0.0, wait)
        delay = 0.2
        while True:
            try:
                self._client.range(self._prefix + REV.encode())
                return
            except EtcdUnavailable as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreUnavailable(
                        f"store {self.label}: cannot reach etcd"
                        + (f" (tried for {wait:g} s)" if wait > 0 else "")
                        + f": {exc}"
                    ) from None
                pause = min(delay, left)
                log.warning(
                    "store %s: cannot reach etcd (%s); retrying in %.1f s", self.label, exc, pause
                )
                time.sleep(pause)
                delay = min(delay * 2, 5.0)
            except EtcdError as exc:
                raise StoreUnavailable(f"store {self.label}: etcd: {exc.message}") from None

    # --- plumbing ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable(f"store {self.label} is closed")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except EtcdUnavailable as exc:
            if self._closed:
                raise StoreUnavailable(f"store {self.label} is closed") from None
            raise StoreUnavailable(f"store {self.label}: {exc}") from None
        except EtcdError as exc:
            raise StoreUnavailable(f"store {self.label}: etcd: {exc.message}") from None

    def _read(self, fn: Callable[[View], _T]) -> _T:
        return self._reading(fn)

    def _write(self, fn: Callable[[Tx], _T]) -> _T:
        return self._writing(fn)

    def _reading(self, fn: Callable[[EtcdView], _T]) -> _T:
        """``fn`` over one consistent view (retried if etcd compacts under it)."""
        for _ in range(5):
            self._check_open()
            with self._errors():
                try:
                    return fn(EtcdView(self._client, self._prefix))
                except Retry:
                    continue
        raise StoreUnavailable(f"store {self.label}: etcd keeps compacting under a read")

    def _writing(self, fn: Callable[[EtcdTx], _T]) -> _T:
        """``fn`` builds a write from what it reads; commit it atomically, retrying lost
        races (see the module note). ``fn`` may raise to abort (nothing is written)."""
        deadline = time.monotonic() + self.write_timeout
        place: Place | None = None  # in the queue of writers that lost a race
        try:
            while True:
                self._check_open()
                with self._errors():
                    if place is not None:
                        place.wait_turn(deadline)
                    try:
                        tx = EtcdTx(self._client, self._prefix)
                        result = fn(tx)
                    except Retry:
                        continue
                    if not tx.ops and not tx.changes:
                        return result
                    ops = list(tx.ops)
                    if tx.changes:
                        ops.append(Op.put(tx.key(REV), str(tx.revision).encode()))
                        ops.append(
                            Op.put(tx.key(chg_key(tx.revision)), json.dumps(tx.changes).encode())
                        )
                        upto = tx.revision - self.keep_revisions
                        if upto > tx.compacted:
                            ops += self._trim_ops(tx, upto)
                    if place is not None:
                        ops.append(place.leave_op())  # the next writer's turn begins
                    guard = Compare.mod_revision(tx.key(REV), tx.rev_mod)
                    won, _, _ = self._client.txn([guard], ops)
                    if won:
                        if tx.changes:
                            self._publish(tx.revision)
                        return result
                    if time.monotonic() > deadline:
                        raise StoreUnavailable(
                            f"store {self.label}: too many concurrent writers"
                            f" (no commit for {self.write_timeout:g} s)"
                        )
                    if place is None:
                        place = Place.join(self._client, self._prefix, self.write_timeout)
        finally:
            if place is not None:
                place.close()

    @staticmethod
    def _trim_ops(tx: EtcdTx, upto: int) -> list[dict[str, Any]]:
        """Drop the feed up to and including revision ``upto``."""
        return [
            Op.delete(tx.key("chg/"), tx.key(chg_key(upto + 1))),
            Op.put(tx.key(COMPACTED), str(upto).encode()),
        ]

    # --- gateways -------------------------------------------------------------------------

    def heartbeat(self, gateway: GatewayRecord, ttl_seconds: float) -> GatewayStatus:
        if not ttl_seconds > 0 or not math.isfinite(ttl_seconds):
            raise ValueError("a gateway's ttl must be more than 0 seconds")
        data = dumps(gateway.registration())  # the load goes with the heartbeat, below

        def register(tx: EtcdTx) -> None:
            if tx.text(f"gw/{gateway.id}") != data:
                tx.put(f"gw/{gateway.id}", data)
                tx.change("gateway", gateway.id, "put", data)

        self._writing(register)
        self._check_open()
        with self._errors():
            lease, replaced = self._lease(gateway.id, max(1, math.ceil(ttl_seconds)))
            now = time.time()
            seen = json.dumps(
                {
                    "last_seen": now,
                    "ttl": float(ttl_seconds),
                    "sessions": gateway.sessions,
                    "requests_in_flight": gateway.requests_in_flight,
                }
            ).encode()
            self._client.txn(
                [],
                [
                    Op.put(self._prefix + f"seen/{gateway.id}".encode(), seen),
                    Op.put(self._prefix + f"alive/{gateway.id}".encode(), b"", lease=lease),
                ],
            )
        if replaced:
            # Only now: revoking a lease deletes the keys still attached to it.
            self._revoke_quietly(replaced)
        return GatewayStatus(
            gateway=gateway,
            last_seen=datetime.fromtimestamp(now, UTC),
            ttl_seconds=float(ttl_seconds),
            healthy=True,
        )

    def _lease(self, gateway_id: str, ttl: int) -> tuple[int, int]:
        """This store's live lease for the gateway, renewed (or a new one); returns it and
        the lease it replaces (0: none), for the caller to revoke once the keys moved."""
        with self._leases_lock:
            held = self._leases.get(gateway_id)
        if held is not None and held[1] == ttl and self._client.lease_keepalive(held[0]) > 0:
            return held[0], 0
        lease, _granted = self._client.lease_grant(ttl)
        with self._leases_lock:
            self._leases[gateway_id] = (lease, ttl)
        return lease, 0 if held is None else held[0]

    def _revoke_quietly(self, lease: int) -> None:
        with contextlib.suppress(EtcdError, EtcdUnavailable, RuntimeError):
            self._client.lease_revoke(lease)

    def list_gateways(self) -> list[GatewayStatus]:
        def read(view: EtcdView) -> list[tuple[KeyValue, KeyValue | None, bool]]:
            records = view.scan("gw/")
            seen = {kv.key.rsplit(b"/", 1)[-1]: kv for kv in view.scan("seen/")}
            alive = {kv.key.rsplit(b"/", 1)[-1] for kv in view.scan("alive/")}
            out = []
            for kv in records:
                gid = kv.key.rsplit(b"/", 1)[-1]
                out.append((kv, seen.get(gid), gid in alive))
            return out

        now = time.time()
        statuses = []
        for kv, seen, alive in self._reading(read):
            last_seen, ttl, load = 0.0, 0.0, (0, 0)
            if seen is not None:
                info = json.loads(seen.value)
                last_seen, ttl = float(info["last_seen"]), float(info["ttl"])
                load = int(info.get("sessions", 0)), int(info.get("requests_in_flight", 0))
            statuses.append(
                GatewayStatus(
                    gateway=load_as(GatewayRecord, kv.value).with_load(*load),
                    last_seen=datetime.fromtimestamp(last_seen, UTC),
                    ttl_seconds=ttl,
                    healthy=alive and seen is not None and now - last_seen < ttl,
                )
            )
        return statuses

    def remove_gateway(self, gateway_id: str) -> None:
        def build(tx: EtcdTx) -> None:
            if tx.get(f"gw/{gateway_id}") is None:
                raise NotFound(f"gateway {gateway_id!r} not found")
            tx.delete(f"gw/{gateway_id}")
            tx.delete(f"seen/{gateway_id}")
            tx.delete(f"alive/{gateway_id}")
            tx.change("gateway", gateway_id, "delete")

        self._writing(build)
        with self._leases_lock:
            held = self._leases.pop(gateway_id, None)
        if held is not None:
            self._revoke_quietly(held[0])

    # --- revision and change feed ---------------------------------------------------------

    def revision(self) -> int:
        return self._reading(lambda v: v.meta()[0])

    def changes_since(self, revision: int) -> list[Change]:
        def read(view: EtcdView) -> list[Change]:
            current, compacted, _ = view.meta()
            check_feed(revision, current, compacted)
            start = view.key(chg_key(revision + 1))
            try:
                _, kvs = view.client.range(start, prefix_end(view.key("chg/")), revision=view.at)
            except EtcdError as exc:
                if exc.compacted:
                    raise Retry from None
                raise
            changes = []
            for kv in kvs:
                rev = int(kv.key.rsplit(b"/", 1)[-1])
                for kind, key, op, data in json.loads(kv.value):
                    record = None if data is None else loads(kind, data)
                    changes.append(Change(revision=rev, kind=kind, key=key, op=op, record=record))
            return changes

        return self._reading(read)

    def wait_for_change(self, revision: int, timeout: float) -> int:
        deadline = time.monotonic() + max(0.0, timeout)
        self._start_watcher()
        current = self.revision()
        while current <= revision:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with self._cond:
                self._cond.wait_for(
                    lambda: self._known > revision or self._closed,
                    min(remaining, 2.0 if self._watching else 0.25),
                )
                known = self._known
            self._check_open()
            if known > revision:
                return known
            current = self.revision()
        return current

    def compact(self, revision: int) -> None:
        def build(tx: EtcdTx) -> None:
            check_compact(revision, tx.revision - 1)
            if revision > tx.compacted:
                tx.ops += self._trim_ops(tx, revision)

        self._writing(build)

    def snapshot(self) -> Snapshot:
        return self._reading(lambda v: snapshot_of(v.meta()[0], v, v.every_rule()))

    # --- the watch ------------------------------------------------------------------------

    def _publish(self, revision: int) -> None:
        with self._cond:
            if revision > self._known:
                self._known = revision
                self._cond.notify_all()

    def _start_watcher(self) -> None:
        with self._cond:
            if self._watcher is not None or self._closed:
                return
            self._watcher = threading.Thread(
                target=self._watch_loop, name=f"etcd-watch {self.label}", daemon=True
            )
            self._watcher.start()

    def _watch_loop(self) -> None:
        key = self._prefix + REV.encode()
        resume = 0  # the etcd revision to resume from; 0: read meta/rev first
        resyncing = False  # counted once the fresh read is published, not before
        pause = 0.1
        while not self._stop.is_set():
            self._watch_open.wait()
            if self._stop.is_set():
                return
            try:
                if not resume:
                    at, kvs = self._client.range(key)
                    self._publish(int(kvs[0].value) if kvs else 0)
                    resume = at + 1
                    if resyncing:
                        self.watch_resyncs += 1
                        resyncing = False
                stream = self._client.watch(key, resume)
                with self._cond:
                    self._stream = stream
                if self._stop.is_set() or not self._watch_open.is_set():
                    stream.close()
                    continue
                for message in stream:
                    if message.created:
                        with self._cond:
                            self._watching = True
                        pause = 0.1
                    if message.compact_revision:
                        # etcd no longer has the revision we resume from: read afresh.
                        log.info(
                            "store %s: watch resumes after compaction at %d (resync)",
                            self.label,
                            message.compact_revision,
                        )
                        resyncing = True
                        resume = 0
                        break
                    if message.canceled:
                        resume = 0
                        break
                    for event in message.events:
                        resume = event.revision + 1
                        if event.kind == "put":
                            self._publish(int(event.value))
            except (EtcdUnavailable, EtcdError, OSError, ValueError) as exc:
                log.debug("store %s: watch: %s", self.label, exc)
            finally:
                with self._cond:
                    was = self._watching
                    self._watching = False
                    self._stream = None
            if self._stop.is_set():
                return
            self.watch_reconnects += 1
            if was:
                log.warning("store %s: watch lost; reconnecting", self.label)
            self._stop.wait(pause)
            pause = min(pause * 2, 2.0)

    def pause_watch(self) -> None:
        """Drop the watch and hold off reconnecting until :meth:`resume_watch` (tests: it
        lets a test change and compact etcd while this store is not watching)."""
        self._watch_open.clear()
        with self._cond:
            stream = self._stream
        if stream is not None:
            stream.close()

    def resume_watch(self) -> None:
        self._watch_open.set()

    @property
    def seen_revision(self) -> int:
        """The highest store revision this object has seen (from its watch or its own
        writes), without asking etcd."""
        with self._cond:
            return self._known

    @property
    def watching(self) -> bool:
        """Whether the watch is established right now."""
        with self._cond:
            return self._watching

    # --- life cycle -----------------------------------------------------------------------

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            self._watch_open.set()
            stream = self._stream
            self._cond.notify_all()
        if stream is not None:
            stream.close()
        with self._leases_lock:
            leases = [lease for lease, _ in self._leases.values()]
            self._leases.clear()
        for lease in leases:
            self._revoke_quietly(lease)
        if self._watcher is not None:
            self._watcher.join(timeout=5.0)
        self._client.close()
