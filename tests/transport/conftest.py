"""Fixtures of the transport tests (the short directory, the vsock stand-in and the TLS
certificates are in tests/conftest.py, shared with the gateway tests)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
