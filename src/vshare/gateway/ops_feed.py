"""Twatch, the change feed's long poll (``9P2000.L.vshare.3``; see feed.py).

A session's first Twatch on a fid subscribes it to the fid's share; the subscriptions end
with the session, at Tversion (every fid goes) and when the session loses access.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from vshare.gateway.feed import Subscription, clamp_count
from vshare.gateway.ops_base import OperationsBase
from vshare.protocol import Message, Rwatch, Twatch


class FeedOps(OperationsBase):
    #: The session's subscriptions by share key (made at its first Twatch).
    _subs: dict[str, Subscription] | None = None

    async def watch(self, msg: Twatch) -> Message:
        fid = self._fid(msg.fid)
        key = fid.att.share.key
        if self._subs is None:
            self._subs = {}
        sub = self._subs.get(key)
        if sub is None:
            sub = self._subs[key] = self.ctx.feed.subscribe(key, self.session_id, fid.att.root)
        seq, data = await sub.poll(msg.seq, clamp_count(msg.count, self.msize))
        return Rwatch(seq, data)

    def end_feed(self) -> None:
        """End the session's subscriptions: a Twatch waiting gets EBADF."""
        if self._subs:
            for sub in self._subs.values():
                self.ctx.feed.unsubscribe(sub)
            self._subs.clear()

    async def close_all(self, pause: Callable[[], Awaitable[None]] | None = None) -> None:
        self.end_feed()
        await super().close_all(pause)
