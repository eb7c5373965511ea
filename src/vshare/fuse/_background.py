"""Requests the FUSE client sends behind the application's back (write-behind, the
Tsetattr of a close), each an asyncio task owned by the mount's :class:`Background`.

Why not an anyio task group: ``TaskGroup.start_soon`` costs ~23 µs a task here (a cancel
scope, a task handle, the async library looked up), ``loop.create_task`` ~6, and a ``tar
x`` sends one request behind per file; ``anyio.Event`` likewise asks which library runs at
every creation. The FUSE client runs on asyncio only (``vshare.transport.run_async``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class Background:
    """The tasks of requests sent behind; cancelled and awaited by :meth:`aclose` (the
    mount's end: by then the kernel has released every file, which waits for them)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start_soon(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = asyncio.get_running_loop().create_task(fn())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
