"""vshare side by side with the local disk, diod and sshfs: same data, same workloads.

    .venv/bin/python benchmarks/compare.py [--rounds 3] [--quick] [--systems a,b]
        [--workloads sequential,random,metadata,tree] [--json FILE] [--chart FILE.png]

Every system (``systems.py``) serves the same export directory on this machine's disk and
stays mounted for the whole run. Each round runs every workload (``workloads.py``) on
every system in turn, the order of systems rotated from round to round (A B C, B C A, ...)
so that no system always goes first after a cache drop; the report gives the median of
the rounds with min–max, then ratios against sshfs, diod and the local directory, and the
issue's targets met or missed. Needs root (FUSE mounts, drop_caches), fio, diod, sshfs
and sshd: ``make bench`` installs them.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from systems import GLUSTER_SYSTEMS, SYSTEMS, Rig
from workloads import METRICS, WORKLOADS, Params

SHARED = "seq.dat"
TARBALL_SDIST = "django==5.1.4"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vshare-bench"

#: (metric, system, other system, least ratio): the targets of the benchmark issue.
TARGETS: list[tuple[str, str, str, float]] = [
    *((m, "vshare", "sshfs", 3.0) for m in ("seq-write", "seq-read-cold", "seq-read-warm")),
    *((m, "vshare", "sshfs", 2.0) for m in ("create", "stat", "unlink")),
    *((m, "vshare", "vshare-diod", 1.0) for m in ("seq-read-cold", "seq-read-warm")),
    *((m, "vshare", "vshare-diod", 0.7) for m in ("create", "stat", "readdir", "unlink")),
    ("seq-read-warm", "vshare", "local", 0.5),
    *((m, "vshare-gluster", "gluster-native", 0.8)
      for m in ("seq-write", "seq-read-cold", "seq-read-warm")),
]  # fmt: skip
#: The ratio tables: (system, what it is compared with).
PAIRS: list[tuple[str, str]] = [
    ("vshare", "local"), ("vshare", "vshare-diod"), ("vshare", "sshfs"),
    ("vshare-coherent", "sshfs"), ("vshare-coherent", "local"),
    ("vshare-gluster", "gluster-native"), ("vshare-gluster", "vshare"),
]  # fmt: skip


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB, Linux {platform.release()}, "
            f"Python {platform.python_version()}")  # fmt: skip


def versions() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            return "absent"
        text = (done.stdout or done.stderr).strip().splitlines()
        return text[0] if text else "?"

    return {
        "fio": first_line(["fio", "--version"]),
        "sshfs": first_line(["sshfs", "--version"]),
        "ssh": first_line(["ssh", "-V"]),
        "diod": first_line(["dpkg-query", "-W", "-f=${Version}", "diod"]),
        "vshare": first_line([sys.executable, "-c", "import vshare; print(vshare.__version__)"]),
    }


def tarball(rig: Rig) -> Path | None:
    """An uncompressed source tarball (the Django sdist: ~10k files, 42 MiB), downloaded
    once from PyPI into the user's cache; None (and the tree workload is skipped, with
    the reason) when it cannot be had."""
    CACHE.mkdir(parents=True, exist_ok=True)
    found = sorted(CACHE.glob("Django-*.tar.gz"))
    if not found:
        log(f"fetching the {TARBALL_SDIST} sdist from PyPI into {CACHE} (once)")
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             "-d", str(CACHE), TARBALL_SDIST], capture_output=True, text=True, check=False,
        )  # fmt: skip
        found = sorted(CACHE.glob("Django-*.tar.gz"))
        if not found:
            log(f"no source tarball ({done.stderr.strip()[-200:]}): skipping the tree workload")
            return None
    plain = rig.root / found[-1].name.removesuffix(".gz")
    with gzip.open(found[-1]) as src, plain.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return plain


def make_shared_file(path: Path, size_mib: int) -> None:
    chunk = os.urandom(1 << 20)
    with path.open("wb") as f:
        for i in range(size_mib):
            f.write(chunk[i % 7 :] + chunk[: i % 7])  # not all the same MiB
        f.flush()
        os.fsync(f.fileno())


#: ``--gluster-volume``: the bench volume's options. ``cache``: what docs/cache.md tells
#: operators to set for shares in cache mode meta or all (the default mode; without them
#: the gateway serves those shares as ``none`` and warns), GlusterFS's own upcalls; the
#: native client runs on the same volume. ``default``: none set.
GLUSTER_VOLUMES = ("cache", "default")


def start_gluster(rig: Rig, stack: contextlib.ExitStack, size_mib: int, volume: str) -> None:
    """A private glusterd and a single-brick volume on this disk (under the rig), with the
    same data as the local export, written through a native mount; ``volume``: its options
    (:data:`GLUSTER_VOLUMES`)."""
    from vshare.backend.gluster import CACHE_VOLUME_OPTIONS
    from vshare.testing.glusterd import available, fuse_mount, gluster_volume

    missing = available()
    if missing:
        raise RuntimeError(f"GlusterFS systems: {missing}")
    options = CACHE_VOLUME_OPTIONS if volume == "cache" else {}
    shown = ", ".join(f"{k} {v}" for k, v in options.items()) or "default options"
    log(f"starting glusterd and a single-brick volume ({shown})")
    rig.gluster = stack.enter_context(gluster_volume("vshare-bench", rig.root, options=options))
    staging = stack.enter_context(fuse_mount(rig.gluster, rig.scratch("gluster-staging") / "m"))
    (staging / "export").mkdir()
    log(f"preparing {size_mib} MiB of shared data on the volume")
    make_shared_file(staging / "export" / SHARED, size_mib)
    rig.gluster_staging = staging


def summarize(results: dict[str, dict[str, list[float]]], systems: list[str]) -> dict[str, object]:
    table: dict[str, dict[str, dict[str, float]]] = {}
    for metric, per_system in results.items():
        table[metric] = {
            s: {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}
            for s, v in per_system.items()
            if v
        }
    targets = []
    for metric, ours, other, least in TARGETS:
        row = table.get(metric, {})
        if ours in row and other in row and other in systems:
            ratio = row[ours]["median"] / row[other]["median"]
            targets.append({"metric": metric, "system": ours, "against": other,
                            "target": least, "ratio": ratio, "met": ratio >= least})  # fmt: skip
    return {"table": table, "targets": targets}


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def markdown(summary: dict[str, object], systems: list[str]) -> str:
    table: dict[str, dict[str, dict[str, float]]] = summary["table"]  # type: ignore[assignment]
    lines = ["| workload | unit | " + " | ".join(systems) + " |",
             "|---|---|" + "---:|" * len(systems)]  # fmt: skip
    for metric, row in table.items():
        cells = []
        unit = METRICS[metric].unit
        for s in systems:
            if s not in row:
                cells.append("—")
                continue
            r = row[s]
            if unit == "1/s":  # a whole-tree step: shown as its time, lower is better
                cells.append(f"{fmt(1 / r['median'])} ({fmt(1 / r['max'])}–{fmt(1 / r['min'])})")
            else:
                cells.append(f"{fmt(r['median'])} ({fmt(r['min'])}–{fmt(r['max'])})")
        shown = "seconds" if unit == "1/s" else unit
        lines.append(f"| {metric} | {shown} | " + " | ".join(cells) + " |")
    pairs = [(a, b) for a, b in PAIRS if a in systems and b in systems]
    if pairs:
        lines += ["", "| workload | " + " | ".join(f"{a} ÷ {b}" for a, b in pairs) + " |",
                  "|---|" + "---:|" * len(pairs)]  # fmt: skip
        for metric, row in table.items():
            cells = [f"{row[a]['median'] / row[b]['median']:.2f}×" if a in row and b in row
                     else "—" for a, b in pairs]  # fmt: skip
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    targets: list[dict[str, object]] = summary["targets"]  # type: ignore[assignment]
    if targets:
        lines += ["", "| target | ratio | |", "|---|---:|---|"]
        for t in targets:
            lines.append(
                f"| {t['metric']}: {t['system']} ≥ {t['target']}× {t['against']} "
                f"| {t['ratio']:.2f}× | {'met' if t['met'] else 'MISSED'} |"
            )
    return "\n".join(lines)


def chart(summary: dict[str, object], systems: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table: dict[str, dict[str, dict[str, float]]] = summary["table"]  # type: ignore[assignment]
    base = "local" if "local" in systems else systems[0]
    metrics = [m for m in table if base in table[m]]
    shown = [s for s in systems if s != base]
    fig, ax = plt.subplots(figsize=(max(8, len(metrics) * 0.9), 4.5))
    width = 0.8 / max(len(shown), 1)
    for i, s in enumerate(shown):
        xs, ys, lo, hi = [], [], [], []
        for j, m in enumerate(metrics):
            if s in table[m]:
                b = table[m][base]["median"]
                r = table[m][s]
                xs.append(j + i * width)
                ys.append(r["median"] / b)
                lo.append((r["median"] - r["min"]) / b)
                hi.append((r["max"] - r["median"]) / b)
        ax.bar(xs, ys, width, yerr=[lo, hi], label=s, capsize=2)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks([j + width * (len(shown) - 1) / 2 for j in range(len(metrics))])
    ax.set_xticklabels(metrics, rotation=35, ha="right")
    ax.set_ylabel(f"speed relative to {base} (log scale)")
    ax.set_title("vshare side by side (median of rounds, bars: min–max)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_saved(args: argparse.Namespace) -> int:
    try:
        saved = json.loads(args.from_json.read_text())
        systems, raw = list(saved["systems"]), saved["raw"]
    except (OSError, ValueError, KeyError) as exc:
        print(f"compare.py: {args.from_json}: not a saved run ({exc})", file=sys.stderr)
        return 2
    summary = summarize(raw, systems)
    text = markdown(summary, systems)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.chart:
        chart(summary, systems, args.chart)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help=f"comma-separated, of: {', '.join(SYSTEMS)}")  # fmt: skip
    ap.add_argument("--workloads", default=",".join(WORKLOADS),
                    help=f"comma-separated, of: {', '.join(WORKLOADS)}")  # fmt: skip
    ap.add_argument("--size-mib", type=int, default=1024, help="sequential file size")
    ap.add_argument("--files", type=int, default=10_000, help="files in the metadata workload")
    ap.add_argument("--rand-seconds", type=float, default=8.0)
    ap.add_argument("--quick", action="store_true",
                    help="64 MiB, 1000 files, 2 s random reads, 1 round: a smoke run")  # fmt: skip
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp"),
                    help="where the export lives (on the disk under test)")  # fmt: skip
    ap.add_argument("--json", type=Path, help="write all figures here")
    ap.add_argument("--chart", type=Path, help="write a PNG chart here")
    ap.add_argument("--markdown", type=Path, help="write the tables here")
    ap.add_argument("--gluster-volume", choices=GLUSTER_VOLUMES, default="cache",
                    help="the GlusterFS volume's options: 'cache' (features.cache-invalidation, "
                         "as docs/cache.md tells operators) or 'default'")  # fmt: skip
    ap.add_argument("--from-json", type=Path, metavar="FILE",
                    help="measure nothing: report the --json of an earlier run")  # fmt: skip
    args = ap.parse_args()
    if args.from_json:
        return report_saved(args)
    if os.geteuid() != 0:
        print("compare.py: needs root (FUSE mounts, drop_caches)", file=sys.stderr)
        return 2
    systems = [s for s in args.systems.split(",") if s]
    workloads = [w for w in args.workloads.split(",") if w]
    for name in systems:
        if name not in SYSTEMS:
            print(f"compare.py: unknown system {name!r}", file=sys.stderr)
            return 2
    for name in workloads:
        if name not in WORKLOADS:
            print(f"compare.py: unknown workload {name!r}", file=sys.stderr)
            return 2
    if args.quick:
        args.size_mib, args.files, args.rand_seconds, args.rounds = 64, 1000, 2.0, 1
    for tool in ("fio", "diod", "sshfs", "fusermount3"):
        if shutil.which(tool) is None:
            print(f"compare.py: {tool} is not installed (make bench installs it)", file=sys.stderr)
            return 2

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="vshare-compare-", dir=args.workdir) as tmp:
        rig = Rig(Path(tmp))
        rig.export.mkdir(parents=True)
        log(f"preparing {args.size_mib} MiB of shared data in {rig.export}")
        make_shared_file(rig.export / SHARED, args.size_mib)
        params = Params(args.size_mib, args.files, args.rand_seconds,
                        tarball(rig) if "tree" in workloads else None)  # fmt: skip
        results: dict[str, dict[str, list[float]]] = {}
        with contextlib.ExitStack() as stack:
            if any(s in GLUSTER_SYSTEMS for s in systems):
                start_gluster(rig, stack, args.size_mib, args.gluster_volume)
            roots = {}
            for name in systems:
                log(f"starting {name}: {SYSTEMS[name][0]}")
                roots[name] = stack.enter_context(SYSTEMS[name][1](rig))
            for rnd in range(args.rounds):
                order = systems[rnd % len(systems) :] + systems[: rnd % len(systems)]
                for workload in workloads:
                    for name in order:
                        root = roots[name]
                        t = time.perf_counter()
                        figures = WORKLOADS[workload](root, params, f"{name}-{rnd}", root / SHARED)
                        took = time.perf_counter() - t
                        for metric, value in figures.items():
                            results.setdefault(metric, {s: [] for s in systems})[name].append(value)
                        shown = ", ".join(
                            f"{m} {fmt(v)} {METRICS[m].unit}" for m, v in figures.items()
                        )
                        log(f"round {rnd + 1}/{args.rounds} {workload:<10} {name:<12} "
                            f"{shown} ({took:.0f} s)")  # fmt: skip
    summary = summarize(results, systems)
    report = {
        "machine": machine(), "versions": versions(), "params": {
            "size_mib": args.size_mib, "files": args.files, "rand_seconds": args.rand_seconds,
            "rounds": args.rounds, "tarball": params.tarball.name if params.tarball else None,
            "gluster_volume": args.gluster_volume,
        },
        "systems": {s: SYSTEMS[s][0] for s in systems}, "seconds": time.time() - started,
        "raw": results, **summary,
    }  # fmt: skip
    text = markdown(summary, systems)
    print(f"vshare side by side — {report['machine']}")
    print(f"{args.rounds} rounds, {args.size_mib} MiB file, {args.files} files, "
          f"{report['seconds'] / 60:.1f} min; medians (min–max)\n")  # fmt: skip
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.chart:
        chart(summary, systems, args.chart)
        log(f"chart: {args.chart}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, TimeoutError) as exc:  # a system would not start, a tool failed
        print(f"compare.py: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
