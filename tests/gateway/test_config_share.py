"""The gateway's Share (gateway/share.py) and what the store follower makes of records."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from vshare.gateway import ConfigError, InstanceTable, Share, StoreFollower, shares_of
from vshare.store import QuotaRecord, ShareStatus, SqliteStore
from vshare.terms import share_name_problem
from vshare.testing.store_conformance import make_share

BACKEND = "posix:/srv/vol"
AVAILABLE = ShareStatus.AVAILABLE


@pytest.mark.parametrize("name", ["alpha", "web-1", "a.b_c", "0", "x" * 255])
def test_a_share_name_follows_the_shared_rule(name: str) -> None:
    assert Share(name, "shares/x").name == name


@pytest.mark.parametrize("name", ["", "a/b", "a;b", "my share", "-x", ".hidden", "x" * 256])
def test_a_share_name_outside_the_rule_is_refused(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        Share(name, "shares/x")
    assert str(info.value) == share_name_problem(name)


def test_a_record_the_gateway_cannot_serve_is_left_out(tmp_path: Path) -> None:
    with SqliteStore(str(tmp_path / "state.db")) as store:
        store.create_share(make_share("good", status=AVAILABLE))
        store.create_share(make_share("not good", path="shares/other", status=AVAILABLE))
        served = shares_of(store.snapshot(), BACKEND)
    assert [s.name for s in served] == ["good"]


@pytest.mark.anyio
async def test_a_quota_write_moves_the_revision_without_a_rebuild(tmp_path: Path) -> None:
    applied: list[Sequence[Share]] = []
    with SqliteStore(str(tmp_path / "state.db")) as store:
        store.create_share(make_share("alpha", status=AVAILABLE))
        follower = StoreFollower(
            store, backend=BACKEND, apply_shares=applied.append, instances=InstanceTable()
        )
        await follower.load()
        assert [[s.name for s in shares] for shares in applied] == [["alpha"]]
        store.put_quota(QuotaRecord(tenant="acme", shares=5))
        await follower._step()
        assert follower.revision == store.revision()
        assert len(applied) == 1  # the view was not rebuilt, nor the shares applied again
