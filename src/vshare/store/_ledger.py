"""The store's integrity rules, written once against a small transaction view.

Every store keeps the same rules (``_base.py`` states them): share names unique and never
another share's id, one live rule per (share, access_type, access_to), an instance identity
owned by one instance, tokens unique by name and hash, quotas checked in the write's own
transaction, ``expect_revision`` and "no change, no revision". :class:`LedgerStore`
implements them, and every record-level method of :class:`Store`, over two protocols:

- :class:`View`: the reads one consistent transaction offers (a record by key, an index
  lookup, a listing, a tenant's usage);
- :class:`Tx`: a view plus the writes of one transaction (``put_*``/``drop_*`` keep the
  engine's own indexes) and ``change`` (an entry of the feed, under ``revision``).

An engine (``sqlite.py``, ``etcd.py``) only stores: it implements the two protocols and
``_read(fn)``/``_write(fn)``, which run ``fn`` over one view or one write transaction
(committed with its changes and a new revision, or not at all), plus gateways, the feed,
waiting and its life cycle.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, Literal, Protocol, TypeVar

from vshare.policy import IdentityFacts, Instance, Level, identity_keys
from vshare.store._base import Store
from vshare.store._codec import dumps
from vshare.store._errors import Compacted, Conflict, NotFound
from vshare.store._quota import QuotaUsage, check_share, grows, tally
from vshare.store._records import (
    InstanceRecord,
    Kind,
    Op,
    QuotaRecord,
    RuleRecord,
    RuleState,
    ShareRecord,
    ShareStatus,
    Snapshot,
    TokenRecord,
    new_id,
)
from vshare.terms import CacheMode

__all__ = ["LedgerStore", "Tx", "View", "check_feed", "snapshot_of"]

_T = TypeVar("_T")
_Revised = TypeVar("_Revised", ShareRecord, RuleRecord)


class View(Protocol):
    """The reads of one transaction, all at one state of the store. Listings come in any
    order (callers sort)."""

    def share(self, share_id: str) -> ShareRecord | None: ...
    def share_id_named(self, name: str) -> str | None: ...
    def shares(self, tenant: str | None) -> Iterable[ShareRecord]: ...
    def rule(self, rule_id: str) -> RuleRecord | None: ...
    def rules_of(self, share_id: str) -> Iterable[RuleRecord]: ...
    def instance(self, uuid: str) -> InstanceRecord | None: ...
    def instances(self, tenant: str | None) -> Iterable[InstanceRecord]: ...
    def identity_owner(self, kind: str, value: str) -> str | None: ...
    def token(self, name: str) -> TokenRecord | None: ...
    def token_name_of_hash(self, token_hash: str) -> str | None: ...
    def tokens(self) -> Iterable[TokenRecord]: ...
    def quota(self, tenant: str) -> QuotaRecord | None: ...
    def quotas(self) -> Iterable[QuotaRecord]: ...
    def usage(self, tenant: str) -> tuple[int, int]:
        """(how many shares, how many GiB) ``tenant`` holds."""
        ...


class Tx(View, Protocol):
    """One write transaction: reads, writes, and the changes it adds to the feed under
    ``revision`` (the revision it commits as, if it changes anything)."""

    revision: int

    def change(self, kind: Kind, key: str, op: Op, data: str | None = None) -> None: ...
    def put_share(self, old: ShareRecord | None, new: ShareRecord, data: str) -> None: ...
    def drop_share(self, share: ShareRecord, rules: Sequence[RuleRecord]) -> None: ...
    def put_rule(self, old: RuleRecord | None, new: RuleRecord, data: str) -> None: ...
    def drop_rule(self, rule: RuleRecord) -> None: ...
    def put_instance(self, old: InstanceRecord | None, new: InstanceRecord, data: str) -> None:
        """Store ``new`` and make its identities (and no others of ``old``) point to it."""
        ...

    def drop_instance(self, record: InstanceRecord) -> None: ...
    def put_token(self, token: TokenRecord, data: str) -> None: ...
    def drop_token(self, token: TokenRecord) -> None: ...
    def put_quota(self, quota: QuotaRecord, data: str) -> None: ...
    def drop_quota(self, tenant: str) -> None: ...


def check_feed(revision: int, current: int, compacted: int) -> None:
    """Refuse a ``changes_since(revision)`` the feed cannot answer.

    Raises:
        Compacted: ``revision`` is before the feed's start or ahead of the store.
    """
    if revision < compacted:
        raise Compacted(
            f"changes after revision {revision} were compacted (the feed starts after"
            f" {compacted}); reload a snapshot"
        )
    if revision > current:
        raise Compacted(f"revision {revision} is ahead of the store ({current}); reload a snapshot")


def check_compact(revision: int, current: int) -> None:
    """Raises ValueError if ``compact(revision)`` goes past the store's ``current``."""
    if revision > current:
        raise ValueError(f"cannot compact to {revision}: the store is at {current}")


def snapshot_of(revision: int, view: View, rules: Iterable[RuleRecord]) -> Snapshot:
    """The snapshot of ``view`` at ``revision`` (``rules``: every rule in it)."""
    return Snapshot(
        revision=revision,
        shares=tuple(sorted(view.shares(None), key=lambda s: s.name)),
        rules=tuple(sorted(rules, key=lambda r: (r.share_id, r.created_at, r.id))),
        instances=tuple(sorted(view.instances(None), key=lambda i: i.uuid)),
    )


def _given(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _revise(
    tx: Tx,
    kind: Literal["share", "rule"],
    old: _Revised,
    expect_revision: int | None,
    changes: dict[str, Any],
    check: Callable[[_Revised, _Revised], None],
    put: Callable[[_Revised | None, _Revised, str], None],
) -> _Revised:
    """An update of a share or a rule: guarded by ``expect_revision``, validated (by the
    record, then ``check``), and no write at all if nothing changes."""
    if expect_revision is not None and old.revision != expect_revision:
        what = "share" if kind == "share" else "access rule"
        raise Conflict(f"{what} {old.id} changed: revision {old.revision}, not {expect_revision}")
    new = replace(old, **changes)  # validates the new values
    if new == old:
        return old
    check(old, new)
    return _store(tx, kind, old, replace(new, revision=tx.revision), put)


def _store(
    tx: Tx,
    kind: Literal["share", "rule"],
    old: _Revised | None,
    new: _Revised,
    put: Callable[[_Revised | None, _Revised, str], None],
) -> _Revised:
    """Write a share or a rule with ``put`` and add it to the feed; returns it."""
    data = dumps(new)
    put(old, new, data)
    tx.change(kind, new.id, "put", data)
    return new


def _found(record: _T | None, what: str) -> _T:
    """``record``, or NotFound naming ``what`` if a lookup found nothing."""
    if record is None:
        raise NotFound(f"{what} not found")
    return record


def _share(view: View, share_id: str) -> ShareRecord:
    return _found(view.share(share_id), f"share {share_id}")


def _rule(view: View, rule_id: str) -> RuleRecord:
    return _found(view.rule(rule_id), f"access rule {rule_id}")


def _check_share_name(view: View, name: str, share_id: str) -> None:
    """Conflict unless ``name`` is free for the share ``share_id`` (names and ids share one
    namespace)."""
    owner = view.share_id_named(name)
    if owner is not None and owner != share_id:
        raise Conflict(f"share name {name!r} is taken (share {owner})")
    if name != share_id and view.share(name) is not None:
        raise Conflict(f"share name {name!r} is the id of another share")


def _check_live_duplicate(view: View, rule: RuleRecord) -> None:
    if rule.state is RuleState.DELETED:
        return
    for other in view.rules_of(rule.share_id):
        if (
            other.id != rule.id
            and other.state is not RuleState.DELETED
            and (other.access_type, other.access_to) == (rule.access_type, rule.access_to)
        ):
            raise Conflict(
                f"share {rule.share_id} already has an {rule.access_type} rule for"
                f" {rule.access_to!r} (rule {other.id})"
            )


def _quota_usage(view: View, tenant: str) -> QuotaUsage:
    return tally(tenant, view.quota(""), view.quota(tenant), *view.usage(tenant))


class LedgerStore(Store):
    """A :class:`Store` whose records and rules live here, over an engine's
    :meth:`_read` and :meth:`_write` (see the module note)."""

    @abc.abstractmethod
    def _read(self, fn: Callable[[View], _T]) -> _T:
        """``fn`` over one consistent view."""

    @abc.abstractmethod
    def _write(self, fn: Callable[[Tx], _T]) -> _T:
        """``fn`` over one write transaction, committed when it returns (with a new
        revision if it recorded changes); nothing is written if it raises."""

    # --- shares ---------------------------------------------------------------------------

    def create_share(self, share: ShareRecord) -> ShareRecord:
        def build(tx: Tx) -> ShareRecord:
            stored = replace(share, id=share.id or new_id(), revision=tx.revision)
            if tx.share(stored.id) is not None:
                raise Conflict(f"share {stored.id} exists")
            if tx.share_id_named(stored.id) is not None:
                raise Conflict(f"share id {stored.id!r} is the name of another share")
            _check_share_name(tx, stored.name, stored.id)
            check_share(_quota_usage(tx, stored.tenant), None, stored)
            return _store(tx, "share", None, stored, tx.put_share)

        return self._write(build)

    def get_share(self, share_id: str) -> ShareRecord:
        return self._read(lambda v: _share(v, share_id))

    def find_share(self, name_or_id: str) -> ShareRecord | None:
        def read(view: View) -> ShareRecord | None:
            if not name_or_id:
                return None
            share = view.share(name_or_id)
            if share is None:
                share_id = view.share_id_named(name_or_id)
                share = None if share_id is None else view.share(share_id)
            return share

        return self._read(read)

    def list_shares(self, tenant: str | None = None) -> list[ShareRecord]:
        return sorted(self._read(lambda v: list(v.shares(tenant))), key=lambda s: s.name)

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
        changes = _given(name=name, size_gib=size_gib, status=status, uid=uid, gid=gid, cache=cache)

        def build(tx: Tx) -> ShareRecord:
            def check(old: ShareRecord, new: ShareRecord) -> None:
                if new.name != old.name:
                    _check_share_name(tx, new.name, share_id)
                if grows(old, new):
                    check_share(_quota_usage(tx, old.tenant), old, new)

            old = _share(tx, share_id)
            return _revise(tx, "share", old, expect_revision, changes, check, tx.put_share)

        return self._write(build)

    def delete_share(self, share_id: str) -> None:
        def build(tx: Tx) -> None:
            share = _share(tx, share_id)
            rules = sorted(tx.rules_of(share_id), key=lambda r: r.id)
            for rule in rules:
                tx.change("rule", rule.id, "delete")
            tx.drop_share(share, rules)
            tx.change("share", share_id, "delete")

        self._write(build)

    # --- access rules ---------------------------------------------------------------------

    def add_rule(self, rule: RuleRecord) -> RuleRecord:
        def build(tx: Tx) -> RuleRecord:
            stored = replace(rule, id=rule.id or new_id(), revision=tx.revision)
            _share(tx, stored.share_id)
            if tx.rule(stored.id) is not None:
                raise Conflict(f"access rule {stored.id} exists")
            _check_live_duplicate(tx, stored)
            return _store(tx, "rule", None, stored, tx.put_rule)

        return self._write(build)

    def get_rule(self, rule_id: str) -> RuleRecord:
        return self._read(lambda v: _rule(v, rule_id))

    def list_rules(self, share_id: str) -> list[RuleRecord]:
        def read(view: View) -> list[RuleRecord]:
            _share(view, share_id)
            return list(view.rules_of(share_id))

        return sorted(self._read(read), key=lambda r: (r.created_at, r.id))

    def update_rule(
        self,
        rule_id: str,
        *,
        expect_revision: int | None = None,
        state: RuleState | None = None,
        level: Level | None = None,
    ) -> RuleRecord:
        changes = _given(state=state, level=level)

        def build(tx: Tx) -> RuleRecord:
            def check(old: RuleRecord, new: RuleRecord) -> None:
                _check_live_duplicate(tx, new)

            old = _rule(tx, rule_id)
            return _revise(tx, "rule", old, expect_revision, changes, check, tx.put_rule)

        return self._write(build)

    def delete_rule(self, rule_id: str) -> None:
        def build(tx: Tx) -> None:
            tx.drop_rule(_rule(tx, rule_id))
            tx.change("rule", rule_id, "delete")

        self._write(build)

    # --- instances ------------------------------------------------------------------------

    def put_instance(self, record: InstanceRecord) -> InstanceRecord:
        uuid = record.uuid

        def build(tx: Tx) -> InstanceRecord:
            for kind, value in sorted(record.instance.keys):
                owner = tx.identity_owner(kind, value)
                if owner is not None and owner != uuid:
                    raise Conflict(f"instance {uuid}: {kind} {value} belongs to instance {owner}")
            old = tx.instance(uuid)
            stored = record
            if old is not None:
                if old.instance == record.instance:
                    return old
                stored = replace(record, created_at=old.created_at)
            data = dumps(stored)
            tx.put_instance(old, stored, data)
            tx.change("instance", uuid, "put", data)
            return stored

        return self._write(build)

    def get_instance(self, uuid: str) -> InstanceRecord:
        return _found(self._read(lambda v: v.instance(uuid)), f"instance {uuid}")

    def remove_instance(self, uuid: str) -> None:
        def build(tx: Tx) -> None:
            tx.drop_instance(_found(tx.instance(uuid), f"instance {uuid}"))
            tx.change("instance", uuid, "delete")

        self._write(build)

    def list_instances(self, tenant: str | None = None) -> list[InstanceRecord]:
        return sorted(self._read(lambda v: list(v.instances(tenant))), key=lambda i: i.uuid)

    def resolve(self, facts: IdentityFacts) -> Instance | None:
        keys = identity_keys(facts)
        if not keys:
            return None

        def read(view: View) -> Instance | None:
            for kind, value in keys:  # strongest first: the first match wins
                uuid = view.identity_owner(kind, value)
                record = None if uuid is None else view.instance(uuid)
                if record is not None:
                    return record.instance
            return None

        return self._read(read)

    # --- API tokens -----------------------------------------------------------------------

    def add_token(self, token: TokenRecord) -> TokenRecord:
        def build(tx: Tx) -> TokenRecord:
            if tx.token(token.name) is not None:
                raise Conflict(f"token {token.name!r} exists")
            if tx.token_name_of_hash(token.hash) is not None:
                raise Conflict(f"token {token.name!r}: another token has the same secret")
            data = dumps(token)
            tx.put_token(token, data)
            tx.change("token", token.name, "put", data)
            return token

        return self._write(build)

    def find_token(self, token_hash: str) -> TokenRecord | None:
        # An indexed lookup leaks timing about the *hash*, which tells nothing about any
        # secret (preimage resistance), so no constant-time comparison is needed.
        def read(view: View) -> TokenRecord | None:
            name = view.token_name_of_hash(token_hash.lower())
            return None if name is None else view.token(name)

        return self._read(read)

    def list_tokens(self) -> list[TokenRecord]:
        return sorted(self._read(lambda v: list(v.tokens())), key=lambda t: t.name)

    def remove_token(self, name: str) -> None:
        def build(tx: Tx) -> None:
            tx.drop_token(_found(tx.token(name), f"token {name!r}"))
            tx.change("token", name, "delete")

        self._write(build)

    # --- quotas ---------------------------------------------------------------------------

    def put_quota(self, quota: QuotaRecord) -> QuotaRecord:
        data = dumps(quota)

        def build(tx: Tx) -> QuotaRecord:
            old = tx.quota(quota.tenant)
            if quota.is_empty and old is not None:
                tx.drop_quota(quota.tenant)
                tx.change("quota", quota.tenant, "delete")
            elif not quota.is_empty and (old is None or dumps(old) != data):
                tx.put_quota(quota, data)
                tx.change("quota", quota.tenant, "put", data)
            return quota

        return self._write(build)

    def list_quotas(self) -> list[QuotaRecord]:
        return sorted(self._read(lambda v: list(v.quotas())), key=lambda q: q.tenant)

    def quota_usage(self, tenant: str) -> QuotaUsage:
        return self._read(lambda v: _quota_usage(v, tenant))
