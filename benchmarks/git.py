"""git in a real repository on each system, side by side: the status a developer runs
most, after the caches were dropped, again at once, and again after two seconds (past
``auto``'s one-second promise); a change added and committed; the tree checked out.

    .venv/bin/python benchmarks/git.py [--systems local,vshare,vshare-coherent,sshfs]

The repository is the Django sdist (as compare.py fetches it: 6,809 files in 3,234
directories), unpacked, ``git init``-ed and committed on the export directly before each
system mounts it (``gc.auto`` off: a background ``git gc`` would repack it mid-run). The
first status through a mount re-reads every file: the index's inode numbers are the
host's. Needs root (FUSE, drop_caches): ``make bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import systems
from compare import tarball
from systems import Rig
from workloads import drop_caches

SYSTEMS: dict[str, Callable[[Rig], AbstractContextManager[Path]]] = {
    "local": systems.local,
    "vshare": systems.vshare_gateway,
    "vshare-coherent": systems.vshare_coherent,
    "sshfs": systems.sshfs,
}
#: (step, shell line, whether the caches are dropped first, seconds slept first)
STEPS: list[tuple[str, str, bool, float]] = [
    ("status, caches dropped", "git status --porcelain", True, 0.0),
    ("status again", "git status --porcelain", False, 0.0),
    ("status 2 s later", "git status --porcelain", False, 2.0),
    ("add + commit a change", "echo x >> README.rst && git add -A && git commit -qm change",
     False, 0.0),
    ("checkout of the last commit", "git checkout -q HEAD~1 -- . && git status --porcelain",
     False, 0.0),
]  # fmt: skip
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.org",
    "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.org",
    # the export's files are not this uid's on every system; no background repacking
    "GIT_CONFIG_COUNT": "2", "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*",
    "GIT_CONFIG_KEY_1": "gc.auto", "GIT_CONFIG_VALUE_1": "0",
}  # fmt: skip


def timed(line: str, cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(line, shell=True, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{line!r} in {cwd}: {done.stderr.strip()[-300:]}")
    return seconds


def repository(rig: Rig, tar: Path) -> None:
    """The export: the tree unpacked, and committed as one commit."""
    subprocess.run(["rm", "-rf", str(rig.export)], check=True)
    rig.export.mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(tar), "-C", str(rig.export)], check=True)
    (top,) = rig.export.iterdir()
    timed("git init -q && git add -A && git commit -qm tree", top)


def run(rig: Rig, tar: Path, names: list[str]) -> Iterator[tuple[str, str, float]]:
    for name in names:
        repository(rig, tar)
        with SYSTEMS[name](rig) as mnt:
            (top,) = mnt.iterdir()
            for step, line, drop, pause in STEPS:
                if drop:
                    drop_caches()
                time.sleep(pause)
                yield name, step, timed(line, top)


def markdown(figures: dict[str, dict[str, float]], names: list[str]) -> str:
    head = "| step | " + " | ".join(f"{n} (s)" for n in names) + " |"
    lines = [head, "|---|" + "---:|" * len(names)]
    for step, *_ in STEPS:
        lines.append(f"| {step} | " + " | ".join(f"{figures[n][step]:.2f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"of {', '.join(SYSTEMS)}")
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp"),
                    help="where the export lives")  # fmt: skip
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    names = [n for n in args.systems.split(",") if n]
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        print(f"git.py: unknown systems {', '.join(unknown)}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("git.py: needs root (FUSE mounts, drop_caches)", file=sys.stderr)
        return 2
    os.environ.update(GIT_ENV)
    figures: dict[str, dict[str, float]] = {n: {} for n in names}
    with tempfile.TemporaryDirectory(prefix="vshare-git-", dir=args.workdir) as tmp:
        rig = Rig(Path(tmp))
        rig.export.mkdir(parents=True)
        tar = tarball(rig)
        if tar is None:
            return 1
        for name, step, seconds in run(rig, tar, names):
            print(f"{name}: {step}: {seconds:.2f} s", flush=True)
            figures[name][step] = seconds
    print(markdown(figures, names))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
