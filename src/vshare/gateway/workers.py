"""Worker threads for backend calls that may block: one pool for the gateway, a bound per
share.

Why not ``anyio.to_thread.run_sync``: on Python 3.11 each call asks for the current task
and the thread limiter through context lookups that cost 13 ``getpid()`` system calls (seen
with strace), a good part of a small write's cost on the gateway. The loop's own
``run_in_executor`` hands the call to a thread with one queue put; a share's bound on calls
in flight (``share_threads``) is an ``asyncio.Semaphore``, which costs nothing when free.

A call that has started is always carried out to its end, even if the request that made it
is cancelled meanwhile (a Tflush, the session ending): its result may own handles that must
not leak, and a handler must never go on while a thread still uses its fid's node. The
cancellation takes effect once the call has returned, as with ``anyio.to_thread.run_sync``
without ``abandon_on_cancel``. A call still waiting for the share's bound is simply not
made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


class Workers:
    """The gateway's worker threads (at most ``threads``), shared by every share."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None

    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="vshare-backend")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class ShareWorkers:
    """The bound on one share's backend calls in flight, over the gateway's threads."""

    def __init__(self, workers: Workers, in_flight: int) -> None:
        self._workers = workers
        self._bound = asyncio.Semaphore(in_flight)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._bound:
            future = asyncio.get_running_loop().run_in_executor(self._workers.pool(), fn, *args)
            with anyio.CancelScope(shield=True):  # started: carried out (see the module note)
                result = await future
        return result
