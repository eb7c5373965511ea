"""9P requests per user-level operation through the vshare FUSE client.

    .venv/bin/python benchmarks/requests_per_op.py [--files 2000] [--caches auto,none] [--quick]
        [--json FILE] [--markdown FILE]
    .venv/bin/python benchmarks/requests_per_op.py --from-json FILE [--markdown FILE]

A vshare gateway (POSIX backend, a Unix socket, its Prometheus metrics on loopback) and the
vshare FUSE client (``vshare mount``, its ``--cache`` mode: each of ``--caches``), as
``benchmarks/systems.py`` starts them. The figures are the gateway's own count of 9P
requests answered (``vshare_requests_total``, by ``op``), read before and after each step;
after each step the count must stand still for 0.3 s (the kernel sends FORGETs, and so the
client its Tclunks, a little later), so that late requests are charged to their step.

The data: a tar (made here with ``tarfile``) of ``tree/dNN/fNNNN``, 50 files of 0–8 KiB a
directory, each directory's files together as ``tar c`` writes them (``--interleaved``: file
n in directory n % 40, the order of runs before 2026-12-05). The steps, in this order:

1. ``tar x``: GNU tar unpacks it into the mount (a fresh one). Per created file (all the
   requests, directories' included, over the files).
2. Unmount; a fresh gateway and mount. The directories are split into three groups:
   A: ``ls -l DIR`` (per entry listed), then ``stat`` of every file in it (per stat: the
   directory was just listed), and of each again 1.2 s later (per stat: listed more than
   ``auto``'s timeout before); B: ``stat`` of every file, nothing listed (per cold stat);
   C: ``cat`` of every file, nothing listed or stat'ed before (per cold cat); then B again:
   ``cat`` of every file (per cat of a file already stat'ed). Then the caches dropped
   (the kernel's), ``find tree -print0 | xargs -0 stat`` (per entry: compare.py's
   find-stat, whose names are looked up more than a second after ``find`` listed them).
3. ``rm -rf`` of the tree (per entry removed).

One ``stat``, ``cat`` or ``ls`` process per directory (what is counted is the file
system's work, not process starts). Targets printed beside the figures: ≤ 5 requests per
created file, 0 per stat after a listing. Needs root (FUSE): ``make bench``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from cache import by_label, commit, scrape
from compare import machine
from kernel_client import make_tarball, source
from marked import write_marked
from systems import Rig, vshare_gateway
from vshare.testing.processes import free_port
from workloads import drop_caches

CACHES = ("auto", "none", "always")
#: step → (the unit it is counted per, the target: at most this many requests per unit)
STEPS: dict[str, tuple[str, float | None]] = {
    "tar x": ("created file", 5.0),
    "ls -l": ("entry listed", None),
    "stat after ls -l": ("stat", 0.0),
    "stat, listed 1 s before": ("stat", None),
    "stat, cold": ("stat", None),
    "cat, cold": ("cat", None),
    "cat after stat": ("cat", None),
    "find, then stat each, cold": ("entry", None),
    "rm -rf": ("entry removed", None),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Step:
    units: int = 0  # operations the requests are divided by
    requests: float = 0.0
    ops: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def per_unit(self) -> float:
        return self.requests / self.units if self.units else 0.0


class Counter:
    """The gateway's requests by op, read until they stand still."""

    def __init__(self, port: int) -> None:
        self.port = port

    def read(self) -> dict[str, float]:
        return by_label(scrape(self.port), "vshare_requests_total", "op")

    def settled(self, quiet: float = 0.3, limit: float = 10.0) -> dict[str, float]:
        last = self.read()
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self.read()
            if now == last:
                return now
            last = now
        return last

    def charge(self, step: Step, units: int, work: Callable[[], object]) -> None:
        """Run ``work`` and add what it cost to ``step``."""
        before = self.settled()
        t = time.perf_counter()
        work()
        step.seconds += time.perf_counter() - t
        after = self.settled()
        step.units += units
        for op, n in after.items():
            if n - before.get(op, 0.0):
                step.ops[op] = step.ops.get(op, 0.0) + n - before.get(op, 0.0)
        step.requests = sum(step.ops.values())


def sh(*argv: str | Path) -> None:
    subprocess.run([str(a) for a in argv], check=True, stdout=subprocess.DEVNULL)


def sh_line(line: str) -> None:
    subprocess.run(line, shell=True, check=True)


def files_of(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file())


@contextlib.contextmanager
def mounted(rig: Rig, cache: str) -> Iterator[tuple[Path, Counter]]:
    """A fresh gateway (its metrics on a free port) and a fresh FUSE mount of it."""
    port = free_port()
    with vshare_gateway(rig, cache, metrics_port=port) as mnt:
        yield mnt, Counter(port)


def measure_cache(rig: Rig, tarball: Path, cache: str) -> dict[str, Step]:
    steps = {name: Step() for name in STEPS}
    tree = rig.export / "tree"
    with mounted(rig, cache) as (mnt, counter):
        log(f"--cache {cache}: tar x")

        counter.charge(steps["tar x"], 0, partial(sh, "tar", "-xf", tarball, "-C", mnt))
        dirs = sorted(p for p in tree.iterdir() if p.is_dir())  # on the export: no requests
        files = sum(len(files_of(d)) for d in dirs)
        steps["tar x"].units = files
    a, b, c = dirs[0::3], dirs[1::3], dirs[2::3]
    with mounted(rig, cache) as (mnt, counter):
        log(f"--cache {cache}: ls -l and stat, cold stat, cat (fresh mount)")
        for d in a:
            names = [p.name for p in files_of(d)]
            there = mnt / "tree" / d.name
            counter.charge(steps["ls -l"], len(names), partial(sh, "ls", "-l", there))
            paths = [there / n for n in names]
            counter.charge(steps["stat after ls -l"], len(paths), partial(sh, "stat", "--", *paths))
        time.sleep(1.2)  # past auto's timeout: the listings and the kernel's entries are stale
        for d in a:
            paths = [mnt / "tree" / d.name / p.name for p in files_of(d)]
            step = steps["stat, listed 1 s before"]
            counter.charge(step, len(paths), partial(sh, "stat", "--", *paths))
        for group, step, command in ((b, "stat, cold", "stat"), (c, "cat, cold", "cat"),
                                     (b, "cat after stat", "cat")):  # fmt: skip
            for d in group:
                paths = [mnt / "tree" / d.name / p.name for p in files_of(d)]
                counter.charge(steps[step], len(paths), partial(sh, command, "--", *paths))
        entries = 1 + len(dirs) + files
        drop_caches()
        find_stat = f"find {mnt / 'tree'} -print0 | xargs -0 stat > /dev/null"
        counter.charge(steps["find, then stat each, cold"], entries, partial(sh_line, find_stat))
        log(f"--cache {cache}: rm -rf")
        counter.charge(steps["rm -rf"], entries, partial(sh, "rm", "-rf", mnt / "tree"))
    if tree.exists():
        raise RuntimeError(f"rm -rf through the mount left {tree}")
    return steps


def markdown(report: dict[str, Any]) -> str:
    where = report.get("source", "the checkout")
    lines = [
        f"Run of {report['date']} (commit {report['commit']}"
        + (f"; {where}" if where != "the checkout" else "")
        + f"): {report['files']:,} files in {report['dirs']} directories"
        + (", the tar's files interleaved. " if report.get("interleaved") else ". ")
        + f"Host: {report['machine']}.",
        "",
        "| FUSE --cache | step | per | requests per | target | requests | by op (per unit) |",
        "|---|---|---|---:|---|---:|---|",
    ]
    for cache, steps in report["caches"].items():
        for name, s in steps.items():
            unit, target = STEPS[name]
            per = s["requests"] / s["units"] if s["units"] else 0.0
            verdict = ""
            if target is not None:
                verdict = f"≤ {target:g}: " + ("met" if per <= target else "missed")
            ranked = sorted(s["ops"].items(), key=lambda kv: -kv[1])
            ops = ", ".join(f"{op} {n / s['units']:.2f}" for op, n in ranked)
            lines.append(f"| {cache} | {name} | {unit} | {per:.2f} | {verdict} "
                         f"| {s['requests']:,.0f} / {s['units']:,} | {ops} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, text: str) -> None:
    write_marked(path, text, "requests_per_op.py", "9P requests per operation (FUSE client)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=2000, help="files in the tree")
    ap.add_argument("--caches", default="auto,none",
                    help=f"the FUSE client's --cache modes: of {','.join(CACHES)}")  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="300 files: a smoke run")
    ap.add_argument(
        "--interleaved",
        action="store_true",
        help="the tar's files in no directory order (file n in directory n %% 40)",
    )
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp"),
                    help="where the export lives")  # fmt: skip
    ap.add_argument("--json", type=Path, help="write all figures here")
    ap.add_argument("--markdown", type=Path, help="write the table here (its marked block)")
    ap.add_argument("--from-json", type=Path, metavar="FILE",
                    help="measure nothing: report the --json of an earlier run")  # fmt: skip
    args = ap.parse_args()
    if args.from_json:
        try:
            report = json.loads(args.from_json.read_text())
            text = markdown(report)
        except (OSError, ValueError, KeyError) as exc:
            print(f"requests.py: {args.from_json}: not a saved run ({exc!r})", file=sys.stderr)
            return 2
    else:
        caches = [c for c in args.caches.split(",") if c]
        if not caches or not set(caches) <= set(CACHES):
            print(f"requests.py: --caches takes {','.join(CACHES)}", file=sys.stderr)
            return 2
        if os.geteuid() != 0:
            print("requests.py: needs root (FUSE mounts)", file=sys.stderr)
            return 2
        if args.quick:
            args.files = 300
        started = time.time()
        at_start = {"commit": commit(), "source": source()}  # others commit meanwhile
        results: dict[str, dict[str, Step]] = {}
        with tempfile.TemporaryDirectory(prefix="vshare-requests-", dir=args.workdir) as tmp:
            rig = Rig(Path(tmp))
            rig.export.mkdir(parents=True)
            tarball = rig.root / "tree.tar"
            make_tarball(tarball, args.files, interleaved=args.interleaved)
            for cache in caches:
                results[cache] = measure_cache(rig, tarball, cache)
        report = {
            "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
            "seconds": time.time() - started,
            "command": " ".join(["python", "benchmarks/requests_per_op.py", *sys.argv[1:]]),
            **at_start,
            "machine": machine(),
            "files": args.files,
            "dirs": max(1, args.files // 50),
            "interleaved": args.interleaved,
            "caches": {c: {k: asdict(s) for k, s in steps.items()} for c, steps in results.items()},
        }
        text = markdown(report)
    print(text)
    if args.json and not args.from_json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        write_markdown(args.markdown, text)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
        print(f"requests.py: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
