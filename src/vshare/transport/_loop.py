"""Running an event loop: asyncio, with uvloop where it is installed (the gateway, the
all-in-one node and the FUSE client all run on it; their connections are ``_connection``'s,
whose waits are cheapest there)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar, TypeVarTuple

import anyio

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def run_async(fn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
    """``anyio.run`` on asyncio, with uvloop when it is installed: its loop costs a third
    less per request than asyncio's (see docs/benchmarks.md)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        use_uvloop = False
    else:
        use_uvloop = True
    return anyio.run(fn, *args, backend="asyncio", backend_options={"use_uvloop": use_uvloop})
