"""Running an event loop: asyncio, with uvloop where it is installed (the gateway, the
all-in-one node and the FUSE client all run on it; their connections are ``_connection``'s,
whose waits are cheapest there)."""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar, TypeVarTuple

import anyio

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


#: glibc's mallopt parameters, and what they are set to (see keep_freed_memory).
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
_TRIM_ABOVE: Final = 64 * 1024 * 1024
_MMAP_ABOVE: Final = 8 * 1024 * 1024


def keep_freed_memory() -> None:
    """Let malloc keep what is freed for the next allocation, rather than give it back to
    the kernel at once. Each read or write of up to a MiB is a buffer of its size (a frame
    received whole, a reply's data); with glibc's defaults two of them alive at once were
    handed back on every free (brk down, then up: a thousand brk calls a GiB) and came back
    as fresh pages, each faulted in and zeroed again: the receive that filled them cost
    several times the copy itself. Fixed thresholds keep up to ``_TRIM_ABOVE`` bytes free in
    the heap and serve buffers below ``_MMAP_ABOVE`` from it. Nothing on other C
    libraries."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_ABOVE)
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_ABOVE)


def run_async(fn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
    """``anyio.run`` on asyncio, with uvloop when it is installed: its loop costs a third
    less per request than asyncio's (see docs/benchmarks.md); malloc keeping freed memory
    (:func:`keep_freed_memory`)."""
    keep_freed_memory()
    try:
        import uvloop  # noqa: F401
    except ImportError:
        use_uvloop = False
    else:
        use_uvloop = True
    return anyio.run(fn, *args, backend="asyncio", backend_options={"use_uvloop": use_uvloop})
