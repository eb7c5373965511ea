"""The gateway follows the control-plane store: shares, access rules and instances come
from it, live, and the gateway says it is alive.

One task (:meth:`StoreFollower.run`) owns the loop: read a snapshot, apply it, then wait
for the store's revision to move (``Store.wait_for_change`` in a worker thread, one second
at a time so cancellation is prompt), read only the changes since (``changes_since``) and
apply the view with them applied (``apply_changes``); changes that are only gateway
registrations, tokens or quotas, which no snapshot holds, just move the revision. A full
snapshot is read again only when the feed was compacted past the follower's revision, or
after failing closed. Applying is
``Gateway.set_shares`` (levels change at once, sessions that lost access are cut) and
``InstanceTable.sync("store", ...)``. A change reaches live sessions within the store's
wake-up delay (≤ 0.5 s for SQLite) plus one read of the feed.

Rules follow tenancy: an instance rule grants only while the instance belongs to its
share's tenant (unless an admin made it ``cross_tenant``). Re-registering an instance in
another tenant reaches ``InstanceTable.sync``, whose change the gateway answers by
re-evaluating every session (``Gateway._on_instance_change``): a session that lost access is
cut as fast as a revoked rule's.

Rule states (Manila's): rules in ``queued_to_apply``, ``applying`` or ``active`` grant
access; a gateway that has applied a queued rule marks it ``active``. Rules in
``queued_to_deny`` or ``denying`` grant nothing from the moment a gateway sees them; the
gateway then marks them ``deleted``. Several gateways may race to move a rule: each
update names the revision it saw, and losing the race (``Conflict``) is fine.

A second task heartbeats every ``ttl / 3`` seconds so ``vshare gateway list`` shows it,
with its load (``load()``: sessions, requests in flight) at that moment.
The gateway's id in the registry is ``gateway_id``, else ``$VSHARE_GATEWAY_ID``, else the
host name (one gateway per hypervisor; several gateways on one machine, as in tests, need
distinct ids or they overwrite each other's entry).

Losing the store (etcd unreachable, the database locked): the gateway keeps serving the
shares and rules it last applied for ``grace`` seconds (default 60), then **fails closed**:
it serves no shares (sessions are cut, attaches refused) until the store answers again,
when it reloads a full snapshot. Both transitions are logged once, and, given a metrics
registry, shown as ``vshare_store_up`` (0/1), ``vshare_store_failed_closed`` (0/1) and
``vshare_store_revision``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final

import anyio
from prometheus_client import CollectorRegistry, Gauge

from vshare import __version__
from vshare.gateway.instances import InstanceTable
from vshare.gateway.share import ConfigError, Share
from vshare.store import (
    Compacted,
    Conflict,
    GatewayRecord,
    NotFound,
    RuleRecord,
    RuleState,
    ShareRecord,
    ShareStatus,
    Snapshot,
    Store,
    StoreError,
    apply_changes,
)

log = logging.getLogger("vshare.gateway")

GRANTING: Final = frozenset({RuleState.QUEUED_TO_APPLY, RuleState.APPLYING, RuleState.ACTIVE})
_WITHDRAWN: Final = frozenset({RuleState.QUEUED_TO_DENY, RuleState.DENYING})
#: Change kinds a snapshot does not hold, which change nothing served: a gateway
#: registering, a token made, a quota set (it bounds creates and extends in the control
#: plane; the gateway serves the sizes the shares get).
_NOT_SERVED: Final = frozenset({"gateway", "token", "quota"})
#: Shares a guest may use; a share being created, deleted or in error is not served.
SERVED: Final = frozenset({ShareStatus.AVAILABLE, ShareStatus.EXTENDING, ShareStatus.SHRINKING})


def shares_of(snapshot: Snapshot, backend: str) -> list[Share]:
    """The gateway's view of the shares on ``backend`` (the URI it serves), with the
    rules that grant access now. An instance rule carries its share's tenant (unless an
    admin made it across tenants): it grants only while the instance is in that tenant.
    A record the gateway cannot serve (a name outside ``vshare.terms.SHARE_NAME``, written
    to the store by hand) is left out, with a warning, rather than failing the whole view."""
    rules: dict[str, list[RuleRecord]] = {}
    for rule in snapshot.rules:
        if rule.state in GRANTING:
            rules.setdefault(rule.share_id, []).append(rule)
    shares = []
    for record in snapshot.shares:
        if record.status not in SERVED or record.backend != backend:
            continue
        try:
            shares.append(_share(record, rules.get(record.id, ())))
        except ConfigError as exc:  # a record the control plane would not have made
            log.warning("gateway: share %s not served: %s", record.id, exc)
    return shares


def _share(record: ShareRecord, rules: Iterable[RuleRecord]) -> Share:
    return Share(
        name=record.name,
        path=record.path,
        id=record.id,
        access=tuple(rule.to_policy(record.tenant) for rule in rules),
        uid=record.uid,
        gid=record.gid,
        size_gib=record.size_gib,
        tenant=record.tenant,
        cache=record.cache,
    )


class StoreFollower:
    """Keeps one gateway in step with one store. See the module note."""

    def __init__(
        self,
        store: Store,
        *,
        backend: str,
        apply_shares: Callable[[Sequence[Share]], None],
        instances: InstanceTable,
        gateway_id: str | None = None,
        addresses: Sequence[str] = (),
        ttl: float = 10.0,
        grace: float = 60.0,
        registry: CollectorRegistry | None = None,
        load: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.apply_shares = apply_shares
        self.instances = instances
        self.gateway_id = gateway_id or os.environ.get("VSHARE_GATEWAY_ID") or socket.gethostname()
        self.addresses = tuple(addresses)
        self.ttl = ttl
        self.grace = grace
        self.load_of = load
        self.revision = -1
        self._view: Snapshot | None = None  # what was last applied, kept up by the feed
        self.applied = anyio.Event()  # set after the first snapshot is applied
        self.failed_closed = False
        self._contact = time.monotonic()  # the last time the store answered
        self._outage = False
        self._up: Gauge | None = None
        self._closed: Gauge | None = None
        self._revision: Gauge | None = None
        if registry is not None:
            self._up = Gauge("vshare_store_up", "1 while the store answers", registry=registry)
            self._closed = Gauge(
                "vshare_store_failed_closed",
                "1 while no shares are served: the store has been lost for longer than the grace",
                registry=registry,
            )
            self._revision = Gauge(
                "vshare_store_revision", "The store revision the gateway serves", registry=registry
            )
            self._up.set(1)

    async def load(self) -> None:
        """Read and apply the store's current state once (before serving).

        Raises:
            StoreError: the store cannot be read.
        """
        await self._step()

    async def run(self) -> None:
        """Follow until cancelled; a store outage is logged and retried, never fatal."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._heartbeat)
            while True:
                try:
                    await self._step()
                except StoreError as exc:
                    self._lost(exc)
                    await anyio.sleep(1.0)

    async def _step(self) -> None:
        if self.revision >= 0:
            seen = await anyio.to_thread.run_sync(self.store.wait_for_change, self.revision, 1.0)
            self._reached()
            if seen <= self.revision:
                return
            caught = await anyio.to_thread.run_sync(self._catch_up)
            if isinstance(caught, int):
                if self._view is not None:
                    self._view = self._view._replace(revision=caught)
                self._set_revision(caught)
                return
            if caught is not None:
                self.apply(caught)
                await anyio.to_thread.run_sync(self._settle_rules, caught)
                return
        snapshot = await anyio.to_thread.run_sync(self.store.snapshot)
        self._reached()
        self.apply(snapshot)
        await anyio.to_thread.run_sync(self._settle_rules, snapshot)

    def _catch_up(self) -> Snapshot | int | None:
        """Read only the changes since our revision (in a worker thread). Returns the view
        with them applied; or, when they are all changes no snapshot holds (gateways
        registering, tokens, quotas), just the revision to move to; or None when the feed cannot
        say (compacted past us, or empty though the revision moved): read a full snapshot.
        In a fleet a full read per change costs the store (gateways * records); the feed
        costs (gateways * the change) (docs/scale.md)."""
        view = self._view
        if view is None or view.revision != self.revision:
            return None
        try:
            changes = self.store.changes_since(self.revision)
        except Compacted:
            return None
        if not changes:
            return None
        if all(c.kind in _NOT_SERVED for c in changes):
            return changes[-1].revision
        return apply_changes(view, changes)

    def _set_revision(self, revision: int) -> None:
        self.revision = revision
        if self._revision is not None:
            self._revision.set(revision)

    @property
    def last_contact(self) -> float:
        """When the store last answered (``time.monotonic()``): the grace runs from here."""
        return self._contact

    def _reached(self) -> None:
        """The store answered."""
        self._contact = time.monotonic()
        if self._outage:
            self._outage = False
            log.warning("gateway: store is back")
            if self._up is not None:
                self._up.set(1)

    def _lost(self, exc: StoreError) -> None:
        """The store did not answer: keep serving for the grace period, then fail closed."""
        down = time.monotonic() - self._contact
        if not self._outage:
            self._outage = True
            log.warning(
                "gateway: store unreachable: %s; serving the rules known at revision"
                " %d for up to %g s",
                exc,
                self.revision,
                self.grace,
            )
            if self._up is not None:
                self._up.set(0)
        else:
            log.debug("gateway: store: %s (retrying)", exc)
        if down >= self.grace and not self.failed_closed:
            log.error(
                "gateway: store unreachable for %.0f s: failing closed (serving no shares"
                " until it is back)",
                down,
            )
            self.failed_closed = True
            self.apply_shares([])
            self.revision = -1  # the next answer reloads a full snapshot
            self._view = None
            if self._closed is not None:
                self._closed.set(1)

    def apply(self, snapshot: Snapshot) -> None:
        """Serve what the snapshot says (on the event loop)."""
        shares = shares_of(snapshot, self.backend)
        self.apply_shares(shares)
        for problem in self.instances.sync("store", (r.instance for r in snapshot.instances)):
            log.warning("gateway: %s", problem)
        if self.revision < 0:
            log.info(
                "gateway: following the store from revision %d: %d shares, %d instances",
                snapshot.revision,
                len(shares),
                len(snapshot.instances),
            )
        if self.failed_closed:
            self.failed_closed = False
            log.warning("gateway: serving again from store revision %d", snapshot.revision)
            if self._closed is not None:
                self._closed.set(0)
        self._set_revision(snapshot.revision)
        self._view = snapshot
        self.applied.set()

    def _settle_rules(self, snapshot: Snapshot) -> None:
        """Move the rules this gateway has just applied on in their life cycle."""
        for rule in snapshot.rules:
            if rule.state is RuleState.QUEUED_TO_APPLY:
                target = RuleState.ACTIVE
            elif rule.state in _WITHDRAWN:
                target = RuleState.DELETED
            else:
                continue
            try:
                self.store.update_rule(rule.id, expect_revision=rule.revision, state=target)
            except (Conflict, NotFound):
                pass  # another gateway (or the API) moved it first

    async def _heartbeat(self) -> None:
        record = GatewayRecord(
            id=self.gateway_id,
            addresses=self.addresses,
            version=__version__,
            host=socket.gethostname(),
        )
        while True:
            if self.load_of is not None:
                record = record.with_load(*self.load_of())
            try:
                await anyio.to_thread.run_sync(self.store.heartbeat, record, self.ttl)
            except StoreError as exc:
                log.warning("gateway: store heartbeat: %s", exc)
            await anyio.sleep(self.ttl / 3)
