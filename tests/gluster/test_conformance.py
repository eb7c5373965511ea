"""GlusterBackend: the shared conformance suite and escape battery, unchanged.

Each backend the suites make is rooted at a fresh directory of the session's volume
(``gluster://HOST:PORT/VOLUME/runs/tN``), holding the share ``shares/a``; the host side acts
through gfapi (:class:`tests.gluster.volume.GfapiVolumeFixture`).
"""

from __future__ import annotations

import pytest

from tests.backend.name_limits import NameLimitBattery
from tests.gluster.conftest import Session
from vshare.backend.gluster import GlusterBackend
from vshare.testing.backend_conformance import (
    BackendConformance,
    BackendFactory,
    BackendUnderTest,
    EscapeBattery,
)

SHARE = "shares/a"


@pytest.fixture
def backend_factory(gluster_session: Session) -> BackendFactory:
    def make() -> BackendUnderTest:
        root = gluster_session.fresh_root()
        host = gluster_session.host(root)
        host.host_mkdir(SHARE)
        backend = GlusterBackend(f"{gluster_session.uri}/{root}")
        return BackendUnderTest(backend, SHARE, host)

    return make


class TestGlusterConformance(BackendConformance):
    pass


class TestGlusterEscapes(EscapeBattery):
    pass


class TestGlusterNameLimits(NameLimitBattery):
    """NAME_MAX and unencodable names, as every backend refuses them."""
