"""Writers that keep losing the store's compare-and-swap race take turns, in etcd.

Every write of the etcd store commits against ``meta/rev`` (etcd.py's module note): of
the writers that read the same revision, one wins. Backoff alone does not scale with
their number. A write's window (read ``meta/``, read what it depends on, commit) is
~10-20 ms here; 120 gateways registering at once and retrying with full jitter up to 1 s
make ~240 attempts a second, so most windows hold another commit and nearly every
attempt loses: 40 % of them gave up after ``write_timeout`` (10 s) in one run.

So a writer that has lost a race joins a queue: a key ``wq/<uuid>`` (on a
lease of its own, so a writer that dies leaves the queue within ``write_timeout``); its
place is the key's create revision. While keys created before it remain, it watches the
one just before its own (etcd's lock recipe: no polling, and each key has one watcher)
and retries when that one goes (looking again only if it loses). At the front it retries
at once, and its winning
commit deletes its key in the same transaction: the next writer's turn begins with
that commit. A writer that has not lost yet does not queue: a write with no contention
costs what it did. (Joining after 2 or 3 lost races instead, with backoff between: of
200 writers at once 82-94 committed; the front of the queue kept losing to writers that
had not joined yet.)
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from typing import Any

from vshare.store._etcd_client import EtcdClient, EtcdError, EtcdUnavailable, Op, prefix_end


class Place:
    """One writer's place in the queue: join with :meth:`join`, then :meth:`wait_turn`
    before each attempt; put :meth:`leave_op` in the winning commit; :meth:`close` in
    every case."""

    def __init__(self, client: EtcdClient, prefix: bytes, key: bytes, lease: int, at: int):
        self._client = client
        self._prefix = prefix
        self.key = key
        self._lease = lease
        self._at = at  # the key's create revision

    @classmethod
    def join(cls, client: EtcdClient, prefix: bytes, ttl: float) -> Place:
        """Take a place at the back (two etcd writes: a lease and the key)."""
        lease, _ = client.lease_grant(max(1, math.ceil(ttl)))
        key = prefix + b"wq/" + uuid.uuid4().hex.encode()
        try:
            _, at, _ = client.txn([], [Op.put(key, b"", lease=lease)])
        except BaseException:
            _revoke(client, lease)
            raise
        return cls(client, prefix, key, lease, at)

    def wait_turn(self, deadline: float) -> None:
        """Wait until the writer queued just before this one has gone, none being left
        before it (or until ``deadline``, ``time.monotonic``). When that one goes this
        one is at the front, unless that one died or gave up with others still ahead:
        then its attempt may lose, and the next wait looks again."""
        start = self._prefix + b"wq/"
        while True:
            at, ahead = self._client.range(
                start, prefix_end(start), keys_only=True, max_create_revision=self._at - 1
            )
            left = deadline - time.monotonic()
            if not ahead or left <= 0:
                return
            before = max(ahead, key=lambda kv: kv.create_revision).key
            stream = self._client.watch(before, at + 1, quiet=left)
            try:
                for message in stream:  # ends after ``left`` seconds of quiet
                    if any(e.kind == "delete" for e in message.events):
                        return
                    if message.canceled or message.compact_revision:
                        break  # look again
                else:
                    return  # quiet until the deadline, or the stream broke: try anyway
            finally:
                stream.close()

    def leave_op(self) -> dict[str, Any]:
        """The operation that leaves the queue, for the winning commit."""
        return Op.delete(self.key)

    def close(self) -> None:
        """Leave the queue (if the commit did not) and drop the lease; quietly."""
        _revoke(self._client, self._lease)


def _revoke(client: EtcdClient, lease: int) -> None:
    with contextlib.suppress(EtcdError, EtcdUnavailable, RuntimeError):
        client.lease_revoke(lease)
