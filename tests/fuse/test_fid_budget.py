"""The FUSE client within a gateway's fid budget: the gateway answers EMFILE past its
per-session bound (``max_fids``), which the client cannot ask for; it gives fids back and
goes on, and no application sees the refusal."""

from __future__ import annotations

import os
import subprocess

from tests.fuse.conftest import GatewayFactory, MountFactory

FILES = 700


def test_more_files_in_use_than_the_gateway_allows_fids(
    gateway_with: GatewayFactory, mount: MountFactory
) -> None:
    gw = gateway_with(settings="max_fids = 256")
    share = gw.share_dir("alpha")
    for i in range(FILES):
        (share / f"f{i:04d}").write_bytes(b"x" * (i % 7))
    m = mount(gw.uri)
    # The kernel keeps a dentry, and so the client a fid, for every name it looked up:
    # far more than 256 by the end. Every stat and read must succeed all the same.
    for i in range(FILES):
        path = m.path / f"f{i:04d}"
        assert os.stat(path).st_size == i % 7
    for i in range(0, FILES, 3):
        with open(m.path / f"f{i:04d}", "rb") as f:
            assert f.read() == b"x" * (i % 7)
    done = subprocess.run(["ls", "-l", str(m.path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == FILES + 1  # and the "total" line
    assert "refused a fid (EMFILE)" in m.stderr()
    assert "budget fids: refused" in gw.log.read_text()
