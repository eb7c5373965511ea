"""Quotas, Manila's per tenant: read by the tenant (its own) and anyone (the defaults),
set by the admin; enforced by the store in the write's own transaction."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from vshare.control._base import ServiceBase
from vshare.control._caller import Caller
from vshare.store import QuotaRecord, QuotaUsage, tally, usage_of

log = logging.getLogger("vshare.control")


class QuotaOps(ServiceBase):
    """The quota methods of :class:`~vshare.control.ControlService`."""

    def get_quota(self, caller: Caller, tenant: str | None = None) -> QuotaUsage:
        """The tenant's limits and usage: a tenant its own (``tenant`` None or its own),
        the admin any tenant's.

        Raises:
            Forbidden: a tenant asking for another tenant's.
            ValueError: the admin naming no tenant.
        """
        return self.store.quota_usage(self._tenant_for(caller, tenant, "see quotas"))

    def default_quota(self, caller: Caller) -> QuotaUsage:
        """The limits of a tenant without an override (anyone may see them), with
        ``tenant`` empty and no usage."""
        del caller  # every token may know the defaults, as in Manila
        stored = {q.tenant: q for q in self.store.list_quotas()}
        return tally("", stored.get(""), None, 0, 0)

    def list_quotas(self, caller: Caller) -> tuple[QuotaUsage, list[QuotaUsage]]:
        """The defaults, and each tenant that has an override or a share (admin only),
        ordered by tenant. For people: read in a few transactions, not one."""
        self._admin_only(caller, "list quotas")
        stored = {q.tenant: q for q in self.store.list_quotas()}
        shares = self.store.list_shares()
        tenants = sorted({s.tenant for s in shares} | (stored.keys() - {""}))
        defaults = stored.get("")
        return tally("", defaults, None, 0, 0), [
            tally(t, defaults, stored.get(t), *usage_of(shares, t)) for t in tenants
        ]

    def set_quota(
        self, caller: Caller, tenant: str | None, changes: Mapping[str, int | None]
    ) -> QuotaUsage:
        """Set limits (admin only) of ``tenant``, or of the defaults (``tenant`` None):
        ``changes`` maps ``shares``/``gigabytes`` to a limit (-1: none) or None (unset:
        the defaults' limit applies again); limits not named are kept. Returns what
        :meth:`get_quota` (or :meth:`default_quota`) then says.

        Raises:
            Forbidden: not the admin.
            ValueError: nothing to set, an unknown name, a limit below -1.
        """
        self._admin_only(caller, "set quotas")
        unknown = sorted(set(changes) - {"shares", "gigabytes"})
        if unknown or not changes:
            raise ValueError("give the limits to set: shares, gigabytes (or both)")
        key = tenant or ""
        stored = {q.tenant: q for q in self.store.list_quotas()}
        old = stored.get(key, QuotaRecord(tenant=key))
        quota = QuotaRecord(
            tenant=key,
            shares=changes.get("shares", old.shares),
            gigabytes=changes.get("gigabytes", old.gigabytes),
        )
        self.store.put_quota(quota)
        log.info(
            "quota of %s set to shares=%s gigabytes=%s by %s",
            f"tenant {tenant}" if tenant else "every tenant (defaults)",
            quota.shares,
            quota.gigabytes,
            caller,
        )
        return self.get_quota(caller, tenant) if tenant else self.default_quota(caller)
