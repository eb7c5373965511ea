"""Per-tenant quotas, the part every store shares: effective limits, usage, the check.

Manila's model: a tenant may hold at most ``shares`` shares whose sizes add up to at most
``gigabytes`` GiB; -1 is no limit. A tenant's override sets either limit or both; what it
leaves unset comes from the defaults record, and what that leaves unset from
:data:`DEFAULT_QUOTA`. Usage is every share of the tenant in the store, whatever its status
(a share in ``error`` or ``deleting`` still holds its directory and its name), as Manila
counts until the share is gone.

A store calls :func:`check_share` inside the write transaction of ``create_share`` and of an
``update_share`` that grows a share (:func:`grows`), with the :class:`QuotaUsage` it read in
that same transaction: so two racing creates cannot both take the last share of a quota.
Only growth is checked: a tenant over a limit an admin lowered may still shrink and delete,
change statuses and cache modes, and is refused only what would take it further.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from vshare.store._errors import OverQuota
from vshare.store._records import UNLIMITED, QuotaRecord, ShareRecord

__all__ = ["DEFAULT_QUOTA", "QuotaUsage", "check_share", "grows", "tally", "usage_of"]

#: The built-in defaults: Manila's (``quota_shares`` 50, ``quota_gigabytes`` 1000), so an
#: operator who knows Manila meets no surprise, and a tenant token alone cannot claim more
#: of a shared volume than that until an admin says so. Stored defaults (``vshare quota set
#: --default``) replace them for the whole fleet; overrides, for one tenant.
DEFAULT_QUOTA: Final = QuotaRecord(shares=50, gigabytes=1000)


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaUsage:
    """A tenant's effective limits (-1: none) and what it uses, read at one revision, and
    the stored records they come from (``override``, ``defaults``: empty when not stored)."""

    tenant: str
    shares: int
    gigabytes: int
    used_shares: int
    used_gigabytes: int
    override: QuotaRecord
    defaults: QuotaRecord


def _first(*values: int | None) -> int:
    for value in values:
        if value is not None:
            return value
    raise AssertionError("DEFAULT_QUOTA sets every limit")


def usage_of(shares: Iterable[ShareRecord], tenant: str) -> tuple[int, int]:
    """(how many shares, how many GiB) of ``tenant`` among ``shares``."""
    mine = [s.size_gib for s in shares if s.tenant == tenant]
    return len(mine), sum(mine)


def tally(
    tenant: str,
    defaults: QuotaRecord | None,
    override: QuotaRecord | None,
    used_shares: int,
    used_gigabytes: int,
) -> QuotaUsage:
    """The tenant's effective limits from its stored records (None: not stored)."""
    defaults = defaults or QuotaRecord()
    override = override or QuotaRecord(tenant=tenant)
    return QuotaUsage(
        tenant=tenant,
        shares=_first(override.shares, defaults.shares, DEFAULT_QUOTA.shares),
        gigabytes=_first(override.gigabytes, defaults.gigabytes, DEFAULT_QUOTA.gigabytes),
        used_shares=used_shares,
        used_gigabytes=used_gigabytes,
        override=override,
        defaults=defaults,
    )


def grows(old: ShareRecord, new: ShareRecord) -> bool:
    """Whether an update from ``old`` to ``new`` needs the quota check (a larger size)."""
    return new.size_gib > old.size_gib


def check_share(usage: QuotaUsage, old: ShareRecord | None, new: ShareRecord) -> None:
    """Refuse a create (``old`` None) or an update that would take ``new.tenant`` over a
    limit. ``usage`` counts ``old`` (it is stored) but not a share being created.

    Raises:
        OverQuota: one line naming the tenant, the limit and the figure it would reach.
    """
    tenant = new.tenant
    if old is None and usage.shares != UNLIMITED and usage.used_shares + 1 > usage.shares:
        raise OverQuota(
            f"tenant {tenant} is over its quota: {usage.used_shares + 1} shares, the limit"
            f" (shares) is {usage.shares}"
        )
    added = new.size_gib - (0 if old is None else old.size_gib)
    total = usage.used_gigabytes + added
    if added > 0 and usage.gigabytes != UNLIMITED and total > usage.gigabytes:
        raise OverQuota(
            f"tenant {tenant} is over its quota: {total} GiB in its shares, the limit"
            f" (gigabytes) is {usage.gigabytes} GiB"
        )
