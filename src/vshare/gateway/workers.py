"""Worker threads for backend calls that may block: one pool for the gateway, a bound per
share.

Why not ``anyio.to_thread.run_sync``: on Python 3.11 each call asks for the current task
and the thread limiter through context lookups that cost 13 ``getpid()`` system calls (seen
with strace), a good part of a small write's cost on the gateway. The loop's own
``run_in_executor`` hands the call to a thread with one queue put; a share's bound on calls
in flight (``share_threads``) is an ``asyncio.Semaphore``, which costs nothing when free.

Fair between tenants: a share's calls in flight are bounded (``share_threads``), and when
they are all taken the next free one goes to the callers in turn (round robin over the
identities waiting, FIFO within one), so an instance that queues a thousand slow calls on a
share delays another instance's call by one call, not a thousand. The caller is the
session's identity key (``CALLER``, set by the session for its tasks).

A call that has started is always carried out to its end, even if the request that made it
is cancelled meanwhile (a Tflush, the session ending): its result may own handles that must
not leak, and a handler must never go on while a thread still uses its fid's node. The
cancellation takes effect once the call has returned, as with ``anyio.to_thread.run_sync``
without ``abandon_on_cancel``. A call still waiting for the share's bound is simply not
made.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any, TypeVar

import anyio

T = TypeVar("T")
#: Whose backend calls these are (an identity key): set by each session for its tasks.
CALLER: ContextVar[str] = ContextVar("vshare_worker_caller", default="")


class Workers:
    """The gateway's worker threads (at most ``threads``), shared by every share."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._warming: threading.Barrier | None = None

    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="vshare-backend")
        return self._pool

    def warm(self) -> None:
        """Start every thread now, from a thread of its own. A pool starts a thread when a
        call finds none idle, and ``Thread.start`` waits until the new thread runs: on the
        event loop, with both cores busy, that held every session for milliseconds."""
        pool, threads = self.pool(), self.threads
        self._warming = barrier = threading.Barrier(threads)

        def hold() -> None:  # each call holds its thread until all have one: one each
            with contextlib.suppress(threading.BrokenBarrierError):
                # bounded: a backend call stuck on a thread meanwhile must not hold the
                # calls queued behind these for long
                barrier.wait(timeout=2)

        def start() -> None:
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                for _ in range(threads):
                    pool.submit(hold)

        threading.Thread(target=start, name="vshare-warm", daemon=True).start()

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` in a worker thread, outside any share's bound (the gateway's own work);
        carried out to its end once started, as :meth:`ShareWorkers.run`."""
        future = asyncio.get_running_loop().run_in_executor(self.pool(), fn)
        with anyio.CancelScope(shield=True):
            await asyncio.wait((future,))
        return future.result()

    def close(self) -> None:
        if self._warming is not None:
            self._warming.abort()
            self._warming = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class ShareWorkers:
    """One share's bound on backend calls in flight, shared fairly between the callers
    (see the module note), over the gateway's threads."""

    def __init__(self, workers: Workers, in_flight: int) -> None:
        self._workers = workers
        self._free = in_flight
        #: Callers waiting for a slot, in turn order, each with its waiters in FIFO order.
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        await self._acquire(CALLER.get())
        try:
            future = asyncio.get_running_loop().run_in_executor(self._workers.pool(), fn, *args)
            with anyio.CancelScope(shield=True):  # started: carried out (see the module note)
                result = await future
        finally:
            self._release()
        return result

    async def _acquire(self, caller: str) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(caller, deque()).append(turn)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                self._release()  # handed a slot as we were cancelled: pass it on
            else:
                queue = self._waiting.get(caller)
                if queue is not None and turn in queue:
                    queue.remove(turn)
                    if not queue:
                        del self._waiting[caller]
            raise

    def _release(self) -> None:
        """Hand the slot to the first caller in turn, who then goes to the back of the
        turn order; or free it when nobody waits."""
        while self._waiting:
            caller, queue = next(iter(self._waiting.items()))
            turn = queue.popleft()
            del self._waiting[caller]
            if queue:
                self._waiting[caller] = queue
            if not turn.done():
                turn.set_result(None)
                return
        self._free += 1
