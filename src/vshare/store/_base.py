"""The ``Store`` interface: what every control-plane store guarantees.

Contracts every implementation keeps (``vshare.testing.store_conformance`` checks them):

- **Synchronous and thread-safe.** Gateways call from a worker thread, the REST API from its
  handlers; any method may be called from any thread at any time. Methods may block on I/O
  (and, for ``wait_for_change``, on purpose); call them off an event loop.
- **Atomic.** Each method is one transaction: it happens entirely or not at all, and a
  failed write leaves the store and its revision as they were.
- **One global revision.** Every write that changes something advances ``revision()``
  by exactly one, and the revision never goes back. All changes made by one write share
  that revision (deleting a share deletes its rules in the same revision). Reads never
  change it, nor do writes that change nothing (an update to the same values, a
  heartbeat that only renews a gateway's lease: like an etcd lease keep-alive, so a
  fleet's heartbeats do not flood the feed and wake every follower).
- **A change feed.** ``changes_since(r)`` returns every change after revision ``r`` in
  order, until compaction discards old ones; ``snapshot()`` returns the full state and
  its revision in one transaction. A follower: ``snapshot()``, then loop
  ``wait_for_change(rev)`` / ``changes_since(rev)``, and reload the snapshot on
  ``Compacted``.
- **Keys.** Shares and rules have store-assigned uuid4 ids (when created with an empty
  ``id``). Share names are unique across the store, and a name never equals another
  share's id: a 9P attach names a share by name *or* id, so either must be unambiguous.
  Rules are unique per (share, access_type, access_to) among rules not in state
  ``deleted``. Each instance identity (a CID, a socket, an address, a certificate) belongs
  to at most one instance. Tokens are unique by name and by hash; gateways by id.
- **Quotas.** ``create_share``, and ``update_share`` when the size grows, refuse a write
  that would take the share's tenant over its quota (``OverQuota``), checked against the
  tenant's usage in the same transaction as the write (``vshare.store._quota``).
- **Errors.** ``NotFound``, ``Conflict``, ``OverQuota``, ``Compacted``, ``StoreUnavailable``
  (all ``StoreError``), and ``ValueError`` for invalid field values, each with a one-line
  message. Nothing else escapes on purpose.
"""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self

from vshare.policy import IdentityFacts, Instance, Level
from vshare.store._quota import QuotaUsage
from vshare.store._records import (
    Change,
    GatewayRecord,
    GatewayStatus,
    InstanceRecord,
    QuotaRecord,
    RuleRecord,
    RuleState,
    ShareRecord,
    ShareStatus,
    Snapshot,
    TokenRecord,
)
from vshare.terms import CacheMode


class Store(abc.ABC):
    """The control plane's state: shares, access rules, instances, API tokens, gateways,
    and a revisioned change feed over them. See the module note for the contracts.

    A store also satisfies ``vshare.policy.InstanceRegistry`` (:meth:`resolve`).
    """

    # --- shares ---------------------------------------------------------------------------

    @abc.abstractmethod
    def create_share(self, share: ShareRecord) -> ShareRecord:
        """Store a new share; returns it as stored (id assigned if empty, ``revision`` set).

        Raises:
            Conflict: the id exists, or the name is taken (by a share's name or id).
            OverQuota: its tenant would hold more shares or GiB than its quota allows.
        """

    @abc.abstractmethod
    def get_share(self, share_id: str) -> ShareRecord:
        """The share with this id.

        Raises:
            NotFound: no such share.
        """

    @abc.abstractmethod
    def find_share(self, name_or_id: str) -> ShareRecord | None:
        """The share whose id or name is ``name_or_id`` (never ambiguous), or None."""

    @abc.abstractmethod
    def list_shares(self, tenant: str | None = None) -> list[ShareRecord]:
        """All shares (of ``tenant`` if given), ordered by name."""

    @abc.abstractmethod
    def update_share(
        self,
        share_id: str,
        *,
        expect_revision: int | None = None,
        name: str | None = None,
        size_gib: int | None = None,
        status: ShareStatus | None = None,
        uid: int | None = None,
        gid: int | None = None,
        cache: CacheMode | None = None,
    ) -> ShareRecord:
        """Change the given fields (None: keep); returns the share as stored. The id,
        tenant, backend, path and creation time never change.

        With ``expect_revision``, the write happens only if the share's ``revision`` is
        still that (optimistic concurrency for read-modify-write). Setting the values it
        already has changes nothing and keeps the revision.

        Raises:
            NotFound: no such share.
            Conflict: the revision moved on, or the new name is taken.
            OverQuota: a larger size would take its tenant over its gigabytes quota.
            ValueError: an invalid value.
        """

    @abc.abstractmethod
    def delete_share(self, share_id: str) -> None:
        """Delete the share and all its rules, in one revision.

        Raises:
            NotFound: no such share.
        """

    # --- access rules ---------------------------------------------------------------------

    @abc.abstractmethod
    def add_rule(self, rule: RuleRecord) -> RuleRecord:
        """Store a new access rule; returns it as stored (id assigned if empty).

        Raises:
            NotFound: its share does not exist.
            Conflict: the id exists, or the share has a rule for the same (access_type,
                access_to) that is not in state ``deleted``.
        """

    @abc.abstractmethod
    def get_rule(self, rule_id: str) -> RuleRecord:
        """The rule with this id.

        Raises:
            NotFound: no such rule.
        """

    @abc.abstractmethod
    def list_rules(self, share_id: str) -> list[RuleRecord]:
        """The share's rules in every state, oldest first.

        Raises:
            NotFound: no such share.
        """

    @abc.abstractmethod
    def update_rule(
        self,
        rule_id: str,
        *,
        expect_revision: int | None = None,
        state: RuleState | None = None,
        level: Level | None = None,
    ) -> RuleRecord:
        """Change the rule's state and/or level (None: keep); returns it as stored.

        Raises:
            NotFound: no such rule.
            Conflict: the revision moved on, or leaving state ``deleted`` would duplicate
                a live rule.
            ValueError: an invalid value.
        """

    @abc.abstractmethod
    def delete_rule(self, rule_id: str) -> None:
        """Remove the rule from the store (not a state change: see ``RuleState.DELETED``).

        Raises:
            NotFound: no such rule.
        """

    # --- instances ------------------------------------------------------------------------

    @abc.abstractmethod
    def put_instance(self, record: InstanceRecord) -> InstanceRecord:
        """Create the instance, or replace the one with the same uuid (its identities are
        replaced; its original ``created_at`` is kept). Returns it as stored.

        Raises:
            Conflict: another instance already claims one of its identities.
        """

    @abc.abstractmethod
    def get_instance(self, uuid: str) -> InstanceRecord:
        """The instance with this uuid.

        Raises:
            NotFound: no such instance.
        """

    @abc.abstractmethod
    def remove_instance(self, uuid: str) -> None:
        """Forget the instance and free its identities. Rules naming it stay.

        Raises:
            NotFound: no such instance.
        """

    @abc.abstractmethod
    def list_instances(self, tenant: str | None = None) -> list[InstanceRecord]:
        """All instances (of ``tenant`` if given), ordered by uuid."""

    @abc.abstractmethod
    def resolve(self, facts: IdentityFacts) -> Instance | None:
        """The instance the transport facts identify (strongest identity first, as
        ``vshare.policy.identity_keys`` orders them), or None: ``InstanceRegistry``."""

    # --- API tokens -----------------------------------------------------------------------

    @abc.abstractmethod
    def add_token(self, token: TokenRecord) -> TokenRecord:
        """Store a token (its hash only: see ``hash_token``).

        Raises:
            Conflict: the name or the hash exists.
        """

    @abc.abstractmethod
    def find_token(self, token_hash: str) -> TokenRecord | None:
        """The token whose hash is ``token_hash``, or None (also for anything that is not
        a hash, such as a secret passed by mistake)."""

    @abc.abstractmethod
    def list_tokens(self) -> list[TokenRecord]:
        """All tokens, ordered by name."""

    @abc.abstractmethod
    def remove_token(self, name: str) -> None:
        """Revoke the token with this name.

        Raises:
            NotFound: no such token.
        """

    # --- quotas ---------------------------------------------------------------------------

    @abc.abstractmethod
    def put_quota(self, quota: QuotaRecord) -> QuotaRecord:
        """Store the tenant's quota override (empty ``tenant``: the defaults), replacing
        the one stored; a record that sets no limit removes it. A write like any other
        (one revision, a ``quota`` change in the feed), unless it changes nothing.
        Limits lowered below usage refuse only what would grow it further."""

    @abc.abstractmethod
    def list_quotas(self) -> list[QuotaRecord]:
        """The stored quota records, ordered by tenant (the defaults, if stored, first)."""

    @abc.abstractmethod
    def quota_usage(self, tenant: str) -> QuotaUsage:
        """The tenant's effective limits and usage (its shares in every status, the sum of
        their sizes), read in one transaction."""

    # --- gateways -------------------------------------------------------------------------

    @abc.abstractmethod
    def heartbeat(self, gateway: GatewayRecord, ttl_seconds: float) -> GatewayStatus:
        """Register or renew a gateway: it counts as healthy for ``ttl_seconds`` from now.
        Registering, or changing what the gateway says about itself, is a write (a new
        revision); a renewal with the same registration is not, whatever its load
        (``sessions``, ``requests_in_flight``), which is kept with the heartbeat and
        reported by :meth:`list_gateways`.

        Raises:
            ValueError: ``ttl_seconds`` is not more than 0.
        """

    @abc.abstractmethod
    def list_gateways(self) -> list[GatewayStatus]:
        """Every registered gateway, healthy or not, ordered by id; health is computed at
        the time of the call, and each record carries the load of its last heartbeat. A
        gateway stays listed until removed (listings for people hide the unhealthy ones:
        ``vshare gateway list`` without ``--all``)."""

    @abc.abstractmethod
    def remove_gateway(self, gateway_id: str) -> None:
        """Forget a gateway.

        Raises:
            NotFound: no such gateway.
        """

    # --- revision and change feed ---------------------------------------------------------

    @abc.abstractmethod
    def revision(self) -> int:
        """The store's current revision (the revision of its last change)."""

    @abc.abstractmethod
    def changes_since(self, revision: int) -> list[Change]:
        """Every change with a revision above ``revision``, in revision order (and, within
        one revision, in the order they were made).

        Raises:
            Compacted: changes after ``revision`` were discarded, or ``revision`` is ahead
                of the store: reload a :meth:`snapshot`.
        """

    @abc.abstractmethod
    def wait_for_change(self, revision: int, timeout: float) -> int:
        """Block until the store's revision exceeds ``revision`` or ``timeout`` seconds
        pass; returns the revision then (not above ``revision`` on a timeout). Sees writes
        made through any Store object or process on the same data, within half a second."""

    @abc.abstractmethod
    def compact(self, revision: int) -> None:
        """Discard the changes up to and including ``revision`` (stores also compact on
        their own, keeping a configured number of recent revisions). Does not change the
        revision.

        Raises:
            ValueError: ``revision`` is ahead of the store.
        """

    @abc.abstractmethod
    def snapshot(self) -> Snapshot:
        """Shares, rules and instances, and the revision they are at, read at once."""

    # --- life cycle -----------------------------------------------------------------------

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store's resources; idempotent. Any later call raises
        ``StoreUnavailable``."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
