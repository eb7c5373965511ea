"""Lookups of a directory's names after its listing grew older than the cache mode's
timeout (``find | xargs stat``, ``rm -rf``, ``ls -l`` a second later) have the directory
listed again with its entries' attributes, instead of a round trip each; what they are
told is what the gateway has now."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.fuse.conftest import GatewayProc, MountFactory
from tests.fuse.relay import Relay
from vshare import protocol as p

FILES = 200


def _sent(r: Relay, kind: type) -> int:
    return sum(isinstance(m, kind) for g in r.together for m in g)


def _files(d: Path, size: int) -> None:
    for i in range(FILES):
        (d / f"f{i:03d}").write_bytes(b"x" * size)


def _listed(
    gateway_proc: GatewayProc, relay: Relay, mount: MountFactory, cache: str
) -> tuple[Path, Path]:
    """A directory of FILES one-byte files, listed through a fresh mount: (on the host,
    through the mount)."""
    d = gateway_proc.share_dir("alpha") / "d"
    d.mkdir()
    _files(d, 1)
    m = mount(relay.uri, "alpha", cache).path / "d"
    assert len(os.listdir(m)) == FILES
    return d, m


def test_stale_lookups_relist_the_directory(
    gateway_proc: GatewayProc, relay: Relay, mount: MountFactory
) -> None:
    d, m = _listed(gateway_proc, relay, mount, "auto")
    _files(d, 7)  # changed on the host after the listing
    time.sleep(1.2)  # the listing and the kernel's entries are older than auto's second
    lookups, listings = _sent(relay, p.Tgetattrat), _sent(relay, p.Treaddirplus)
    sizes = {os.stat(m / f"f{i:03d}").st_size for i in range(FILES)}
    assert sizes == {7}  # what the gateway has now, not the listing's
    asked = _sent(relay, p.Tgetattrat) - lookups
    # One per 32 names (6) before the directory is listed again; then none.
    assert 2 <= asked <= FILES // 32 + 1, asked
    assert _sent(relay, p.Treaddirplus) > listings


def test_a_name_removed_since_is_absent_after_the_relisting(
    gateway_proc: GatewayProc, relay: Relay, mount: MountFactory
) -> None:
    d, m = _listed(gateway_proc, relay, mount, "auto")
    (d / f"f{FILES - 1:03d}").unlink()
    time.sleep(1.2)
    for i in range(FILES - 1):
        assert os.stat(m / f"f{i:03d}").st_size == 1
    assert not (m / f"f{FILES - 1:03d}").exists()


def test_no_relisting_in_mode_none(
    gateway_proc: GatewayProc, relay: Relay, mount: MountFactory
) -> None:
    _, m = _listed(gateway_proc, relay, mount, "none")
    listings = _sent(relay, p.Treaddirplus)
    for i in range(40):
        os.stat(m / f"f{i:03d}")
    assert _sent(relay, p.Treaddirplus) == listings


def test_a_small_directory_never_listed_is_listed_after_some_lookups(
    gateway_proc: GatewayProc, relay: Relay, mount: MountFactory
) -> None:
    d = gateway_proc.share_dir("alpha") / "d"
    d.mkdir()
    _files(d, 3)
    m = mount(relay.uri, "alpha", "auto").path / "d"
    assert {os.stat(m / f"f{i:03d}").st_size for i in range(FILES)} == {3}
    assert _sent(relay, p.Treaddirplus) >= 1
    assert _sent(relay, p.Tgetattrat) <= 8 + 2  # the directory's own lookup, and a spare


def test_a_directory_of_few_names_is_not_listed_again_for_them(
    gateway_proc: GatewayProc, relay: Relay, mount: MountFactory
) -> None:
    """``find | xargs stat`` of a tree of small directories: a listing of a directory of
    three names, all of them looked up, would save nothing (RELIST_GAIN)."""
    d = gateway_proc.share_dir("alpha") / "small"
    d.mkdir()
    for name in ("a", "b", "c"):
        (d / name).write_bytes(b"1")
    m = mount(relay.uri, "alpha", "auto").path / "small"
    assert sorted(os.listdir(m)) == ["a", "b", "c"]
    time.sleep(1.2)
    lookups, listings = _sent(relay, p.Tgetattrat), _sent(relay, p.Treaddirplus)
    assert [os.stat(m / n).st_size for n in ("a", "b", "c")] == [1, 1, 1]
    assert _sent(relay, p.Treaddirplus) == listings
    assert _sent(relay, p.Tgetattrat) - lookups == 4  # the directory's name, then each
