"""Helpers for tests that run vshare as a separate process."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

#: The ``vshare`` command of the virtualenv running the tests.
VSHARE = str(Path(sys.executable).parent / "vshare")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
