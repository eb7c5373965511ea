"""What all sessions of one gateway share: backend, shares, instances, locks, budgets,
metrics.

Budgets (see "Resources are budgets, per tenant" in DESIGN.md): each resource a peer
controls — fids, sessions, bytes of partial frames, bytes of replies queued, locks — is a
:class:`Budget` with a limit per session, per identity (:func:`identity_key`: the instance,
else the transport's strongest fact) and in total. A session charges its use to its own
:class:`Account`; a charge over any of the three limits is refused, counted (by scope) and
logged with the offender's identity and session, and the caller answers the errno of that
budget or waits, as it says. Accounts are charged and refunded on the event loop only.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

import anyio

from vshare.backend.base import Backend
from vshare.gateway.buffers import BufferPool
from vshare.gateway.config import GatewayConfig, Share
from vshare.gateway.feed import FeedHub
from vshare.gateway.instances import InstanceTable
from vshare.gateway.locks import LockTable
from vshare.gateway.loop_share import LoopShare
from vshare.gateway.metrics import Metrics
from vshare.gateway.quota import ShareUsage
from vshare.gateway.workers import ShareWorkers, Workers
from vshare.policy import Instance, InstanceRegistry, Requester
from vshare.protocol import IOHDRSZ
from vshare.transport import PeerIdentity

audit_log = logging.getLogger("vshare.audit")
log = logging.getLogger("vshare.gateway")
#: Refusals of one budget to one identity are logged at most once per this many seconds.
_LOG_EVERY: Final = 10.0
#: No limit (a budget without a per-session or total bound).
UNLIMITED: Final = 1 << 62
#: Threads for the backend calls of every share together (each share is also bound by
#: ``share_threads``); anyio's default pool, which this replaces, had 40.
WORKER_THREADS: Final = 64


def identity_key(identity: PeerIdentity, instance: Instance | None) -> str:
    """Who a budget charges: the instance an identity resolved to, else the transport fact
    that stands for one peer (a CID, a VM's socket, a uid, an address or certificate).
    Two connections from one VM share one key whatever port they come from."""
    if instance is not None:
        return f"instance {instance.uuid}"
    kind = identity.kind
    if kind == "vsock":
        return f"vsock cid={identity.cid}"
    if kind == "hvsock":
        return f"hvsock {identity.socket_path}"
    if kind == "unix":
        return f"unix uid={identity.uid}"
    if kind == "tls" and identity.cert_fingerprint:
        return f"cert {identity.cert_fingerprint}"
    return f"ip {identity.address}"


class Budget:
    """One resource, bounded per session, per identity and in total (see the module
    docstring); the use and refusals are exported as metrics (``Metrics.watch_budgets``)."""

    def __init__(self, name: str, per_session: int, per_identity: int, total: int) -> None:
        self.name = name
        self.limits = {"session": per_session, "identity": per_identity, "total": total}
        self.used = 0
        self.by_identity: dict[str, int] = {}
        self.refusals = {"session": 0, "identity": 0, "total": 0}
        self._waiters: dict[str, anyio.Event] = {}
        self._logged: dict[tuple[str, str], float] = {}  # (identity, scope) → last logged

    def account(self, identity: str, session: int, who: str = "") -> Account:
        """A session's account (``who``: the peer, for log lines)."""
        return Account(self, identity, session, who or identity)

    def over(self, account: Account, n: int) -> str | None:
        """The scope whose limit ``n`` more would pass, or None."""
        if account.used + n > self.limits["session"]:
            return "session"
        if self.by_identity.get(account.identity, 0) + n > self.limits["identity"]:
            return "identity"
        if self.used + n > self.limits["total"]:
            return "total"
        return None

    def refused(self, account: Account, scope: str, n: int) -> None:
        self.refusals[scope] += 1
        now = time.monotonic()
        key = (account.identity, scope)
        if now - self._logged.get(key, -_LOG_EVERY) < _LOG_EVERY:
            return
        self._logged[key] = now
        if len(self._logged) > 4096:  # forget the oldest: identities come and go
            for key in sorted(self._logged, key=self._logged.__getitem__)[:2048]:
                del self._logged[key]
        if scope == "session":
            in_use = account.used
        elif scope == "identity":
            in_use = self.by_identity.get(account.identity, 0)
        else:
            in_use = self.used
        limit = self.limits[scope]
        fields: dict[str, object] = {"event": "budget-refused", "budget": self.name, "scope": scope}
        fields.update(session=account.session, identity=account.identity, peer=account.who)
        fields.update(in_use=in_use, limit=limit)
        log.warning(
            "budget %s: refused %d more to session %d of %s: %d in use, the %s limit is %d",
            *(self.name, n, account.session, account.who, in_use, scope, limit),
            extra={"fields": fields},
        )

    def _moved(self, identity: str, n: int) -> None:
        self.used += n
        left = self.by_identity.get(identity, 0) + n
        if left:
            self.by_identity[identity] = left
        else:
            self.by_identity.pop(identity, None)
        if n < 0:
            event = self._waiters.pop(identity, None)
            if event is not None:
                event.set()

    def freed(self, identity: str) -> anyio.Event:
        """An event set the next time the identity's use goes down (any of its sessions)."""
        event = self._waiters.get(identity)
        if event is None:
            event = self._waiters[identity] = anyio.Event()
        return event


class Account:
    """One session's use of one :class:`Budget`."""

    __slots__ = ("budget", "identity", "session", "used", "who")

    def __init__(self, budget: Budget, identity: str, session: int, who: str) -> None:
        self.budget = budget
        self.identity = identity
        self.session = session
        self.who = who
        self.used = 0

    def fits(self, n: int = 1) -> bool:
        """Whether ``n`` more fits; False is a refusal (counted and logged). Charges nothing."""
        scope = self.budget.over(self, n)
        if scope is not None:
            self.budget.refused(self, scope, n)
            return False
        return True

    def take(self, n: int = 1) -> bool:
        """Charge ``n``; False (counted and logged) if that would pass a limit."""
        if not self.fits(n):
            return False
        self.force(n)
        return True

    def force(self, n: int) -> None:
        """Charge ``n`` whatever the limits (use that is already there: a partial frame)."""
        self.used += n
        self.budget._moved(self.identity, n)

    def give(self, n: int = 1) -> None:
        n = min(n, self.used)
        if n > 0:
            self.used -= n
            self.budget._moved(self.identity, -n)

    def close(self) -> None:
        """Give everything back (the session ended)."""
        self.give(self.used)

    async def wait_until_fits(self, n: int) -> None:
        """Wait until ``n`` more fits (or this session uses nothing: one request is always
        let through alone, however big). Charges nothing."""
        budget = self.budget
        while self.used and budget.over(self, n) is not None:
            await budget.freed(self.identity).wait()


@dataclass(frozen=True, slots=True)
class Limits:
    """The budgets' limits, from the config and the process's file descriptor limit."""

    nofile: int  # RLIMIT_NOFILE (soft, after raising it to the hard limit)
    sessions: int
    sessions_per_identity: int
    fids: int  # in total
    fids_per_identity: int
    fids_per_session: int
    partial_bytes_per_identity: int
    reply_bytes_per_session: int
    reply_bytes_per_identity: int
    locks_per_session: int
    locks_per_identity: int

    @classmethod
    def derive(cls, config: GatewayConfig, nofile: int | None = None) -> Limits:
        """Sessions take one fd each, and a fid up to one (fids of one inode share its
        O_PATH fd; an open file holds one more): the total of fids is what the fd limit
        leaves after the sessions and a reserve for the gateway itself (listeners, logs,
        the backend, files being opened), and one identity may hold a quarter of it —
        at least half of it up to 16,384, since a FUSE client keeps up to 8,192 fids."""
        if nofile is None:
            nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        sessions = max(1, min(config.max_sessions, nofile // 8))
        reserve = sessions + max(256, nofile // 16)
        fids = max(64, nofile - reserve)
        per_identity = config.max_fids_per_identity or max(fids // 4, min(fids // 2, 16_384))
        per_identity = min(per_identity, fids)
        return cls(
            nofile=nofile,
            sessions=sessions,
            sessions_per_identity=min(
                config.max_sessions_per_identity or max(sessions // 8, 16), sessions
            ),
            fids=fids,
            fids_per_identity=per_identity,
            fids_per_session=min(config.max_fids, per_identity),
            # at least a frame: one session alone can always complete its frame
            partial_bytes_per_identity=max(config.max_partial_bytes_per_identity, config.msize),
            reply_bytes_per_session=config.max_reply_bytes,
            reply_bytes_per_identity=max(config.max_reply_bytes_per_identity,
                                         config.max_reply_bytes),
            locks_per_session=config.max_locks,
            locks_per_identity=max(config.max_locks_per_identity, config.max_locks),
        )  # fmt: skip


class Budgets:
    """The gateway's budgets (see the module docstring)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        #: Fids (each may hold fds); over it: EMFILE.
        self.fids = Budget("fids", limits.fids_per_session, limits.fids_per_identity, limits.fids)
        #: Connections being served; over it: the connection is closed at once.
        self.sessions = Budget("sessions", 1, limits.sessions_per_identity, limits.sessions)
        #: Bytes of frames received in part; over it: the session is not read until it fits.
        self.partial = Budget(
            "partial_frame_bytes", UNLIMITED, limits.partial_bytes_per_identity, UNLIMITED
        )
        #: Bytes of replies being made or waiting to be sent; over it: likewise.
        per_session, per_identity = limits.reply_bytes_per_session, limits.reply_bytes_per_identity
        self.replies = Budget("reply_bytes", per_session, per_identity, UNLIMITED)
        #: Byte-range locks held; over it: ENOLCK.
        self.locks = Budget("locks", limits.locks_per_session, limits.locks_per_identity, UNLIMITED)

    def __iter__(self) -> Iterator[Budget]:
        return iter((self.fids, self.sessions, self.partial, self.replies, self.locks))


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
    _limiters: dict[str, ShareWorkers] = field(default_factory=dict)
    #: The worker threads of every share's backend calls (see workers.py).
    workers: Workers = field(default_factory=lambda: Workers(WORKER_THREADS))
    #: Tread buffers of the largest payload any session may ask for.
    read_buffers: BufferPool = field(init=False)

    #: The shares served now, by :attr:`Share.key`; replaced whole by :meth:`set_shares`.
    shares: dict[str, Share] = field(init=False)
    _usage: dict[str, ShareUsage] = field(default_factory=dict)
    #: The process's fd limit the budgets are derived from (None: ask getrlimit).
    nofile: int | None = None
    budgets: Budgets = field(init=False)
    #: The change feed (``9P2000.L.vshare.3``): subscriptions by share, and its sources.
    feed: FeedHub = field(default_factory=FeedHub)
    #: Each identity's share of the event loop (loop_share.py).
    loop_share: LoopShare = field(default_factory=LoopShare)

    def __post_init__(self) -> None:
        self.read_buffers = BufferPool(self.config.msize - IOHDRSZ, keep=32)
        self.shares = {s.key: s for s in self.config.shares}
        self.metrics.watch_backend(self.backend)
        self.budgets = Budgets(Limits.derive(self.config, self.nofile))
        self.metrics.watch_budgets(self.budgets)
        self.metrics.registry.register(self.feed.stats)

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

    def identity_key(self, identity: PeerIdentity) -> str:
        """Whom budgets charge for a connection of ``identity`` (see :func:`identity_key`)."""
        return identity_key(identity, self.instances.resolve(identity))

    def find_share(self, aname: str) -> Share | None:
        """The share an attach names: by name or by id (never by an empty string)."""
        if not aname:
            return None
        for share in self.shares.values():
            if aname == share.name or (share.id and aname == share.id):
                return share
        return None

    def limiter(self, share: Share) -> ShareWorkers:
        """Bounds the backend calls in flight for one share, across all sessions."""
        limiter = self._limiters.get(share.name)
        if limiter is None:
            limiter = self._limiters[share.name] = ShareWorkers(
                self.workers, self.config.share_threads
            )
        return limiter
