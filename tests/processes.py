"""Helpers for tests that run vshare as a separate process."""

from __future__ import annotations

import sys
from pathlib import Path

from vshare.testing.processes import free_port, kill, stop, wait_for

#: The ``vshare`` command of the virtualenv running the tests.
VSHARE = str(Path(sys.executable).parent / "vshare")

__all__ = ["VSHARE", "free_port", "kill", "stop", "wait_for"]
