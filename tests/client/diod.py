"""diod (a 9P2000.L server nobody here wrote) as a subprocess on a loopback TCP port, for
the client suite and the FUSE client's test against a server that keeps no request order."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.processes import free_port


@contextmanager
def running_diod(export: Path, log: Path) -> Iterator[int]:
    """diod serving ``export`` (logging to ``log``) until the block ends; yields its port
    once it accepts connections.

    Raises:
        RuntimeError: diod exited or did not listen within 10 s.
    """
    port = free_port()
    argv = ["diod", "-f", "-n", "-l", f"127.0.0.1:{port}", "-e", str(export)]
    proc = subprocess.Popen([*argv, "-c", "/dev/null", "-L", str(log)])
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
        yield port
    finally:
        proc.kill()
        proc.wait()
