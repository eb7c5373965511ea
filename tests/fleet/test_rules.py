"""A rule changed in the store on one node reaches every gateway process of the fleet:
two ``vshare gateway run --store etcd://...`` processes each hold a live session of the
tenant; denying the rule cuts both within a second (the next request fails with EACCES,
or the session is closed), and granting it again lets both attach within a second.
``pytest -s`` prints the delays."""

from __future__ import annotations

import errno
import os
import time

import anyio
import pytest

from vshare import protocol as p
from vshare.client import Client, open_client
from vshare.testing.store_conformance import make_rule

from .conftest import Fleet

pytestmark = [pytest.mark.etcd, pytest.mark.slow]


async def cut(c: Client, root: int) -> bool:
    """True once the session is refused (EACCES) or closed by the gateway."""
    try:
        await c.call(p.Tgetattr(root, p.GETATTR_BASIC), p.Rgetattr)
    except OSError as exc:
        assert exc.errno in (errno.EACCES, errno.ECONNRESET), exc
        return True
    return False


async def attaches(uri: str, share: str) -> bool:
    try:
        async with open_client(uri, 65536) as c:
            await c.attach(share)
    except OSError as exc:
        assert exc.errno in (errno.EACCES, errno.ENOENT), exc
        return False
    return True


def test_a_denied_rule_cuts_the_tenant_on_every_gateway_within_a_second(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    gateways = [fleet.add_gateway(), fleet.add_gateway()]
    share = fleet.share.name
    figures: dict[str, list[float]] = {"deny": [], "allow": []}

    async def scenario() -> None:
        for _ in range(3):
            async with (
                open_client(gateways[0].uri, 65536) as c0,
                open_client(gateways[1].uri, 65536) as c1,
            ):
                roots = [(await c.attach(share))[0] for c in (c0, c1)]
                for c, root in zip((c0, c1), roots, strict=True):
                    assert not await cut(c, root)
                start = time.monotonic()
                await anyio.to_thread.run_sync(fleet.control.delete_rule, fleet.rule.id)
                with anyio.fail_after(3):
                    for c, root in zip((c0, c1), roots, strict=True):
                        while not await cut(c, root):
                            await anyio.sleep(0.01)
                figures["deny"].append(time.monotonic() - start)
            start = time.monotonic()
            fleet.rule = await anyio.to_thread.run_sync(
                fleet.control.add_rule,
                make_rule(fleet.share.id, str(os.getuid()), access_type="user"),
            )
            with anyio.fail_after(3):
                for g in gateways:
                    while not await attaches(g.uri, share):
                        await anyio.sleep(0.01)
            figures["allow"].append(time.monotonic() - start)

    anyio.run(scenario)
    with capsys.disabled():
        print("\nrule change in etcd → both gateway processes enforce, s:",
              {k: [round(v, 3) for v in vs] for k, vs in figures.items()})  # fmt: skip
    assert max(figures["deny"]) < 1.0, figures
    assert max(figures["allow"]) < 1.0, figures
