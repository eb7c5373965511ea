"""A directory read has its first subdirectories' listings asked for in the background
(``find``, ``du``, ``rm -r``, ``tar c`` read them next): the program's reads of them then
cost no request. At most 16 of one directory's; none in cache mode ``none``."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.fuse.conftest import GatewayProc, MountFactory
from tests.fuse.relay import Relay
from vshare import protocol as p


def _listings(r: Relay) -> int:
    return sum(isinstance(m, p.Treaddirplus) and m.offset == 0 for g in r.together for m in g)


def _settled(r: Relay, want: int) -> int:
    """The listings seen once they stop coming (at least ``want`` of them, or 5 s)."""
    deadline = time.monotonic() + 5
    while _listings(r) < want and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # and no more after that
    return _listings(r)


def _tree(share: Path, dirs: int) -> None:
    for i in range(dirs):
        (share / f"d{i:02d}").mkdir()
        for j in range(3):
            (share / f"d{i:02d}" / f"f{j}").write_bytes(b"x" * j)


def test_subdirectories_are_listed_ahead(
    gateway_proc: GatewayProc, relay: Relay, mount: MountFactory
) -> None:
    share = gateway_proc.share_dir("alpha")
    _tree(share, 20)
    (share / "file").write_bytes(b"not a directory")
    m = mount(relay.uri, "alpha", "always").path
    assert len(os.listdir(m)) == 21
    assert _settled(relay, 17) == 17  # the root's, and 16 of its 20 subdirectories'
    free = 0  # subdirectories listed with no request
    for i in range(20):
        before = sum(len(g) for g in relay.together)
        assert sorted(os.listdir(m / f"d{i:02d}")) == ["f0", "f1", "f2"]
        time.sleep(0.05)
        free += sum(len(g) for g in relay.together) == before
    assert free == 16
    assert _settled(relay, 21) == 21  # only the 4 not listed ahead were asked for


def test_nothing_is_listed_ahead_in_mode_none(
    gateway_proc: GatewayProc, relay: Relay, mount: MountFactory
) -> None:
    _tree(gateway_proc.share_dir("alpha"), 3)
    m = mount(relay.uri, "alpha", "none").path
    assert len(os.listdir(m)) == 3
    assert _settled(relay, 1) == 1
