"""One real glusterd and one single-brick volume for the whole session.

Every test here is marked ``gluster``. Without glusterd (Debian ``glusterfs-server``, which
``make test`` installs) or root, the tests are skipped on a developer machine and fail in CI
(``CI`` set in the environment): there they must run.

Connections: ``glfs_fini`` takes ~10 s, so the session keeps one ``glfs`` for the volume
(``gluster.keep_connections``) shared by every backend the tests open and close, and
finalises it once at the end (``gluster.shutdown``), before the volume is stopped.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gluster.volume import GfapiVolumeFixture
from vshare.backend import gluster
from vshare.testing import glusterd as gd

VOLUME = "vshare-tests"
_counter = itertools.count()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.gluster)


class Session:
    """The session's volume and its one gfapi connection (for the host-side fixture)."""

    def __init__(self, volume: gd.GlusterVolume, log_file: Path) -> None:
        self.volume = volume
        self.uri = volume.uri
        # Holds the glfs for the host side; the first backend sets gfapi's log file.
        self._keeper = gluster.GlusterBackend(volume.uri, log_file=str(log_file))
        self.fs = self._keeper._fs

    def fresh_root(self, prefix: str = "t") -> str:
        """A new, empty directory of the volume (``runs/<prefix><n>``) for one test's volume."""
        rel = f"runs/{prefix}{next(_counter)}"
        GfapiVolumeFixture(self.fs, "").host_mkdir(rel)
        return rel

    def host(self, root: str) -> GfapiVolumeFixture:
        return GfapiVolumeFixture(self.fs, root)

    def close(self) -> None:
        self._keeper.close()


@pytest.fixture(scope="session")
def gluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    why = gd.available()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"GlusterFS tests must run in CI: {why}")
        pytest.skip(why)
    base = tmp_path_factory.mktemp("glusterd")
    gluster.keep_connections(True)
    with gd.gluster_volume(VOLUME, base, options=gluster.CACHE_VOLUME_OPTIONS) as volume:
        session = Session(volume, base / "gfapi.log")
        try:
            yield session
        finally:
            session.close()
            started = time.monotonic()
            gluster.shutdown()  # glfs_fini before the volume goes
            gluster.keep_connections(False)
            print(f"\nglfs_fini: {time.monotonic() - started:.1f} s")


@pytest.fixture
def gfs(gluster_session: Session) -> int:
    """The session's ``glfs`` pointer."""
    return gluster_session.fs
