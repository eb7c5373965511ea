"""What all sessions of one gateway share: backend, shares, instances, locks, limits,
metrics."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import anyio

from vshare.backend.base import Backend
from vshare.gateway.buffers import BufferPool
from vshare.gateway.config import GatewayConfig, Share
from vshare.gateway.instances import InstanceTable
from vshare.gateway.locks import LockTable
from vshare.gateway.metrics import Metrics
from vshare.gateway.quota import ShareUsage
from vshare.policy import Instance, InstanceRegistry, Requester
from vshare.protocol import IOHDRSZ
from vshare.transport import PeerIdentity

audit_log = logging.getLogger("vshare.audit")


def requester_of(identity: PeerIdentity, instance: Instance | None = None) -> Requester:
    """The facts policy may use: the instance the identity resolved to (and its tenant),
    and each transport fact only from the transport that vouches for it — an address
    from tcp/tls, a certificate from tls, a uid from a Unix socket. Nothing the peer says
    in 9P (``uname``, ``n_uname``, attach options) is an input."""
    kind = identity.kind
    return Requester(
        instance_id=instance.uuid if instance is not None else None,
        tenant=(instance.tenant or None) if instance is not None else None,
        address=identity.address if kind in ("tcp", "tls") else None,
        cert_fingerprint=identity.cert_fingerprint if kind == "tls" else None,
        cert_cn=identity.cert_cn if kind == "tls" else None,
        uid=identity.uid if kind == "unix" else None,
    )


@dataclass(eq=False)
class GatewayContext:
    config: GatewayConfig
    backend: Backend
    metrics: Metrics
    locks: LockTable = field(default_factory=LockTable)
    #: identity → instance; the gateway's InstanceTable (later: the control-plane store).
    instances: InstanceRegistry = field(default_factory=InstanceTable)
    _limiters: dict[str, anyio.CapacityLimiter] = field(default_factory=dict)
    #: Tread buffers of the largest payload any session may ask for.
    read_buffers: BufferPool = field(init=False)

    #: The shares served now, by :attr:`Share.key`; replaced whole by :meth:`set_shares`.
    shares: dict[str, Share] = field(init=False)
    _usage: dict[str, ShareUsage] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.read_buffers = BufferPool(self.config.msize - IOHDRSZ, keep=32)
        self.shares = {s.key: s for s in self.config.shares}
        self.metrics.watch_backend(self.backend)

    def set_shares(self, shares: Iterable[Share]) -> None:
        """Serve these shares from now on (attaches see them at once; the gateway applies
        them to live sessions, see ``Gateway.set_shares``)."""
        self.shares = {s.key: s for s in shares}
        for key in set(self._usage) - set(self.shares):
            del self._usage[key]

    def usage(self, share: Share) -> ShareUsage:
        """The usage of a share (one object per share key, kept across rule changes)."""
        usage = self._usage.get(share.key)
        if usage is None:
            usage = self._usage[share.key] = ShareUsage()
        return usage

    def resolve(self, identity: PeerIdentity) -> Requester:
        """Who is asking, for an attach: identity → instance → tenant (the attach audit
        line records the instance and tenant of the Requester)."""
        return requester_of(identity, self.instances.resolve(identity))

    def find_share(self, aname: str) -> Share | None:
        """The share an attach names: by name or by id (never by an empty string)."""
        if not aname:
            return None
        for share in self.shares.values():
            if aname == share.name or (share.id and aname == share.id):
                return share
        return None

    def limiter(self, share: Share) -> anyio.CapacityLimiter:
        """Bounds the backend calls in flight for one share, across all sessions."""
        limiter = self._limiters.get(share.name)
        if limiter is None:
            limiter = self._limiters[share.name] = anyio.CapacityLimiter(self.config.share_threads)
        return limiter
