"""Prometheus metrics of one gateway (its own registry, so tests can run many)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0
)  # fmt: skip


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "vshare_requests", "9P requests answered, by operation and result", ["op", "result"],
            registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "vshare_request_seconds", "Time to answer a request", ["op"], registry=r,
            buckets=_LATENCY_BUCKETS,
        )  # fmt: skip
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
        self._ok: dict[str, Counter] = {}
        self._lat: dict[str, Histogram] = {}

    def observe(self, op: str, result: str, seconds: float) -> None:
        """One answered request (children cached: label lookups cost microseconds)."""
        if result == "ok":
            child = self._ok.get(op)
            if child is None:
                child = self._ok[op] = self.requests.labels(op=op, result="ok")
            child.inc()
        else:
            self.requests.labels(op=op, result=result).inc()
        lat = self._lat.get(op)
        if lat is None:
            lat = self._lat[op] = self.latency.labels(op=op)
        lat.observe(seconds)
