"""Servers for the client suite: the real gateway (in-process, Unix socket) and diod (a
9P2000.L server nobody here wrote, as a subprocess on a loopback TCP port)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.gateway.conftest import GatewayFactory, anyio_backend, start_gateway, volume
from tests.processes import free_port
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
    port = free_port()
    proc = subprocess.Popen(
        [
            "diod",
            "-f",
            "-n",
            "-l",
            f"127.0.0.1:{port}",
            "-e",
            str(export),
            "-c",
            "/dev/null",
            "-L",
            str(tmp_path / "diod.log"),
        ],
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("diod did not start") from None
                time.sleep(0.05)
        yield Server("diod", f"tcp://127.0.0.1:{port}", str(export), export, n_uname=os.getuid())
    finally:
        proc.kill()
        proc.wait()


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
