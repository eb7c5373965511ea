"""A real gateway on a real Unix socket, over a POSIX volume in a temporary directory.

Layout of the volume::

    vol/secret.txt            outside every share: must never be readable
    vol/shares/alpha/         share "alpha" (rw for this uid)
    vol/shares/beta/          share "beta"  (ro for this uid)
    vol/shares/gamma/         share "gamma" (no rule for anyone here)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from pathlib import Path

import anyio
import pytest

from vshare.backend.posix import PosixBackend
from vshare.client import Client, open_client
from vshare.gateway.config import GatewayConfig, Share
from vshare.gateway.server import Gateway
from vshare.policy import AccessRule, Level

SECRET = b"TOP SECRET: outside every share\n"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Running:
    gateway: Gateway
    uri: str
    volume: Path
    tcp_port: int | None = None

    def share_dir(self, name: str) -> Path:
        return self.volume / "shares" / name

    def client(self, msize: int = 512 * 1024 + 24) -> AbstractAsyncContextManager[Client]:
        return open_client(self.uri, msize)


def base_config() -> GatewayConfig:
    me = str(os.getuid())
    return GatewayConfig(
        shares=(
            Share(
                "alpha",
                "shares/alpha",
                id="id-alpha",
                access=(AccessRule("user", me),),
                uid=1234,
                gid=4321,
            ),
            Share("beta", "shares/beta", access=(AccessRule("user", me, Level.RO),)),
            Share("gamma", "shares/gamma", access=(AccessRule("user", "99999"),)),
        ),
    )


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    vol = tmp_path / "vol"
    for name in ("alpha", "beta", "gamma"):
        (vol / "shares" / name).mkdir(parents=True)
    (vol / "secret.txt").write_bytes(SECRET)
    (vol / "shares" / "beta" / "readme.txt").write_text("read only\n")
    (vol / "shares" / "gamma" / "theirs.txt").write_text("gamma's data\n")
    return vol


GatewayFactory = Callable[..., AbstractAsyncContextManager[Running]]


@pytest.fixture
def start_gateway(volume: Path, tmp_path: Path) -> GatewayFactory:
    """``async with start_gateway(tcp=False, **config_overrides) as running: ...``

    The gateway listens on a Unix socket, and with ``tcp`` also on 127.0.0.1 (any port).
    """
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def start(tcp: bool = False, **overrides: object) -> AsyncIterator[Running]:
        config = replace(base_config(), **overrides)  # type: ignore[arg-type]
        backend = PosixBackend(str(volume))
        gateway = Gateway(config, backend)
        sock = tmp_path / f"gw-{id(gateway)}.sock"
        async with anyio.create_task_group() as tg:
            uris = [f"unix://{sock}", *(["tcp://127.0.0.1:0"] if tcp else [])]
            bound = await tg.start(gateway.serve, uris)
            port = bound[1].port if tcp else None
            try:
                yield Running(gateway, f"unix://{sock}", volume, port)
            finally:
                gateway.shutdown()
        backend.close()

    return start


@pytest.fixture
async def gw(start_gateway: GatewayFactory) -> AsyncIterator[Running]:
    async with start_gateway() as running:
        yield running
