"""Servers for the client suite: the real gateway (in-process, Unix socket) and diod (a
9P2000.L server nobody here wrote, as a subprocess on a loopback TCP port)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.client.diod import running_diod
from tests.gateway.conftest import GatewayFactory, anyio_backend, start_gateway, volume
from vshare.client import AsyncShare, open_share

__all__ = ["anyio_backend", "start_gateway", "volume"]


@dataclass
class Server:
    kind: str  # "gateway" or "diod"
    uri: str
    share: str
    root: Path  # the share's directory on this machine
    n_uname: int = 0xFFFFFFFF

    def open(self, **kw: object) -> object:
        return open_share(self.uri, self.share, n_uname=self.n_uname, **kw)  # type: ignore[arg-type]


@pytest.fixture
def diod_server(tmp_path: Path) -> Iterator[Server]:
    if shutil.which("diod") is None:
        pytest.skip("diod is missing: `make test` installs Debian diod")
    export = tmp_path / "export"
    export.mkdir()
    with running_diod(export, tmp_path / "diod.log") as port:
        yield Server("diod", f"tcp://127.0.0.1:{port}", str(export), export, n_uname=os.getuid())


@pytest.fixture(params=["gateway", "diod"])
async def server(
    request: pytest.FixtureRequest, start_gateway: GatewayFactory
) -> AsyncIterator[Server]:
    if request.param == "diod":
        yield request.getfixturevalue("diod_server")
        return
    async with start_gateway() as gw:
        yield Server("gateway", gw.uri, "alpha", gw.share_dir("alpha"))


@pytest.fixture
async def share(server: Server) -> AsyncIterator[AsyncShare]:
    async with server.open(reconnect_timeout=2.0) as s:  # type: ignore[attr-defined]
        yield s
