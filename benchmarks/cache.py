"""The gateway's cache of a GlusterFS volume: what it saves, and how stale it lets a reader be.

    .venv/bin/python benchmarks/cache.py [--quick] [--modes none,meta,all]
        [--parts workloads,staleness] [--volume-option KEY=VALUE ...]
        [--json FILE] [--markdown FILE]
    .venv/bin/python benchmarks/cache.py --from-json FILE [--markdown FILE]   # re-render

One private glusterd and a single-brick volume (``vshare.testing.glusterd``) with
``features.cache-invalidation`` on (the upcalls a gateway's cache is invalidated by) and
``gluster volume profile`` started, so that the brick itself counts the fops that reach it.
The data is written once through GlusterFS's own FUSE client: a tree of empty files in a few
hundred directories, small files of 1–16 KiB, and two large files (one that fits the
gateway's cache memory, one four times larger).

**Workloads.** For each share cache mode (``cache = "none" | "meta" | "all"`` of the share
table) a fresh gateway process serves the data, mounted with the vshare FUSE client in its
strictest mode (``--cache none``: direct I/O, zero entry and attribute timeouts), so that
every guest operation reaches the gateway as it would from a Linux 9P client mounted with
``cache=none``. On that mount, in this order:

- ``tree-stat-1``, ``tree-stat-2``: ``find TREE -type f -print0 | xargs -0 stat``, twice;
- ``small-x10``: every small file opened and read whole, ten passes (a build's pattern);
- ``big-1``, ``big-2``: each large file read twice with 1 MiB reads (MiB/s of each pass).

The host's page cache is dropped before each workload's first pass (the brick's disk is
then cold, as a storage server would be after a while), not between repeated passes. For
each step: wall time, guest operations (the gateway's ``vshare_requests_total``), gfapi calls
(``vshare_backend_calls_total``), cache hits and misses (``vshare_cache_lookups_total``),
the brick's fops and the upcalls it sent (``gluster volume profile VOL info incremental``,
read before and after the step). Gateway metrics that do not exist are read as zero (backend
calls: shown as unknown).

**Staleness.** Two gateway processes on the same volume (A and B), each serving a share
per cache mode (``stale-MODE``: the same directory, a subdirectory per mode), reached with the
Python client library (``vshare.client``: it caches nothing itself). A reader polls
through B in a tight loop; a writer changes something through A and notes when its call
returned; the staleness of one sample is the time from then until a poll of the reader
returns the new state. Four kinds of change, each fsynced before its time is taken (the
client's close waits for nothing, and gfapi's write-behind would otherwise hold the data):
``attr`` (one byte appended: a new size and mtime; the reader stats the file), ``rewrite``
(the file truncated and written again, as a build rewrites its outputs; the reader stats
it), ``entry`` (a new file is created; the reader looks its name up, which failed until
then) and ``data`` (4 KiB rewritten in place; the reader reads the file). The reader has
polled the old state at least twice before each change, so that a cache holds it. A change
not seen within ``--stale-cap`` seconds counts as that cap (a lower bound); after five such
in a row from the start, the kind stops.

Needs root (glusterd, FUSE, drop_caches). Exits 1 with one line when glusterd cannot run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
from prometheus_client.parser import text_string_to_metric_families

from compare import fmt, machine
from marked import write_marked
from systems import Rig, gateway, vshare_gluster
from vshare.backend.gluster import CACHE_VOLUME_OPTIONS
from vshare.client import AsyncShare, open_share
from vshare.testing.glusterd import GlusterError, GlusterVolume, available, fuse_mount
from vshare.testing.glusterd import glusterd as start_glusterd
from vshare.testing.processes import free_port, wait_for
from workloads import drop_caches

MODES = ("none", "meta", "all")
PARTS = ("workloads", "staleness")
VOLUME = "vshare-cache-bench"
#: What the volume needs: what the backend documents for its cache (upcalls), and fop counts
#: on the brick (the ``diagnostics`` options are what ``gluster volume profile VOL start`` sets).
VOLUME_OPTIONS = {
    **CACHE_VOLUME_OPTIONS,
    "diagnostics.count-fop-hits": "on",
    "diagnostics.latency-measurement": "on",
}
#: The gateway's default ``cache_memory_mib``: the "fits" large file is half of it.
DEFAULT_CACHE_MIB = 64
STEPS = ("tree-stat-1", "tree-stat-2", "small-x10", "big-fit-1", "big-fit-2", "big-1", "big-2")
KINDS = ("attr", "rewrite", "entry", "data")


@dataclass(frozen=True)
class Params:
    tree_files: int = 20_000
    tree_dirs: int = 400
    small_files: int = 2_000
    passes: int = 10
    big_mib: int = 256
    cache_mib: int = DEFAULT_CACHE_MIB
    stale_samples: int = 100  # per kind of change
    stale_cap: float = 5.0  # seconds a sample may take before it counts as that

    @property
    def fit_mib(self) -> int:
        return max(1, self.cache_mib // 2)


QUICK = Params(tree_files=100, tree_dirs=5, small_files=20, big_mib=32, cache_mib=16,
               stale_samples=10, stale_cap=1.5)  # fmt: skip


_T0 = time.monotonic()


def log(msg: str) -> None:
    took = time.monotonic() - _T0
    print(f"[{took // 60:3.0f}:{took % 60:02.0f}] {msg}", file=sys.stderr, flush=True)


# --- what the gateway and the brick count ------------------------------------------------


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    """The gateway's Prometheus samples: (name, labels, value)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text)
            for s in fam.samples]  # fmt: skip


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 if there are none)."""
    return sum(v for n, lab, v in samples
               if n == name and all(lab.get(k) == w for k, w in labels.items()))  # fmt: skip


def by_label(
    samples: list[tuple[str, dict[str, str], float]], name: str, label: str
) -> dict[str, float]:
    out: dict[str, float] = {}
    for n, lab, v in samples:
        if n == name:
            out[lab.get(label, "")] = out.get(lab.get(label, ""), 0.0) + v
    return out


def gateway_counts(port: int) -> dict[str, float]:
    """The counters one step is measured by, flattened: ``requests``, ``backend_calls``
    (absent when the gateway does not count them), ``backend:CALL``, ``op:OP``,
    ``cache:KIND:RESULT``, ``invalidations``, ``evictions``, ``cache_bytes``."""
    s = scrape(port)
    out = {
        "requests": total(s, "vshare_requests_total"),
        "invalidations": total(s, "vshare_cache_invalidations_total"),
        "evictions": total(s, "vshare_cache_evictions_total"),
        "cache_bytes": total(s, "vshare_cache_bytes"),
    }
    if any(n == "vshare_backend_calls_total" for n, _, _ in s):
        out["backend_calls"] = total(s, "vshare_backend_calls_total")
    for op, v in by_label(s, "vshare_requests_total", "op").items():
        out[f"op:{op}"] = v
    for call, v in by_label(s, "vshare_backend_calls_total", "call").items():
        out[f"backend:{call}"] = v
    for n, lab, v in s:
        if n == "vshare_cache_lookups_total":
            key = f"cache:{lab.get('kind', '')}:{lab.get('result', '')}"
            out[key] = out.get(key, 0.0) + v
    return out


def brick_profile(vol: GlusterVolume) -> tuple[dict[str, int], dict[str, int]]:
    """What the brick(s) counted since the last call (``gluster volume profile VOL info
    incremental``: each call starts a new interval): fops received, by fop, and upcalls
    sent, by kind (``UPCALL``: all; ``CI_IATT``: attributes changed; ``CI_FORGET``: the brick
    dropped the inode from its table...).

    Parsed from the text output, rows of ``%-latency avg min max calls NAME``: the XML
    output of GlusterFS 10 names the upcall rows with fop names (``gf_fop_list[i]`` where
    ``gf_upcall_list[i]`` is meant: UPCALL shows as STAT, CI_FORGET as RMDIR), so there they
    cannot be told from fops."""
    text = vol.daemon.cli("volume", "profile", vol.name, "info", "incremental")
    fops: dict[str, int] = {}
    upcalls: dict[str, int] = {}
    for line in text.splitlines():
        row = line.split()
        if len(row) == 9 and row[7].isdigit() and re.fullmatch(r"[A-Z_]+", row[8]):
            name = row[8]
            into = upcalls if name == "UPCALL" or name.startswith("CI_") else fops
            into[name] = into.get(name, 0) + int(row[7])
    return fops, upcalls


@dataclass
class Step:
    """One measured step of one mode."""

    seconds: float
    guest_ops: float
    backend_calls: float | None  # None: the gateway does not count them
    brick_fops: int  # fops the brick received
    brick_by_fop: dict[str, int]
    brick_upcalls: dict[str, int]  # notifications the brick sent (UPCALL: all of them)
    gateway: dict[str, float]  # deltas of gateway_counts (cache_bytes: its value after)
    passes: list[float] = field(default_factory=list)  # seconds of each pass
    mib_s: float | None = None


def measure(vol: GlusterVolume, port: int, fn: Callable[[], list[float]]) -> Step:
    """Run ``fn`` (which returns the seconds of each of its passes) between two readings of
    the gateway's counters and the brick's."""
    brick_profile(vol)  # start a new interval
    before = gateway_counts(port)
    t = time.perf_counter()
    passes = fn()
    seconds = time.perf_counter() - t
    time.sleep(0.3)  # FUSE releases (9P clunks) that are still on their way
    after = gateway_counts(port)
    fops, upcalls = brick_profile(vol)
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after.keys() | before.keys()}
    delta = {k: v for k, v in delta.items() if v}
    delta["cache_bytes"] = after.get("cache_bytes", 0.0)  # a gauge: its value after the step
    calls = delta.get("backend_calls", 0.0) if "backend_calls" in after else None
    return Step(seconds, delta.get("requests", 0.0), calls,
                sum(fops.values()), fops, upcalls, delta, passes)  # fmt: skip


# --- the data and the workloads ----------------------------------------------------------


@dataclass(frozen=True)
class Data:
    tree: str  # relative to the share root
    small: list[str]
    big: dict[str, int]  # name → MiB


def make_data(root: Path, p: Params) -> Data:
    """Write the data set under ``root`` (a native mount's ``export``), 8 writers at once."""
    top = max(1, round(p.tree_dirs**0.5))
    dirs = [f"tree/d{i % top:02d}/e{i // top:03d}" for i in range(p.tree_dirs)]
    small_dirs = [f"small/s{i:02d}" for i in range(max(1, p.small_files // 100))]
    for d in dirs + small_dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    tree = [f"{dirs[i % len(dirs)]}/f{i:05d}" for i in range(p.tree_files)]
    small = [f"{small_dirs[i % len(small_dirs)]}/s{i:04d}.c" for i in range(p.small_files)]
    rng = random.Random(12)
    sizes = [rng.randint(1024, 16 * 1024) for _ in small]
    blob = os.urandom(16 * 1024 + 64)

    def empty(rel: str) -> None:
        (root / rel).touch()

    def small_file(i: int) -> None:
        (root / small[i]).write_bytes(blob[i % 64 : i % 64 + sizes[i]])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(empty, tree))
        list(pool.map(small_file, range(len(small))))
    big = {"big-fit.dat": p.fit_mib, "big.dat": p.big_mib}
    chunk = os.urandom(1 << 20)
    for name, mib in big.items():
        with (root / name).open("wb") as f:
            for i in range(mib):
                f.write(chunk[i % 251 :] + chunk[: i % 251])
    os.sync()
    return Data("tree", small, big)


def tree_stat(tree: Path) -> list[float]:
    t = time.perf_counter()
    subprocess.run(["bash", "-c", 'set -o pipefail; find "$1" -type f -print0 | xargs -0 stat',
                    "-", str(tree)], stdout=subprocess.DEVNULL, check=True)  # fmt: skip
    return [time.perf_counter() - t]


def read_all(paths: list[Path], passes: int) -> list[float]:
    times = []
    for _ in range(passes):
        t = time.perf_counter()
        for path in paths:
            with path.open("rb", buffering=0) as f:
                while f.read(1 << 20):
                    pass
        times.append(time.perf_counter() - t)
    return times


def read_big(path: Path) -> list[float]:
    buf = bytearray(1 << 20)
    t = time.perf_counter()
    with path.open("rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return [time.perf_counter() - t]


def run_mode(rig: Rig, vol: GlusterVolume, data: Data, p: Params, mode: str | None
             ) -> dict[str, Step]:  # fmt: skip
    """A fresh gateway with the share's cache ``mode`` (None: the key is left out), its FUSE
    mount with no client cache, and every step on it."""
    port = free_port()
    drop_caches()
    steps: dict[str, Step] = {}
    with vshare_gluster(rig, "none", share_cache=mode, cache_memory_mib=p.cache_mib,
                        metrics_port=port) as mnt:  # fmt: skip
        wait_for(lambda: _answers(port), 30, "the gateway's metrics endpoint")

        def step(name: str, fn: Callable[[], list[float]], mib: int = 0) -> None:
            s = steps[name] = measure(vol, port, fn)
            if mib:
                s.mib_s = mib / s.seconds
            rate = f", {s.mib_s:,.0f} MiB/s" if s.mib_s else ""
            log(f"  {mode or '-':<4} {name:<12} {s.seconds:8.2f} s{rate}; guest ops "
                f"{s.guest_ops:,.0f}, backend calls {opt(s.backend_calls)}, brick fops "
                f"{s.brick_fops:,}, upcalls {s.brick_upcalls.get('UPCALL', 0):,}")  # fmt: skip

        tree = mnt / data.tree
        drop_caches()
        step("tree-stat-1", lambda: tree_stat(tree))
        step("tree-stat-2", lambda: tree_stat(tree))
        small = [mnt / rel for rel in data.small]
        drop_caches()
        step("small-x10", lambda: read_all(small, p.passes))
        for name, mib in data.big.items():
            label = name.removesuffix(".dat")
            drop_caches()
            step(f"{label}-1", functools.partial(read_big, mnt / name), mib)
            step(f"{label}-2", functools.partial(read_big, mnt / name), mib)
    return steps


def _answers(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True


# --- staleness ---------------------------------------------------------------------------


@dataclass
class Staleness:
    samples: list[float]  # seconds, one per change; the cap where it was not seen in time
    unseen: int  # samples not seen within the cap
    poll_seconds: float  # median time of one reader poll (the resolution)
    invalidations: float  # on the reader's gateway
    errors: list[str] = field(default_factory=list)  # changes or polls that failed

    def summary(self) -> dict[str, float]:
        s = sorted(self.samples)
        if not s:
            return {}
        return {"n": len(s), "p50": s[len(s) // 2], "p99": s[min(len(s) - 1, int(len(s) * 0.99))],
                "max": s[-1]}  # fmt: skip


async def stale_kind(
    a: AsyncShare, b: AsyncShare, where: str, kind: str, p: Params
) -> tuple[list[float], int, list[float], list[str]]:
    """``p.stale_samples`` changes of ``kind`` through ``a`` in directory ``where``, each
    timed until ``b`` sees it: (seconds of each, how many were not seen within the cap,
    seconds of each poll, what failed). A change whose call fails is not a sample; nor is
    one after which a poll failed (other than ENOENT); after ten failures the kind stops."""
    path = f"{where}/{kind}.dat"
    await a.makedirs(where, exist_ok=True)
    await a.write_bytes(path, b"0" * 4096)
    probe: Callable[[], Awaitable[object]]
    want: object = None
    polls = 0
    seen = anyio.Event()
    seen_at = 0.0
    poll_times: list[float] = []
    errors: list[str] = []
    done = False

    async def reader() -> None:
        nonlocal polls, seen_at
        while not done:
            fn, expect = probe, want
            t = time.perf_counter()
            try:
                value = await fn()
            except FileNotFoundError:
                value = None
            except OSError as exc:
                errors.append(f"poll: {exc}")
                value = None
            now = time.perf_counter()
            poll_times.append(now - t)
            polls += 1
            if expect is not None and value == expect and fn is probe and expect is want:
                seen_at = now
                seen.set()

    samples: list[float] = []
    unseen = 0
    async with anyio.create_task_group() as tg:
        probe = _probe(b, kind, where, path, 0)
        tg.start_soon(reader)
        for i in range(1, p.stale_samples + 1):
            probe, want = _probe(b, kind, where, path, i), None
            start = polls
            while polls < start + 3:  # two whole polls of the old state at least
                await anyio.sleep(0.0005)
            seen = anyio.Event()
            want = _expected(kind, i)
            failed = len(errors)
            try:
                await _change(a, kind, where, path, i)
            except OSError as exc:
                errors.append(f"change {i}: {exc}")
            written = time.perf_counter()
            if len(errors) > failed:
                log(f"    {kind} {i}: {errors[-1]}")
                if len(errors) >= 10:
                    break
                continue
            with anyio.move_on_after(p.stale_cap):
                await seen.wait()
            if len(errors) > failed:
                log(f"    {kind} {i}: {errors[-1]}")
                if len(errors) >= 10:
                    break
                continue
            if seen.is_set():
                samples.append(max(0.0, seen_at - written))
            else:
                samples.append(p.stale_cap)
                unseen += 1
                if unseen >= 5 and unseen == i:  # never seen: the rest would be the same
                    break
        done = True
    return samples, unseen, poll_times, errors


def _probe(
    b: AsyncShare, kind: str, where: str, path: str, i: int
) -> Callable[[], Awaitable[object]]:
    if kind in ("attr", "rewrite"):
        return lambda: _size(b, path)
    if kind == "entry":
        return lambda: b.exists(f"{where}/new-{i:04d}")
    return lambda: b.read_bytes(path)


async def _size(b: AsyncShare, path: str) -> int:
    return (await b.stat(path)).st_size


def _expected(kind: str, i: int) -> object:
    if kind == "attr":
        return 4096 + i
    if kind == "rewrite":
        return 8192 + i
    if kind == "entry":
        return True
    return _content(i)


def _content(i: int) -> bytes:
    return (f"{i:08d}".encode() * 512)[:4096]


async def _change(a: AsyncShare, kind: str, where: str, path: str, i: int) -> None:
    """Make change ``i`` through ``a``; on return it is on the brick (fsync: the client's
    close does not wait for the gateway's, nor gfapi's write-behind for the brick)."""
    if kind == "entry":
        await a.write_bytes(f"{where}/new-{i:04d}", b"")
        return
    f = await a.open(path, "wb" if kind == "rewrite" else "r+b")
    try:
        if kind == "attr":  # one byte more: a new size and mtime
            await f.pwrite(b"1", 4096 + i - 1)
        elif kind == "rewrite":  # truncated, then written again: two changes in a row
            await f.write(b"2" * (8192 + i))
        else:
            await f.pwrite(_content(i), 0)
        await f.fsync()
    finally:
        await f.close()


def staleness(
    rig: Rig,
    vol: GlusterVolume,
    p: Params,
    modes: list[str],
    kinds: list[str],
    supported: bool,
    out: dict[str, dict[str, Staleness]],
) -> None:
    """Two gateways (writer A, reader B) serving a share per cache mode (``stale-MODE``,
    each in its own directory); every kind of change in every mode, one mode at a time,
    into ``out`` as they come (what was measured stays there if a later one fails)."""
    port_b = free_port()
    shares: dict[str, str | None] = {f"stale-{m}": m if supported else None for m in modes}
    with (
        gateway(rig, "stale-a", vol.uri, cache_memory_mib=p.cache_mib, more_shares=shares) as a,
        gateway(rig, "stale-b", vol.uri, cache_memory_mib=p.cache_mib, more_shares=shares,
                metrics_port=port_b) as b,
    ):  # fmt: skip
        wait_for(lambda: _answers(port_b), 30, "the reader gateway's metrics endpoint")

        async def run(mode: str) -> None:
            async with (
                open_share(f"unix://{a}", f"stale-{mode}") as wa,
                open_share(f"unix://{b}", f"stale-{mode}") as rb,
            ):
                for kind in kinds:
                    before = gateway_counts(port_b)["invalidations"]
                    samples, unseen, polls, errors = await stale_kind(
                        wa, rb, f"stale-{mode}", kind, p
                    )
                    inval = gateway_counts(port_b)["invalidations"] - before
                    st = Staleness(samples, unseen, statistics.median(polls), inval, errors)
                    out.setdefault(mode, {})[kind] = st
                    s = st.summary()
                    log(f"  {mode:<4} {kind:<7} n={s.get('n', 0):.0f} p50 {ms(s.get('p50', 0))} "
                        f"p99 {ms(s.get('p99', 0))} max {ms(s.get('max', 0))}, unseen {unseen}, "
                        f"errors {len(errors)}, poll {ms(st.poll_seconds)}, invalidations "
                        f"{inval:,.0f}")  # fmt: skip

        for mode in modes:
            log(f"cache = {mode}: staleness, {p.stale_samples} changes of each kind")
            anyio.run(run, mode)


# --- report ------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{fmt(seconds)} s" if seconds >= 1 else f"{fmt(seconds * 1000)} ms"


def num(v: float) -> str:
    return f"{v:,.0f}"


def opt(v: float | None) -> str:
    return "—" if v is None else num(v)


def saving(base: float, v: float) -> str:
    return "—" if base <= 0 else f"{(1 - v / base) * 100:.0f} %"


def top_fops(fops: dict[str, int], n: int = 4) -> str:
    shown = sorted(fops.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} {v:,}" for k, v in shown if v) or "—"


def markdown(report: dict[str, Any]) -> str:
    modes: dict[str, dict[str, dict[str, Any]]] = report["modes"]
    p = report["params"]
    lines = [
        "## Benchmark: what the cache saves, how stale it gets (`benchmarks/cache.py`)",
        "",
        "Written by the benchmark; what it does and how to read it: the module docstring of",
        "`benchmarks/cache.py` and `docs/benchmarks.md`.",
        "",
        f"- Run: {report['date']}, {report['seconds'] / 60:.1f} min, "
        f"`{report['command']}` (vshare {report['commit']})",
        f"- Machine: {report['machine']}; {report['glusterfs']}",
        "- Volume: one brick on this machine's disk, a private glusterd; options "
        + ", ".join(f"`{k} {v}`" for k, v in report["volume_options"].items()),
        f"- Data: {p['tree_files']:,} empty files in {p['tree_dirs']} directories; "
        f"{p['small_files']:,} files of 1–16 KiB read {p['passes']}×; files of "
        f"{p['fit_mib']} and {p['big_mib']} MiB read twice in 1 MiB reads; "
        f"`cache_memory_mib = {p['cache_mib']}`",
        "- Client: the vshare FUSE client with `--cache none` (direct I/O, no entry or "
        "attribute caching): every guest operation reaches the gateway",
    ]
    if not report["cache_supported"]:
        lines.append("- **The gateway did not accept the `cache` share key: every mode ran as "
                     "the gateway's default.**")  # fmt: skip
    names = list(modes)
    base = modes.get("none")
    lines += ["", "### Workloads", "",
              "Speed-up and saving are against `none`. Guest ops: 9P requests the gateway "
              "answered; backend calls: gfapi calls it made; brick fops: fops GlusterFS's "
              "`volume profile` counted on the brick; upcalls: the invalidations the brick "
              "sent to its clients (the same profile).", "",
              "| step | mode | time | speed-up | guest ops | backend calls | brick fops | "
              "saving | upcalls | cache hits / lookups |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for step in STEPS:
        for mode in names:
            s = modes[mode].get(step)
            if s is None:
                continue
            b = base.get(step) if base else None
            took = f"{s['seconds']:.2f} s"
            if s.get("mib_s"):
                took += f" ({s['mib_s']:,.0f} MiB/s)"
            speed = f"{b['seconds'] / s['seconds']:.2f}×" if b else "—"
            hits = sum(v for k, v in s["gateway"].items()
                       if k.startswith("cache:") and k.endswith(":hit"))  # fmt: skip
            looks = sum(v for k, v in s["gateway"].items() if k.startswith("cache:"))
            cache = f"{num(hits)} / {num(looks)}" if looks else "—"
            lines.append(
                f"| {step} | {mode} | {took} | {speed} | {num(s['guest_ops'])} | "
                f"{opt(s['backend_calls'])} | {num(s['brick_fops'])} | "
                f"{saving(b['brick_fops'], s['brick_fops']) if b else '—'} | "
                f"{num(s['brick_upcalls'].get('UPCALL', 0))} | {cache} |"
            )
    lines += ["", "Brick fops by type (the most frequent four), then upcalls by kind:", "",
              "| step | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(names)]  # fmt: skip
    for step in STEPS:
        cells = [
            top_fops(modes[m][step]["brick_by_fop"]) + "; " + top_fops(
                {k: v for k, v in modes[m][step]["brick_upcalls"].items() if k != "UPCALL"}, 3)
            if step in modes[m] else "—" for m in names
        ]  # fmt: skip
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    stale: dict[str, dict[str, dict[str, Any]]] = report["staleness"]
    if stale:
        lines += ["", "### Staleness", "",
                  f"Writer on gateway A, reader on gateway B, {p['stale_samples']} changes of "
                  f"each kind; time from the writer's call returning to the reader's first "
                  f"poll that returns the new state. A change not seen within "
                  f"{p['stale_cap']:g} s counts as {p['stale_cap']:g} s. Goal: ≤ 1 s.", "",
                  "| mode | change | samples | p50 | p99 | max | not seen | failed | "
                  "poll time | invalidations on B |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        failures = []
        for mode, kinds in stale.items():
            for kind, st in kinds.items():
                s = st["summary"] or {"n": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
                errors = st.get("errors", [])
                failures += [f"{mode} {kind}: {e}" for e in errors]
                lines.append(
                    f"| {mode} | {kind} | {s['n']:.0f} | {ms(s['p50'])} | {ms(s['p99'])} | "
                    f"{ms(s['max'])} | {st['unseen']} | {len(errors)} | "
                    f"{ms(st['poll_seconds'])} | {num(st['invalidations'])} |"
                )
        if failures:
            more = f"; and {len(failures) - 10} more" if len(failures) > 10 else ""
            lines += ["", "Failed (not samples): " + "; ".join(failures[:10]) + more]
        lines += ["", "Changes, each fsynced by the writer before its time is taken: `attr`, "
                  "one byte appended (the reader stats the file); `rewrite`, the file "
                  "truncated and written again (the reader stats it); `entry`, a new file "
                  "whose name the reader has been looking up (ENOENT until then); `data`, "
                  "4 KiB rewritten in place (the reader reads the file). Poll time: the "
                  "median time of one reader poll, the resolution of the figures."]  # fmt: skip
    return "\n".join(lines) + "\n"


# --- main --------------------------------------------------------------------------------


def write_markdown(path: Path, text: str) -> None:
    write_marked(path, text, "cache.py", "The gateway's cache of GlusterFS volumes")


def cache_supported(tmp: Path) -> bool:
    """Whether this gateway's config takes the ``cache`` share key and ``cache_memory_mib``."""
    from vshare.gateway.config import ConfigError, load_config

    probe = tmp / "probe.toml"
    probe.write_text('cache_memory_mib = 64\n[[share]]\nname = "x"\npath = "x"\ncache = "meta"\n')
    try:
        load_config(probe)
    except ConfigError:
        return False
    return True


def glusterfs_version() -> str:
    done = subprocess.run(["gluster", "--version"], capture_output=True, text=True, check=False)
    return (done.stdout.strip().splitlines() or ["GlusterFS ?"])[0]


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=False, cwd=Path(__file__).parent)  # fmt: skip
    return done.stdout.strip() or "?"


@contextlib.contextmanager
def volume(rig: Rig, options: dict[str, str]) -> Iterator[GlusterVolume]:
    with (
        start_glusterd(rig.root) as daemon,
        daemon.volume(VOLUME, options=options) as vol,
    ):
        rig.gluster = vol
        yield vol


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="100 + 20 files, 32 MiB, 10 samples: a smoke run")  # fmt: skip
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated, of none,meta,all")
    ap.add_argument("--parts", default="workloads,staleness",
                    help="comma-separated, of workloads,staleness")  # fmt: skip
    ap.add_argument("--kinds", default=",".join(KINDS),
                    help=f"staleness: comma-separated, of {','.join(KINDS)}")  # fmt: skip
    ap.add_argument("--stale-samples", type=int, help="changes per kind (default 100)")
    ap.add_argument("--stale-cap", type=float, help="seconds to wait for one (default 5)")
    ap.add_argument("--volume-option", action="append", default=[], metavar="KEY=VALUE",
                    help="one more `gluster volume set` option (repeatable)")  # fmt: skip
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp"),
                    help="where glusterd and the brick live")  # fmt: skip
    ap.add_argument("--json", type=Path, help="write all figures here")
    ap.add_argument("--markdown", type=Path, help="write the report here")
    ap.add_argument("--from-json", type=Path, metavar="FILE",
                    help="measure nothing: report the --json of an earlier run")  # fmt: skip
    args = ap.parse_args()
    if args.from_json:
        try:
            text = markdown(json.loads(args.from_json.read_text()))
        except (OSError, ValueError, KeyError) as exc:
            print(f"cache.py: {args.from_json}: not a saved run ({exc!r})", file=sys.stderr)
            return 2
        print(text)
        if args.markdown:
            write_markdown(args.markdown, text)
        return 0
    modes = [m for m in args.modes.split(",") if m]
    parts = [x for x in args.parts.split(",") if x]
    kinds = [k for k in args.kinds.split(",") if k]
    if not (set(modes) <= set(MODES) and set(parts) <= set(PARTS) and set(kinds) <= set(KINDS)):
        print(f"cache.py: --modes takes {', '.join(MODES)}; --parts {', '.join(PARTS)}; "
              f"--kinds {', '.join(KINDS)}", file=sys.stderr)  # fmt: skip
        return 2
    p = QUICK if args.quick else Params()
    if args.stale_samples:
        p = Params(**{**asdict(p), "stale_samples": args.stale_samples})
    if args.stale_cap:
        p = Params(**{**asdict(p), "stale_cap": args.stale_cap})
    extra = dict(o.split("=", 1) for o in args.volume_option if "=" in o)
    if len(extra) != len(args.volume_option):
        print("cache.py: --volume-option takes KEY=VALUE", file=sys.stderr)
        return 2
    options = {**VOLUME_OPTIONS, **extra}
    why = available()
    if why is not None:
        print(f"cache.py: glusterd is unavailable: {why}", file=sys.stderr)
        return 1

    started = time.time()
    results: dict[str, dict[str, Step]] = {}
    stale: dict[str, dict[str, Staleness]] = {}
    with tempfile.TemporaryDirectory(prefix="vshare-cache-", dir=args.workdir) as tmp:
        rig = Rig(Path(tmp))
        supported = cache_supported(rig.root)
        if not supported:
            log("WARNING: this gateway does not take the share key `cache`: every mode runs "
                "as its default")  # fmt: skip
        log("starting glusterd and a single-brick volume")
        with volume(rig, options) as vol:
            with fuse_mount(vol, rig.scratch("staging") / "mnt") as staging:
                (staging / "export").mkdir()
                if "workloads" in parts:
                    log(f"writing the data: {p.tree_files:,} + {p.small_files:,} files, "
                        f"{p.fit_mib} + {p.big_mib} MiB")  # fmt: skip
                    t = time.perf_counter()
                    data = make_data(staging / "export", p)
                    log(f"data written in {time.perf_counter() - t:.0f} s")
            for mode in modes if "workloads" in parts else ():
                log(f"cache = {mode}: workloads")
                results[mode] = run_mode(rig, vol, data, p, mode if supported else None)
            if "staleness" in parts:
                try:
                    staleness(rig, vol, p, modes, kinds, supported, stale)
                except (OSError, RuntimeError, TimeoutError) as exc:
                    log(f"staleness stopped: {exc!r}; reporting what was measured")
            log("stopping glusterd")
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
        "seconds": time.time() - started,
        "command": " ".join(["python", "benchmarks/cache.py", *sys.argv[1:]]),
        "commit": commit(),
        "machine": machine(),
        "glusterfs": glusterfs_version(),
        "cache_supported": supported,
        "params": {**asdict(p), "fit_mib": p.fit_mib},
        "volume_options": options,
        "modes": {m: {k: asdict(s) for k, s in steps.items()} for m, steps in results.items()},
        "staleness": {m: {k: {**asdict(s), "summary": s.summary()} for k, s in kinds.items()}
                      for m, kinds in stale.items()},
    }  # fmt: skip
    text = markdown(report)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        write_markdown(args.markdown, text)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (GlusterError, RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
        print(f"cache.py: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
