"""What all sessions of one gateway share: backend, shares, locks, limits, metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from vshare.backend.base import Backend
from vshare.gateway.config import GatewayConfig, Share
from vshare.gateway.locks import LockTable
from vshare.gateway.metrics import Metrics
from vshare.policy import Requester
from vshare.transport import PeerIdentity

audit_log = logging.getLogger("vshare.audit")


def requester_of(identity: PeerIdentity) -> Requester:
    """The facts policy may use. Instance resolution (CID → instance) joins here later."""
    return Requester(
        address=identity.address,
        cert_fingerprint=identity.cert_fingerprint,
        uid=identity.uid,
    )


@dataclass(eq=False)
class GatewayContext:
    config: GatewayConfig
    backend: Backend
    metrics: Metrics
    locks: LockTable = field(default_factory=LockTable)
    resolve: Callable[[PeerIdentity], Requester] = requester_of
    _limiters: dict[str, anyio.CapacityLimiter] = field(default_factory=dict)

    def find_share(self, aname: str) -> Share | None:
        """The share an attach names: by name or by id (never by an empty string)."""
        if not aname:
            return None
        for share in self.config.shares:
            if aname == share.name or (share.id and aname == share.id):
                return share
        return None

    def limiter(self, share: Share) -> anyio.CapacityLimiter:
        """Bounds the backend calls in flight for one share, across all sessions."""
        limiter = self._limiters.get(share.name)
        if limiter is None:
            limiter = self._limiters[share.name] = anyio.CapacityLimiter(self.config.share_threads)
        return limiter
