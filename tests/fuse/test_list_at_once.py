"""A small directory is listed in one round trip: its Twalkopen, Treaddirplus and Tclunk
go in one write (requests on one fid keep their order at the gateway), rather than a round
trip for the open, one for the listing and the Tclunk after. A large one, whose entries
may not fit one reply, is opened and listed as before."""

from __future__ import annotations

import os
import time

from tests.fuse.conftest import GatewayProc, MountFactory
from tests.fuse.relay import Relay


def test_a_small_directory_is_listed_in_one_round_trip(
    gateway_proc: GatewayProc, relay: Relay, mount: MountFactory
) -> None:
    share = gateway_proc.share_dir("alpha")
    (share / "small").mkdir()
    for i in range(3):
        (share / "small" / f"f{i}").write_bytes(b"x" * i)
    (share / "large").mkdir()
    for i in range(6000):  # its size on the host (12+ bytes an entry) times 16 > one reply
        (share / "large" / f"entry-{i:05d}").touch()
    m = mount(relay.uri, "alpha", "auto").path
    assert sorted(os.listdir(m)) == ["large", "small"]  # their sizes known now
    before = len(relay.listings_at_once())
    assert sorted(os.listdir(m / "small")) == ["f0", "f1", "f2"]
    assert [os.stat(m / "small" / f"f{i}").st_size for i in range(3)] == [0, 1, 2]
    assert len(relay.listings_at_once()) == before + 1
    assert len(os.listdir(m / "large")) == 6000
    time.sleep(0.2)  # (its Tclunk is sent behind)
    assert len(relay.listings_at_once()) == before + 1
