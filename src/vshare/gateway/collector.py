"""Python's cyclic garbage collector, kept from pausing every tenant for what tenants hold.

CPython's collector stops the whole process while it scans a generation, and a pass over
a generation scans every object in it: ~0.3-0.5 µs an object here. A walked fid is ~3
tracked objects, a lock or a cache entry a few more. An oldest-generation pass scans
everything every tenant holds (one over ~87,000 objects took 82 ms); the interpreter makes
one after 20 middle passes, each after 20 young ones, when what was promoted since the
last has grown by a quarter. A tenant that takes ~17,000 fids, lets go and takes them
again sets off a young pass each time: every ~400 times, a pass over everything held by
everyone: 0.3-0.5 s on a host whose tenants hold a million objects.

What the gateway holds is freed by reference counts, not by the collector: a session that
ends leaves no cycle (``tests/gateway/test_budgets.py``,
``test_a_session_that_ends_leaves_nothing_for_the_cyclic_collector``). So what survives an
oldest pass is state in use:

- at the start, what exists (modules, classes, the configuration: ~42,000 objects) is
  frozen out of the collector's sight (``gc.freeze``);
- what survives an oldest pass is frozen too (from the collector's own callback): the
  next one scans only what was kept since, never what was held before;
- young passes are rare (every ``YOUNG`` allocations that outlive their request): each
  has a cost, and most of what a tenant takes is let go before it is scanned (a tenant
  taking 17,000 fids six times over set off one young pass of 4-6 ms; with young passes
  every 5,000 and middle ones every 3 young, 47 and 15 passes: 120 ms in all, and the
  other tenant's worst getattr 11-15 ms instead of 6.5-7.2).

The price: a cycle among objects already frozen is not reclaimed while they are. The
gateway gives the frozen objects back, collects and freezes again (a *thaw*, the one pass
over everything) when no session is connected, so nobody waits for it, and at its stop.
The metrics say how many objects are frozen and what each thaw found.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Final

log = logging.getLogger("vshare.gateway")

#: Allocations that outlive their request between two young passes (the interpreter's
#: default is 700). A gateway holds tens of thousands of small objects: at the default,
#: the older passes paused the event loop for every tenant, up to 155 ms in one CI run with
#: 20,000 locks held; at 50,000 the other tenant's worst getattr in that test was 3.9 ms.
YOUNG: Final = 50_000
#: Young passes between two middle ones, middle between two oldest (the least: the
#: interpreter's may be higher).
MIDDLE: Final = 20
OLDEST: Final = 20
#: The least time between two thaws (seconds): sessions that come and go do not make one
#: each time the last leaves.
THAW_AT_MOST_EVERY: Final = 60.0


@dataclass
class PassTimes:
    """Passes of one kind: how many, their total and longest time (seconds)."""

    count: int = 0
    total: float = 0.0
    longest: float = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.longest = max(self.longest, seconds)


@dataclass
class Collector:
    """The policy above, for the process (:data:`COLLECTOR`): :meth:`start` when a gateway
    begins serving, :meth:`idle` when no session is left, :meth:`stop` at its end."""

    #: By generation ("0", "1", "2") and "thaw".
    passes: dict[str, PassTimes] = field(default_factory=dict)
    #: Objects the thaws found to be garbage (cycles among frozen objects).
    thaw_collected: int = 0
    _users: int = 0
    _froze_since_thaw: bool = False
    _thawed_at: float = 0.0
    _began: float = 0.0
    _thawing: bool = False
    _saved: tuple[int, int, int] = (700, 10, 10)

    #: Objects frozen, as counted at the start and at the last thaw (counting walks them
    #: all: ~45 ns an object here, so not on every idle moment or scrape).
    frozen_counted: int = 0

    @property
    def frozen(self) -> int:
        """Objects frozen now (walks them all)."""
        return gc.get_freeze_count()

    def start(self) -> None:
        """A gateway starts serving. Process-wide: the first start sets the policy, the
        others count."""
        self._users += 1
        if self._users > 1:
            return
        self._saved = gc.get_threshold()
        gc.collect()  # no garbage frozen for good
        gc.freeze()
        self.frozen_counted = gc.get_freeze_count()
        self._froze_since_thaw = False
        self._thawed_at = time.monotonic()
        young, middle, oldest = self._saved
        gc.set_threshold(max(young, YOUNG), max(middle, MIDDLE), max(oldest, OLDEST))
        gc.callbacks.append(self._on_pass)

    def stop(self) -> None:
        """A gateway has stopped. The last one puts the interpreter's policy back, and the
        frozen objects back in sight (they may have become garbage meanwhile: a test
        process starts many gateways)."""
        self._users -= 1
        if self._users > 0:
            return
        if self._on_pass in gc.callbacks:
            gc.callbacks.remove(self._on_pass)
        gc.set_threshold(*self._saved)
        gc.unfreeze()

    def idle(self) -> None:
        """No session is connected: :meth:`thaw` if oldest passes froze anything since
        the last thaw, at most every ``THAW_AT_MOST_EVERY`` seconds."""
        due = time.monotonic() - self._thawed_at >= THAW_AT_MOST_EVERY
        if self._users and self._froze_since_thaw and due:
            self.thaw()

    def thaw(self) -> None:
        """The one pass over everything: frozen objects back in sight, collected, frozen
        again. For when nobody waits (no session connected)."""
        start = time.perf_counter()
        self._thawing = True
        try:
            gc.unfreeze()
            found = gc.collect()
            gc.freeze()
        finally:
            self._thawing = False
        took = time.perf_counter() - start
        self.frozen_counted = gc.get_freeze_count()
        self._froze_since_thaw = False
        self._thawed_at = time.monotonic()
        self._time("thaw", took)
        self.thaw_collected += found
        if found:
            log.info("gateway: collector: %d objects in cycles freed (%.1f ms)", found, took * 1e3)

    def _on_pass(self, phase: str, info: dict[str, Any]) -> None:
        """``gc.callbacks``: time each pass; freeze what survived an oldest one."""
        if self._thawing:
            return
        if phase == "start":
            self._began = time.perf_counter()
            return
        generation = info["generation"]
        self._time(str(generation), time.perf_counter() - self._began)
        if generation == 2:
            gc.freeze()
            self._froze_since_thaw = True

    def _time(self, kind: str, seconds: float) -> None:
        times = self.passes.get(kind)
        if times is None:
            times = self.passes[kind] = PassTimes()
        times.add(seconds)


#: The process's one: the collector is the interpreter's, whatever gateways it serves.
COLLECTOR: Final = Collector()
