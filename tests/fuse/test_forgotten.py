"""Inodes the kernel forgets (``drop_caches``) are kept cold by the FUSE client
(``fuse/_inodes.py``): a lookup of their names while their attributes are as fresh as the
cache mode promises costs no request; in ``none`` each one asks the gateway."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import GatewayFactory, MountFactory
from .test_semantics import delta, settled


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("2\n")  # dentries and inodes: FORGETs


@pytest.mark.parametrize("cache", ["always", "none"])
def test_stat_after_the_kernel_forgot_costs_no_requests(
    gateway_with: GatewayFactory, mount: MountFactory, cache: str
) -> None:
    gw = gateway_with(metrics=True)
    m = mount(gw.uri, "alpha", cache).path
    (m / "d").mkdir()
    for i in range(100):
        (m / "d" / f"f{i:03}").write_bytes(b"x" * i)
    drop_caches()
    before = settled(gw)
    sizes = {i: os.stat(m / "d" / f"f{i:03}").st_size for i in range(100)}
    spent = delta(before, settled(gw))
    assert sizes == {i: i for i in range(100)}
    print(f"100 stats after drop_caches, --cache {cache}: {spent}")
    if cache == "none":
        assert sum(spent.values()) >= 100, spent  # each one asks
    else:
        assert sum(spent.values()) == 0, spent


def test_files_read_after_the_kernel_forgot_are_opened_from_their_directory(
    gateway_with: GatewayFactory, mount: MountFactory
) -> None:
    """After ``drop_caches`` in ``always`` the client looks names up from what it kept, so
    no directory holds a fid; opening each file (``tar c``, ``grep -r``) must not walk its
    path from the share root and keep a fid for it: the directory is given one fid, and
    each file is one Twalkopen from it."""
    gw = gateway_with(metrics=True)
    m = mount(gw.uri, "alpha", "always").path
    (m / "d").mkdir()
    for i in range(50):
        (m / "d" / f"f{i:03}").write_bytes(b"%d" % i)
    drop_caches()
    before = settled(gw)
    got = {i: (m / "d" / f"f{i:03}").read_bytes() for i in range(50)}
    spent = delta(before, settled(gw))
    print(f"50 files read after drop_caches, --cache always: {spent}")
    assert got == {i: b"%d" % i for i in range(50)}
    assert spent.get("walkopen") == 50, spent
    assert spent.get("walk", 0) <= 1, spent  # the directory's, once
    assert spent.get("clunk", 0) <= 51, spent
