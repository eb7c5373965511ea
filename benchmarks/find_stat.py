"""``find | xargs stat`` of a real source tree through the vshare FUSE client: seconds and
9P requests by op, per ``--cache`` mode.

    .venv/bin/python benchmarks/find_stat.py [--caches auto,coherent] [--runs 2]

compare.py's find-stat step times it; this says what it sends. The Django sdist (as
compare.py fetches it: 3,234 directories, most of one or two names, 6,809 files) is
unpacked on the export directly; then, through a fresh gateway and mount for each mode,
the kernel's caches are dropped and ``find . -print0 | xargs -0 stat`` runs ``--runs``
times. ``stat`` looks names up well after ``find`` listed their directories, so in
``auto`` (a one-second promise) most lookups are asked of the gateway again; in
``coherent`` only the first run's are. Needs root (FUSE, drop_caches): ``make bench``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

from compare import tarball
from requests_per_op import Step, mounted, sh_line
from systems import Rig
from workloads import drop_caches


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--caches", default="auto,coherent", help="the FUSE client's --cache modes")
    ap.add_argument("--runs", type=int, default=2, help="runs per mode, caches dropped before")
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp"),
                    help="where the export lives")  # fmt: skip
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("find_stat.py: needs root (FUSE mounts, drop_caches)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="vshare-find-stat-", dir=args.workdir) as tmp:
        rig = Rig(Path(tmp))
        rig.export.mkdir(parents=True)
        tar = tarball(rig)
        if tar is None:
            return 1
        subprocess.run(["tar", "-xf", str(tar), "-C", str(rig.export)], check=True)
        # what find prints: the top, and every name under it
        entries = 1 + sum(len(dirs) + len(files) for _, dirs, files in os.walk(rig.export))
        for cache in [c for c in args.caches.split(",") if c]:
            with mounted(rig, cache) as (mnt, counter):
                for run in range(1, args.runs + 1):
                    drop_caches()
                    step = Step()
                    line = f"cd {mnt} && find . -print0 | xargs -0 stat > /dev/null"
                    counter.charge(step, entries, partial(sh_line, line))
                    ops = ", ".join(
                        f"{op} {n:,.0f}" for op, n in sorted(step.ops.items(), key=lambda x: -x[1])
                    )
                    print(
                        f"{cache} run {run}: {step.seconds:.2f} s, {step.requests:,.0f} requests"
                        f" for {entries:,} entries ({step.per_unit():.2f} each): {ops}",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
