"""Processes for tests and benchmarks: free loopback ports, polling, stopping by PID."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``cond`` every 10 ms until it holds; the seconds it took.

    Raises:
        TimeoutError: not within ``timeout`` seconds (``what`` names the wait).
    """
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"not within {timeout:g} s: {what}")
        time.sleep(0.01)
    return time.monotonic() - start


def stop(proc: subprocess.Popen[Any] | None, grace: float = 10.0) -> None:
    """SIGTERM ``proc`` by its PID and reap it; SIGKILL if it outlives ``grace`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kill(proc: subprocess.Popen[Any] | None) -> None:
    """SIGKILL ``proc`` by its PID and reap it: nothing is flushed, closed or deregistered."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()
