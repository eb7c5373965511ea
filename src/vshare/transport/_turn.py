"""Whose turn it is to send on a connection."""

from __future__ import annotations

from collections import deque

import anyio


class SendTurn:
    """Whose turn it is to send: frames must not interleave on a connection (the
    gateway's replies, a client's requests). Uncontended (the usual case: a send that the
    socket takes at once never awaits), taking and giving the turn is a flag, with no call
    into the event loop: ``anyio.Lock`` asks for the current task on each acquire and
    release, and on Python 3.11 each such question is a getpid() (3 of the 8 system calls
    of a getattr answered on the loop: see "Gateway cost per request" in
    docs/benchmarks.md). A sender that finds the turn taken waits in FIFO order on an event
    of its own, and the turn is handed to it directly."""

    __slots__ = ("_busy", "_waiters")

    def __init__(self) -> None:
        self._busy = False
        self._waiters: deque[anyio.Event] = deque()

    async def acquire(self) -> None:
        if not self._busy:
            self._busy = True
            return
        event = anyio.Event()
        self._waiters.append(event)
        try:
            await event.wait()
        except BaseException:  # cancelled: give up our place, or the turn handed to us
            if event.is_set():
                self.release()
            else:
                self._waiters.remove(event)
            raise

    def release(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()  # handed over: still busy
        else:
            self._busy = False
