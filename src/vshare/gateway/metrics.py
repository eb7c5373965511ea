"""Prometheus metrics of one gateway (its own registry, so tests can run many)."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

_LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0
)  # fmt: skip


class _RequestStats:
    """Requests by (op, result) and latency by op, kept in plain Python numbers.

    Recording happens on the event loop for every request, so it must cost well under a
    microsecond: no locks and no label lookups (prometheus_client's Counter and Histogram
    take a lock per update). Prometheus reads the numbers when it scrapes (:meth:`collect`).
    Only the event loop records, so there is no race to guard against.
    """

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.buckets: dict[str, list[int]] = {}  # per op: a count per bucket, then +Inf
        self.sums: dict[str, float] = {}

    def observe(self, op: str, result: str, seconds: float) -> None:
        key = (op, result)
        self.counts[key] = self.counts.get(key, 0) + 1
        buckets = self.buckets.get(op)
        if buckets is None:
            buckets = self.buckets[op] = [0] * (len(_LATENCY_BUCKETS) + 1)
            self.sums[op] = 0.0
        buckets[bisect.bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        self.sums[op] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "vshare_requests",
            "9P requests answered, by operation and result",
            labels=["op", "result"],
        )
        for (op, result), count in sorted(self.counts.items()):
            requests.add_metric([op, result], count)
        yield requests
        latency = HistogramMetricFamily(
            "vshare_request_seconds", "Time to answer a request", labels=["op"]
        )
        for op, counts in sorted(self.buckets.items()):
            cumulative = list(itertools.accumulate(counts))
            bounds = [repr(b) for b in _LATENCY_BUCKETS] + ["+Inf"]
            latency.add_metric([op], list(zip(bounds, cumulative, strict=True)), self.sums[op])
        yield latency


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._requests = _RequestStats()
        r.register(self._requests)
        self.bytes_read = Counter("vshare_read_bytes", "Bytes returned by Tread", registry=r)
        self.bytes_written = Counter("vshare_written_bytes", "Bytes taken by Twrite", registry=r)
        self.sessions = Gauge("vshare_sessions", "Sessions connected", registry=r)
        self.fids = Gauge("vshare_fids", "Fids in use across sessions", registry=r)
        self.protocol_errors = Counter(
            "vshare_protocol_errors", "Sessions closed for malformed input", registry=r
        )
        self.internal_errors = Counter(
            "vshare_internal_errors", "Requests that failed on an unexpected exception", registry=r
        )
        self.attaches = Counter(
            "vshare_attach", "Attach decisions", ["decision"], registry=r
        )  # fmt: skip

    def observe(self, op: str, result: str, seconds: float) -> None:
        """One answered request (on the event loop)."""
        self._requests.observe(op, result, seconds)
