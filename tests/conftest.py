"""Fixtures shared by the transport and gateway tests: a short temporary directory (Unix
socket paths are limited to 107 bytes), the vsock stand-in, and TLS certificates."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.transport.certs import Certs, make_certs
from tests.transport.fakevsock import FakeVsockNet
from vshare.transport import _vsock


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vs-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fake_vsock(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> FakeVsockNet:
    net = FakeVsockNet(short_dir)
    monkeypatch.setattr(_vsock, "_vsock_socket", net.socket)
    return net


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))
