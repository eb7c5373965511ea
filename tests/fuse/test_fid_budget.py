"""The FUSE client within a gateway's fid budget: the gateway answers EMFILE past its
per-session bound (``max_fids``), which the client cannot ask for; it gives fids back and
goes on, and no application sees the refusal."""

from __future__ import annotations

import os
import subprocess

from tests.fuse.conftest import GatewayFactory, MountFactory

DIRS = 400


def test_more_directories_in_use_than_the_gateway_allows_fids(
    gateway_with: GatewayFactory, mount: MountFactory
) -> None:
    gw = gateway_with(settings="max_fids = 256")
    share = gw.share_dir("alpha")
    for i in range(DIRS):
        (share / f"d{i:04d}").mkdir()
        (share / f"d{i:04d}" / "f").write_bytes(b"x" * (i % 7))
    mounted = mount(gw.uri)
    m = mounted.path
    # The client keeps a walked fid for every directory it listed or worked in (files it
    # only looks at need none): far more than 256 by the end. Every listing, stat and read
    # must succeed all the same.
    for i in range(DIRS):
        d = m / f"d{i:04d}"
        assert os.listdir(d) == ["f"]
        assert os.stat(d / "f").st_size == i % 7
    for i in range(0, DIRS, 3):
        with open(m / f"d{i:04d}" / "f", "rb") as f:
            assert f.read() == b"x" * (i % 7)
    done = subprocess.run(["ls", "-lR", str(m)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(" f\n") == DIRS
    assert "refused a fid (EMFILE)" in mounted.stderr()
    assert "budget fids: refused" in gw.log.read_text()
