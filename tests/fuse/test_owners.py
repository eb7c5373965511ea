"""What a chown shows through a mount in ``auto``: the FUSE client answers a chown from
what it knows once it has learnt whether the gateway applies owners (``passthrough``) or
not (``squash``); it learns that only from a chown that asks for a change."""

from __future__ import annotations

import os

import pytest

from .conftest import GatewayFactory, MountFactory


@pytest.mark.parametrize("ownership", ["squash", "passthrough"])
def test_a_chown_shows_what_the_gateway_did(
    gateway_with: GatewayFactory, mount: MountFactory, ownership: str
) -> None:
    gw = gateway_with(ownership=ownership)
    m = mount(gw.uri, "alpha", "auto").path
    back = gw.share_dir("alpha")
    (m / "same").write_bytes(b"")
    owner = os.stat(m / "same")
    # a chown to the owners it has (cp -a, tar and git as root do it): it tells nothing
    os.chown(m / "same", owner.st_uid, owner.st_gid)
    (m / "f").write_bytes(b"")
    os.chown(m / "f", 1, 1)
    seen = os.stat(m / "f")
    on_host = os.stat(back / "f")
    assert (seen.st_uid, seen.st_gid) == (on_host.st_uid, on_host.st_gid)
    expected = (1, 1) if ownership == "passthrough" else (owner.st_uid, owner.st_gid)
    assert (on_host.st_uid, on_host.st_gid) == expected
