"""Each identity's share of the event loop.

A session's turn on the loop is bounded (``_SLICE`` in session.py), but turns are per
session: 100 sessions of one identity, each with requests to answer, were all served in one
loop iteration before another identity's request came up (the other tenant's getattr
waited up to 65 ms). So the loop time each identity's sessions take is counted over a short
window. An identity past its share of the window while another identity has been served
lately queues its sessions' turns: one of them goes when the window turns, and each turn
that ends within the share lets the next one go. Alone on the gateway, an identity is
never held back.

Only time on the loop is counted (answers made there, frames decoded, replies encoded);
backend calls in worker threads are bounded per share by ``share_threads``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Final

#: Seconds over which each identity's use of the loop is counted.
WINDOW: Final = 0.002
#: Of a window, what one identity may take while another wants the loop.
SHARE: Final = WINDOW / 2
#: Seconds after its last turn that an identity still counts as wanting the loop.
ACTIVE: Final = 0.05
#: A turn that begins within this many seconds of the end of the same identity's turn,
#: with no other identity's turn between, counts from that end (:meth:`start`).
ADJACENT: Final = 0.001


class LoopShare:
    """The loop time of each identity in the current window, when each was last served,
    and the turns waiting (all on the event loop: no lock)."""

    def __init__(self) -> None:
        self._window_end = 0.0
        self._used: dict[str, float] = {}
        self._seen: dict[str, float] = {}
        self._waiting: dict[str, deque[asyncio.Future[float]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        #: The identity whose turn ended last, and when.
        self._last: tuple[str, float] = ("", 0.0)

    def must_wait(self, key: str) -> bool:
        """Whether a session of identity ``key`` waits (:meth:`turn`) before its turn."""
        now = time.perf_counter()
        self._turn_window(now)
        return bool(self._waiting.get(key)) or self._held(key, now)

    def start(self, key: str, now: float) -> float:
        """When a turn of ``key`` beginning ``now`` counts from: the end of ``key``'s last
        turn if no other identity's came between and it was a moment ago. What the loop
        did in between was mostly ``key``'s: the rest of the task whose turn ended (a
        session's end: its task and cancel scopes closed, ~40 µs) and the wake-up of the
        next. Counted from their own starts only, 200 session ends of one identity came
        to a fifth of their time, and another tenant's getattr waited for the rest."""
        last, at = self._last
        return at if last == key and now - at < ADJACENT else now

    async def turn(self, key: str) -> float:
        """Wait until a session of identity ``key`` may take its turn (the caller asked
        :meth:`must_wait`); the time its turn counts from (``time.perf_counter``): when
        it was given, by the end of another turn of ``key`` or the window's turn (as
        :meth:`start`)."""
        now = time.perf_counter()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[float] = loop.create_future()
        self._waiting.setdefault(key, deque()).append(fut)
        if self._timer is None:
            self._timer = loop.call_later(max(0.0, self._window_end - now), self._on_window)
        try:
            return await fut
        except BaseException:
            queue = self._waiting.get(key)
            if fut.done() and not fut.cancelled():
                self._next(key)  # given the turn as we were cancelled: pass it on
            elif queue is not None and fut in queue:
                queue.remove(fut)
            raise

    def charge(self, key: str, started: float) -> None:
        """A turn of identity ``key`` that began at ``started`` (``time.perf_counter``)
        ended now; the next waiting turn of ``key`` goes if ``key`` may go on."""
        now = time.perf_counter()
        self._turn_window(now)
        self._used[key] = self._used.get(key, 0.0) + (now - started)
        self._seen[key] = now
        self._last = (key, now)
        if self._waiting.get(key) and not self._held(key, now):
            self._next(key)

    def _held(self, key: str, now: float) -> bool:
        """Whether ``key`` has had its share of this window while another identity was
        served lately."""
        if self._used.get(key, 0.0) < SHARE:
            return False
        return any(k != key and now - t < ACTIVE for k, t in self._seen.items())

    def _next(self, key: str) -> None:
        queue = self._waiting.get(key)
        while queue:
            fut = queue.popleft()
            if not fut.done():
                fut.set_result(time.perf_counter())
                break
        if not queue:
            self._waiting.pop(key, None)

    def _on_window(self) -> None:
        """The window turned: the first waiting turn of each identity goes."""
        self._timer = None
        self._turn_window(time.perf_counter())
        for key in list(self._waiting):
            self._next(key)
        if self._waiting:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(WINDOW, self._on_window)

    def _turn_window(self, now: float) -> None:
        if now < self._window_end:
            return
        self._used.clear()
        self._window_end = now + WINDOW
        if len(self._seen) > 64:  # forget identities idle for long
            self._seen = {k: t for k, t in self._seen.items() if now - t < ACTIVE}
