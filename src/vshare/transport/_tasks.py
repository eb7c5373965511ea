"""Tasks on the asyncio loop with one owner: :class:`TaskSet`.

Why not an anyio task group where one task is made per request (the FUSE client's requests
sent behind the application's back, the gateway's requests answered as tasks):
``TaskGroup.start_soon`` costs ~20 µs a task here (a cancel scope, a task handle, the async
library looked up at each call), ``loop.create_task`` 1.5 to 6 µs. Both processes run on
asyncio only (:func:`~vshare.transport.run_async`).

Structured all the same: every task belongs to a set whose owner ends them before it ends
itself, either by cancelling them (:meth:`TaskSet.aclose`) or by making them finish its own
way and waiting (:meth:`TaskSet.wait`: the gateway cancels a request through its anyio
cancel scope, so that what it shields, a backend call already started or a reply, is
carried out). An exception a task lets out is a bug (handlers answer errors themselves): it
goes to the owner's ``on_error``, as a task group would raise it in its owner.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskSet:
    """The tasks one owner started and has not seen end."""

    def __init__(self, on_error: Callable[[BaseException], None] | None = None) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_error = on_error

    def __len__(self) -> int:
        return len(self._tasks)

    def start_soon(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        task = asyncio.get_running_loop().create_task(fn(*args))
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if self._on_error is not None:
            self._on_error(exc)
        else:
            log.error("a task failed", exc_info=exc)

    async def wait(self) -> None:
        """Until every task has ended (those started meanwhile too)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def close(self) -> None:
        """The owner starts no more tasks and has seen them end: let go of its
        ``on_error`` (a bound method of the owner, which holds this set, is a reference
        cycle). A task that fails after this is logged."""
        self._on_error = None

    async def aclose(self) -> None:
        """Cancel every task and wait until they have ended."""
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
