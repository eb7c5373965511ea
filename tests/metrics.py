"""Reading a gateway's Prometheus endpoint (``vshare gateway run --metrics``): the samples,
and sums over them. For tests; benchmarks/cache.py scrapes the same way."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

#: One sample: its name, its labels, its value.
Sample = tuple[str, dict[str, str], float]


def scrape(port: int, *, timeout: float = 10) -> list[Sample]:
    """The samples at ``http://127.0.0.1:{port}/metrics``."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 if there are none)."""
    return sum(
        v
        for n, lab, v in samples
        if n == name and all(lab.get(k) == want for k, want in labels.items())
    )


def by_label(samples: list[Sample], name: str, label: str) -> dict[str, float]:
    """``name``'s samples summed by the value of ``label`` ("" where it is missing)."""
    out: dict[str, float] = {}
    for n, lab, v in samples:
        if n == name:
            key = lab.get(label, "")
            out[key] = out.get(key, 0.0) + v
    return out


def value(samples: list[Sample], name: str) -> float:
    """The value of the one unlabelled sample ``name``; AssertionError when there is none."""
    for n, lab, v in samples:
        if n == name and not lab:
            return v
    raise AssertionError(f"no {name} in the gateway's metrics")
