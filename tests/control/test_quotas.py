"""The control plane's quota rules over a real SQLite store and POSIX volume: who may see
and set quotas, and a refused create or extend leaving no trace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vshare.control import ADMIN, Caller, ControlService, Forbidden, OverQuota
from vshare.store import QuotaRecord, SqliteStore

ACME = Caller(tenant="acme", name="acme-token")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ControlService]:
    (tmp_path / "vol").mkdir()
    svc = ControlService(SqliteStore(tmp_path / "state.db"), {"default": f"posix:{tmp_path}/vol"})
    yield svc
    svc.close()
    svc.store.close()


def test_a_refused_create_or_extend_leaves_no_trace(
    service: ControlService, tmp_path: Path
) -> None:
    service.set_quota(ADMIN, "acme", {"shares": 1, "gigabytes": 8})
    share = service.create_share(ACME, "one", 5)
    revision = service.store.revision()
    with pytest.raises(OverQuota, match="2 shares, the limit"):
        service.create_share(ACME, "two", 1)
    with pytest.raises(OverQuota, match="9 GiB in its shares"):
        service.extend_share(ACME, "one", 9)
    # No record, no directory, no pass through "extending": not a single revision.
    assert service.store.revision() == revision
    assert [p.name for p in (tmp_path / "vol" / "shares").iterdir()] == [share.id]
    assert service.extend_share(ACME, "one", 8).size_gib == 8


def test_set_keeps_what_it_is_not_given(service: ControlService) -> None:
    service.set_quota(ADMIN, "acme", {"shares": 4})
    usage = service.set_quota(ADMIN, "acme", {"gigabytes": -1})
    assert usage.override == QuotaRecord(tenant="acme", shares=4, gigabytes=-1)
    usage = service.set_quota(ADMIN, "acme", {"shares": None})
    assert (usage.shares, usage.gigabytes) == (50, -1)
    service.set_quota(ADMIN, None, {"shares": 7})
    assert service.default_quota(ACME).shares == 7 == service.get_quota(ACME).shares
    with pytest.raises(ValueError, match="give the limits to set"):
        service.set_quota(ADMIN, "acme", {"snapshots": 1})


def test_only_the_admin_sets_and_lists(service: ControlService) -> None:
    with pytest.raises(Forbidden):
        service.set_quota(ACME, "acme", {"shares": 100})
    with pytest.raises(Forbidden):
        service.list_quotas(ACME)
    with pytest.raises(Forbidden, match="cannot see quotas for globex"):
        service.get_quota(ACME, "globex")
    with pytest.raises(ValueError, match="an admin must say which tenant"):
        service.get_quota(ADMIN)
    service.create_share(ADMIN, "g", 3, tenant="globex")
    defaults, tenants = service.list_quotas(ADMIN)
    assert defaults.tenant == "" and [(t.tenant, t.used_gigabytes) for t in tenants] == [
        ("globex", 3)
    ]
