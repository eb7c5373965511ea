"""The etcd store's keys and its two transaction views: :class:`EtcdView` (reads at one
etcd revision) and :class:`EtcdTx` (an optimistic write), which implement
``vshare.store._ledger``'s ``View`` and ``Tx`` over the keys ``etcd.py``'s module note
lists. Committing a write, retrying lost races, is ``EtcdStore``'s job."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, TypeVar

from vshare.store._codec import load_as
from vshare.store._etcd_client import EtcdClient, EtcdError, KeyValue, Op, prefix_end
from vshare.store._quota import usage_of
from vshare.store._records import (
    InstanceRecord,
    Kind,
    QuotaRecord,
    RuleRecord,
    ShareRecord,
    TokenRecord,
)

__all__ = ["COMPACTED", "REV", "EtcdTx", "EtcdView", "Retry", "chg_key"]

REV: Final = "meta/rev"
COMPACTED: Final = "meta/compacted"
_R = TypeVar("_R", ShareRecord, RuleRecord, InstanceRecord, TokenRecord, QuotaRecord)


def chg_key(revision: int) -> str:
    return f"chg/{revision:020d}"


class Retry(Exception):
    """A read hit a compacted etcd revision: read again."""


class EtcdView:
    """Reads at one etcd revision (the first read fixes it): a consistent view, and the
    record reads of :class:`~vshare.store._ledger.View` over the keys of the module note."""

    def __init__(self, client: EtcdClient, prefix: bytes) -> None:
        self.client = client
        self.prefix = prefix
        self.at = 0

    def key(self, name: str) -> bytes:
        return self.prefix + name.encode()

    def range_at(self, key: bytes, end: bytes | None) -> list[KeyValue]:
        try:
            at, kvs = self.client.range(key, end, revision=self.at)
        except EtcdError as exc:
            if exc.compacted:
                raise Retry from None
            raise
        if not self.at:
            self.at = at
        return kvs

    def get(self, name: str) -> KeyValue | None:
        kvs = self.range_at(self.key(name), None)
        return kvs[0] if kvs else None

    def text(self, name: str) -> str | None:
        kv = self.get(name)
        return None if kv is None else kv.value.decode()

    def scan(self, name_prefix: str) -> list[KeyValue]:
        """Every key under ``name_prefix``, in key order."""
        key = self.key(name_prefix)
        return self.range_at(key, prefix_end(key))

    def meta(self) -> tuple[int, int, int]:
        """(the store's revision, the feed's compaction point, ``meta/rev``'s mod_revision)."""
        revision = compacted = mod = 0
        for kv in self.scan("meta/"):
            name = kv.key[len(self.prefix) :].decode()
            if name == REV:
                revision, mod = int(kv.value), kv.mod_revision
            elif name == COMPACTED:
                compacted = int(kv.value)
        return revision, compacted, mod

    def _one(self, cls: type[_R], name: str) -> _R | None:
        kv = self.get(name)
        return None if kv is None else load_as(cls, kv.value)

    def _all(self, cls: type[_R], name_prefix: str) -> list[_R]:
        return [load_as(cls, kv.value) for kv in self.scan(name_prefix)]

    def share(self, share_id: str) -> ShareRecord | None:
        return self._one(ShareRecord, f"share/{share_id}")

    def share_id_named(self, name: str) -> str | None:
        return self.text(f"sharename/{name}")

    def shares(self, tenant: str | None) -> list[ShareRecord]:
        shares = self._all(ShareRecord, "share/")
        return [s for s in shares if tenant is None or s.tenant == tenant]

    def rule(self, rule_id: str) -> RuleRecord | None:
        return self._one(RuleRecord, f"rule/{rule_id}")

    def rules_of(self, share_id: str) -> list[RuleRecord]:
        return self._all(RuleRecord, f"rulesof/{share_id}/")

    def every_rule(self) -> list[RuleRecord]:
        return self._all(RuleRecord, "rule/")

    def instance(self, uuid: str) -> InstanceRecord | None:
        return self._one(InstanceRecord, f"inst/{uuid}")

    def instances(self, tenant: str | None) -> list[InstanceRecord]:
        found = self._all(InstanceRecord, "inst/")
        return [i for i in found if tenant is None or i.tenant == tenant]

    def identity_owner(self, kind: str, value: str) -> str | None:
        return self.text(f"ident/{kind}/{value}")

    def token(self, name: str) -> TokenRecord | None:
        return self._one(TokenRecord, f"token/{name}")

    def token_name_of_hash(self, token_hash: str) -> str | None:
        return self.text(f"tokenhash/{token_hash}")

    def tokens(self) -> list[TokenRecord]:
        return self._all(TokenRecord, "token/")

    def quota(self, tenant: str) -> QuotaRecord | None:
        return self._one(QuotaRecord, f"quota/{tenant}")

    def quotas(self) -> list[QuotaRecord]:
        return self._all(QuotaRecord, "quota/")

    def usage(self, tenant: str) -> tuple[int, int]:
        # A scan of every share: creates and extends are rare, and a per-tenant index
        # would need a migration of existing stores (docs/scale.md: 5 MB at 15,000 shares).
        return usage_of(self._all(ShareRecord, "share/"), tenant)


class EtcdTx(EtcdView):
    """One optimistic write (:class:`~vshare.store._ledger.Tx`): what it read (through the
    view) and what it will write."""

    def __init__(self, client: EtcdClient, prefix: bytes) -> None:
        super().__init__(client, prefix)
        current, self.compacted, self.rev_mod = self.meta()
        self.revision = current + 1  # the revision this write's changes get
        self.ops: list[dict[str, Any]] = []
        self.changes: list[list[Any]] = []

    def put(self, name: str, value: str) -> None:
        self.ops.append(Op.put(self.key(name), value.encode()))

    def delete(self, name: str) -> None:
        self.ops.append(Op.delete(self.key(name)))

    def change(self, kind: Kind, key: str, op: str, data: str | None = None) -> None:
        self.changes.append([kind, key, op, data])

    def put_share(self, old: ShareRecord | None, new: ShareRecord, data: str) -> None:
        if old is None or old.name != new.name:
            if old is not None:
                self.delete(f"sharename/{old.name}")
            self.put(f"sharename/{new.name}", new.id)
        self.put(f"share/{new.id}", data)

    def drop_share(self, share: ShareRecord, rules: Sequence[RuleRecord]) -> None:
        for rule in rules:
            self.delete(f"rule/{rule.id}")
        key = self.key(f"rulesof/{share.id}/")
        self.ops.append(Op.delete(key, prefix_end(key)))
        self.delete(f"share/{share.id}")
        self.delete(f"sharename/{share.name}")

    def put_rule(self, old: RuleRecord | None, new: RuleRecord, data: str) -> None:
        self.put(f"rule/{new.id}", data)
        self.put(f"rulesof/{new.share_id}/{new.id}", data)

    def drop_rule(self, rule: RuleRecord) -> None:
        self.delete(f"rule/{rule.id}")
        self.delete(f"rulesof/{rule.share_id}/{rule.id}")

    def put_instance(self, old: InstanceRecord | None, new: InstanceRecord, data: str) -> None:
        old_keys = frozenset() if old is None else old.instance.keys
        for kind, value in sorted(old_keys - new.instance.keys):
            self.delete(f"ident/{kind}/{value}")
        for kind, value in sorted(new.instance.keys):
            self.put(f"ident/{kind}/{value}", new.uuid)
        self.put(f"inst/{new.uuid}", data)

    def drop_instance(self, record: InstanceRecord) -> None:
        for kind, value in sorted(record.instance.keys):
            self.delete(f"ident/{kind}/{value}")
        self.delete(f"inst/{record.uuid}")

    def put_token(self, token: TokenRecord, data: str) -> None:
        self.put(f"token/{token.name}", data)
        self.put(f"tokenhash/{token.hash}", token.name)

    def drop_token(self, token: TokenRecord) -> None:
        self.delete(f"token/{token.name}")
        self.delete(f"tokenhash/{token.hash}")

    def put_quota(self, quota: QuotaRecord, data: str) -> None:
        self.put(f"quota/{quota.tenant}", data)

    def drop_quota(self, tenant: str) -> None:
        self.delete(f"quota/{tenant}")
