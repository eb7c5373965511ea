"""Prometheus metrics of one gateway (its own registry, so tests can run many)."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from vshare.backend.base import Backend
from vshare.gateway.collector import COLLECTOR

LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0
)  # fmt: skip
_BOUNDS = [repr(b) for b in LATENCY_BUCKETS] + ["+Inf"]


class Timings:
    """One latency histogram in plain numbers, recorded on the event loop (see
    :class:`_RequestStats` for why not prometheus_client's Histogram)."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # a count per bucket, then +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative, as HistogramMetricFamily.add_metric takes them."""
        return list(zip(_BOUNDS, itertools.accumulate(self.counts), strict=True))


class _RequestStats:
    """Requests by (op, result) and latency by op, kept in plain Python numbers.

    Recording happens on the event loop for every request, so it must cost well under a
    microsecond: no locks and no label lookups (prometheus_client's Counter and Histogram
    take a lock per update). Prometheus reads the numbers when it scrapes (:meth:`collect`).
    Only the event loop records, so there is no race to guard against.
    """

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.timings: dict[str, Timings] = {}
        self.on_loop: dict[str, int] = {}

    def observe(self, op: str, result: str, seconds: float, on_loop: bool) -> None:
        key = (op, result)
        self.counts[key] = self.counts.get(key, 0) + 1
        if on_loop:
            self.on_loop[op] = self.on_loop.get(op, 0) + 1
        timings = self.timings.get(op)
        if timings is None:
            timings = self.timings[op] = Timings()
        timings.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "vshare_requests",
            "9P requests answered, by operation and result",
            labels=["op", "result"],
        )
        for (op, result), count in sorted(self.counts.items()):
            requests.add_metric([op, result], count)
        yield requests
        on_loop = CounterMetricFamily(
            "vshare_requests_on_loop",
            "Of those, answered on the event loop: no task, no worker thread (cheap "
            "metadata, data or attributes the page cache or the gateway's cache holds)",
            labels=["op"],
        )
        for op, count in sorted(self.on_loop.items()):
            on_loop.add_metric([op], count)
        yield on_loop
        latency = HistogramMetricFamily(
            "vshare_request_seconds", "Time to answer a request", labels=["op"]
        )
        for op, timings in sorted(self.timings.items()):
            latency.add_metric([op], timings.buckets(), timings.total)
        yield latency


class _BackendStats:
    """What the backend counts itself, read when Prometheus scrapes: calls that reached the
    storage (so that backend calls per guest request is ``vshare_backend_calls_total`` over
    ``vshare_requests_total``) and its cache's hits, misses, invalidations and size."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def collect(self) -> Iterator[Metric]:
        calls = self._backend.backend_calls()
        if calls:
            family = CounterMetricFamily(
                "vshare_backend_calls",
                "Calls made to the storage (GlusterFS fops), by call",
                labels=["call"],
            )
            for name, count in sorted(calls.items()):
                family.add_metric([name], count)
            yield family
        stats = self._backend.cache_stats()
        if stats is None:
            return
        lookups = CounterMetricFamily(
            "vshare_cache_lookups",
            "Cache lookups, by kind of entry (attr, name, data) and result (hit, miss)",
            labels=["kind", "result"],
        )
        for result, counts in (("hit", stats.hits), ("miss", stats.misses)):
            for kind, count in sorted(counts.items()):
                lookups.add_metric([kind, result], count)
        yield lookups
        invalidations = CounterMetricFamily(
            "vshare_cache_invalidations",
            "Objects dropped from the cache because they changed, by source"
            " (upcall: another client, told by the storage; local: this gateway)",
            labels=["source"],
        )
        for source, count in sorted(stats.invalidations.items()):
            invalidations.add_metric([source], count)
        yield invalidations
        yield CounterMetricFamily(
            "vshare_cache_evictions", "Entries dropped to stay in the bound", value=stats.evictions
        )
        yield GaugeMetricFamily(
            "vshare_cache_bytes", "Bytes the cache's entries are charged", value=stats.bytes
        )
        yield GaugeMetricFamily(
            "vshare_cache_limit_bytes", "The bound on vshare_cache_bytes", value=stats.limit
        )
        yield GaugeMetricFamily("vshare_cache_entries", "Entries cached", value=stats.entries)


class BudgetState(Protocol):
    """What a budget shows (``vshare.gateway.context.Budget``)."""

    name: str
    used: int
    limits: dict[str, int]
    refusals: dict[str, int]
    by_identity: dict[str, int]


class _BudgetStats:
    """Each budget's use, limits and refusals, read when Prometheus scrapes (the budgets
    are plain numbers moved on the event loop, like the request counts)."""

    def __init__(self, budgets: Iterable[BudgetState]) -> None:
        self._budgets = list(budgets)

    def collect(self) -> Iterator[Metric]:
        used = GaugeMetricFamily(
            "vshare_budget_used", "Use of each budget, across sessions", labels=["budget"]
        )
        top = GaugeMetricFamily(
            "vshare_budget_identity_max_used",
            "Use of each budget by the identity that uses the most of it",
            labels=["budget"],
        )
        limits = GaugeMetricFamily(
            "vshare_budget_limit",
            "Limit of each budget per session, per identity and in total",
            labels=["budget", "scope"],
        )
        refusals = CounterMetricFamily(
            "vshare_budget_refusals",
            "Charges refused, by budget and by the scope whose limit they would pass",
            labels=["budget", "scope"],
        )
        for b in self._budgets:
            used.add_metric([b.name], b.used)
            top.add_metric([b.name], max(b.by_identity.values(), default=0))
            for scope, value in b.limits.items():
                if value < 1 << 62:
                    limits.add_metric([b.name, scope], value)
                refusals.add_metric([b.name, scope], b.refusals[scope])
        yield from (used, top, limits, refusals)


class LibvirtState(Protocol):
    """What the libvirt follower shows (``vshare.gateway.libvirt.FollowStatus``)."""

    @property
    def mode(self) -> str: ...
    @property
    def connects(self) -> int: ...
    @property
    def learned(self) -> int: ...
    @property
    def forgotten(self) -> int: ...
    @property
    def resyncs(self) -> int: ...
    @property
    def last_forget_lag(self) -> float | None: ...


_LIBVIRT_MODES = ("starting", "events", "polling")


class _LibvirtStats:
    """The libvirt follower's status, read when Prometheus scrapes."""

    def __init__(self, status: LibvirtState) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        st = self._status
        mode = GaugeMetricFamily(
            "vshare_libvirt_mode",
            "How libvirt is followed: 1 for the current mode (events, polling, starting)",
            labels=["mode"],
        )
        for name in _LIBVIRT_MODES:
            mode.add_metric([name], float(st.mode == name))
        yield mode
        for name, value, text in (
            ("connects", st.connects, "Event connections to libvirt made"),
            ("cids_learned", st.learned, "CIDs learned from lifecycle events"),
            ("cids_forgotten", st.forgotten, "CIDs forgotten on lifecycle events"),
            ("resyncs", st.resyncs, "Full reads of the domain list applied while connected"),
        ):
            yield CounterMetricFamily(f"vshare_libvirt_{name}", text, value=value)
        if st.last_forget_lag is not None:
            yield GaugeMetricFamily(
                "vshare_libvirt_forget_lag_seconds",
                "From libvirt's stop callback to the CID forgotten, the last time",
                value=st.last_forget_lag,
            )


class _CollectorStats:
    """The cyclic collector's passes and frozen objects (``vshare.gateway.collector``)."""

    def collect(self) -> Iterator[Metric]:
        labels = ["kind"]
        count = CounterMetricFamily(
            "vshare_gc_passes",
            "Passes of the cyclic garbage collector, by kind (generation 0, 1, 2; thaw: "
            "one over everything, made when no session is connected)",
            labels=labels,
        )
        total = CounterMetricFamily(
            "vshare_gc_pause_seconds", "Time the process was paused by those passes", labels=labels
        )
        longest = GaugeMetricFamily(
            "vshare_gc_pause_longest_seconds", "The longest of those passes", labels=labels
        )
        for kind, times in sorted(COLLECTOR.passes.items()):
            count.add_metric([kind], times.count)
            total.add_metric([kind], times.total)
            longest.add_metric([kind], times.longest)
        yield from (count, total, longest)
        yield GaugeMetricFamily(
            "vshare_gc_frozen_objects",
            "Objects out of the collector's sight (what the process held at the start, and "
            "survivors of oldest passes), counted at the start and at each thaw",
            value=COLLECTOR.frozen_counted,
        )
        yield CounterMetricFamily(
            "vshare_gc_thaw_freed_objects",
            "Objects in cycles that thaws found among frozen ones, and freed",
            value=COLLECTOR.thaw_collected,
        )


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._requests = _RequestStats()
        r.register(self._requests)
        r.register(_CollectorStats())
        self._backend_stats: _BackendStats | None = None
        self._budget_stats: _BudgetStats | None = None
        self._libvirt_stats: _LibvirtStats | None = None
        self.bytes_read = Counter("vshare_read_bytes", "Bytes returned by Tread", registry=r)
        self.bytes_read_from_files = Counter(
            "vshare_read_file_bytes",
            "Bytes returned by Tread sent from the file's page cache (sendfile), not copied "
            "into the gateway",
            registry=r,
        )
        self.bytes_written = Counter("vshare_written_bytes", "Bytes taken by Twrite", registry=r)
        self.sessions = Gauge("vshare_sessions", "Sessions connected", registry=r)
        self.fids = Gauge("vshare_fids", "Fids in use across sessions", registry=r)
        self.timeouts = Counter(
            "vshare_session_timeouts",
            "Sessions closed for want of progress, by kind (handshake, idle, frame)",
            ["kind"],
            registry=r,
        )
        self.protocol_errors = Counter(
            "vshare_protocol_errors", "Sessions closed for malformed input", registry=r
        )
        self.internal_errors = Counter(
            "vshare_internal_errors", "Requests that failed on an unexpected exception", registry=r
        )
        self.attaches = Counter("vshare_attach", "Attach decisions", ["decision"], registry=r)

    def watch_backend(self, backend: Backend) -> None:
        """Export what ``backend`` counts itself (calls to the storage, its cache). Once."""
        if self._backend_stats is None:
            self._backend_stats = _BackendStats(backend)
            self.registry.register(self._backend_stats)

    def watch_budgets(self, budgets: Iterable[BudgetState]) -> None:
        """Export the budgets' use, limits and refusals (``vshare_budget_*``). Once."""
        if self._budget_stats is None:
            self._budget_stats = _BudgetStats(budgets)
            self.registry.register(self._budget_stats)

    def watch_libvirt(self, status: LibvirtState) -> None:
        """Export the libvirt follower's status (``vshare_libvirt_*``). Once."""
        if self._libvirt_stats is None:
            self._libvirt_stats = _LibvirtStats(status)
            self.registry.register(self._libvirt_stats)

    def observe(self, op: str, result: str, seconds: float, *, on_loop: bool = False) -> None:
        """One answered request (recorded on the event loop); ``on_loop``: answered there."""
        self._requests.observe(op, result, seconds, on_loop)
