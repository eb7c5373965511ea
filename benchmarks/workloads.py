"""The workloads `compare.py` runs on every system, the same on each.

A workload takes the directory a system serves, a :class:`Params` and a unique tag (so
that rounds and systems never share a file they write), and returns one figure per metric:
``{metric: value}``. Every value is a rate, higher is better (MiB/s, IOPS, ops/s, or 1/s
for whole-tree steps), so that every ratio reads the same way.

"cold" means the page cache, dentries and inodes were dropped just before
(``/proc/sys/vm/drop_caches``): for a FUSE system that is both the client's cache and the
server's; "warm" means the same data was just read through the same mount.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Params:
    size_mib: int = 1024  # the sequential file
    files: int = 10_000  # the metadata workload
    rand_seconds: float = 8.0  # each 4 KiB random-read run
    tarball: Path | None = None  # an uncompressed source tarball for the tree workload


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    what: str


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("seq-write", "MiB/s", "fio 1 MiB sequential write, then fsync"),
        Metric("seq-read-cold", "MiB/s", "fio 1 MiB sequential read, caches dropped"),
        Metric("seq-read-warm", "MiB/s", "fio 1 MiB sequential read, read just before"),
        Metric("rand-read-cold", "IOPS", "fio 4 KiB random read, caches dropped"),
        Metric("rand-read-warm", "IOPS", "fio 4 KiB random read, file read just before"),
        Metric("create", "ops/s", "create+close of empty files"),
        Metric("stat", "ops/s", "stat of each file, caches dropped"),
        Metric("readdir", "entries/s", "listing of the directory, caches dropped"),
        Metric("unlink", "ops/s", "unlink of each file"),
        Metric("untar", "1/s", "unpack the source tarball (uncompressed)"),
        Metric("find-stat", "1/s", "find | xargs stat over the tree, caches dropped"),
        Metric("reread", "1/s", "tar the tree to a pipe (read every file), caches dropped"),
        Metric("rm-tree", "1/s", "rm -rf of the tree"),
    )
}


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def fio(path: Path, rw: str, bs: str, size_mib: int, *extra: str) -> dict[str, float]:
    """Run one fio job on ``path``; its read or write figures (bw in KiB/s, iops)."""
    argv = [
        "fio", "--name=bench", f"--filename={path}", f"--rw={rw}", f"--bs={bs}",
        f"--size={size_mib}M", "--ioengine=psync", "--output-format=json", *extra,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"fio {rw} on {path} failed: {done.stderr.strip()[-500:]}")
    job = json.loads(done.stdout[done.stdout.index("{") :])["jobs"][0]
    side = job["write"] if "write" in rw else job["read"]
    return {"bw_kib": float(side["bw"]), "iops": float(side["iops"])}


def sequential(root: Path, p: Params, tag: str, shared: Path) -> dict[str, float]:
    """1 MiB sequential write of a new file; cold then warm reads of the shared file."""
    out: dict[str, float] = {}
    target = root / f"seq-{tag}.dat"
    try:
        w = fio(target, "write", "1M", p.size_mib, "--end_fsync=1")
        out["seq-write"] = w["bw_kib"] / 1024
    finally:
        target.unlink(missing_ok=True)
    drop_caches()
    out["seq-read-cold"] = fio(shared, "read", "1M", p.size_mib)["bw_kib"] / 1024
    out["seq-read-warm"] = fio(shared, "read", "1M", p.size_mib, "--invalidate=0")["bw_kib"] / 1024
    return out


def random_read(root: Path, p: Params, tag: str, shared: Path) -> dict[str, float]:
    """4 KiB random reads over the shared file: cold, then after reading it whole."""
    timed = ["--time_based", f"--runtime={p.rand_seconds:g}", "--norandommap"]
    drop_caches()
    out = {"rand-read-cold": fio(shared, "randread", "4k", p.size_mib, *timed)["iops"]}
    fio(shared, "read", "1M", p.size_mib, "--invalidate=0")
    out["rand-read-warm"] = fio(shared, "randread", "4k", p.size_mib, "--invalidate=0", *timed)[
        "iops"
    ]
    return out


def metadata(root: Path, p: Params, tag: str, shared: Path) -> dict[str, float]:
    """Create, stat, list and unlink ``p.files`` empty files in a new directory."""
    d = root / f"meta-{tag}"
    d.mkdir()
    names = [f"{d}/f{i:06d}" for i in range(p.files)]
    out: dict[str, float] = {}
    try:
        t = time.perf_counter()
        for name in names:
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        out["create"] = p.files / (time.perf_counter() - t)
        drop_caches()
        t = time.perf_counter()
        for name in names:
            os.stat(name)
        out["stat"] = p.files / (time.perf_counter() - t)
        drop_caches()
        t = time.perf_counter()
        listed = len(os.listdir(d))
        out["readdir"] = listed / (time.perf_counter() - t)
        if listed != p.files:
            raise RuntimeError(f"readdir listed {listed} of {p.files} files")
        t = time.perf_counter()
        for name in names:
            os.unlink(name)
        out["unlink"] = p.files / (time.perf_counter() - t)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return out


def _timed(argv: list[str] | str, cwd: Path) -> float:
    t = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, shell=isinstance(argv, str), capture_output=True,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{argv} failed: {done.stderr.decode(errors='replace')[-500:]}")
    return time.perf_counter() - t


def tree(root: Path, p: Params, tag: str, shared: Path) -> dict[str, float]:
    """A real source tree: unpack it, stat everything, read everything, remove it."""
    if p.tarball is None:
        return {}
    d = root / f"tree-{tag}"
    d.mkdir()
    out: dict[str, float] = {}
    try:
        out["untar"] = 1 / _timed(["tar", "-xf", str(p.tarball)], d)
        drop_caches()
        out["find-stat"] = 1 / _timed("find . -print0 | xargs -0 stat > /dev/null", d)
        drop_caches()
        # Through a pipe: GNU tar reads nothing when its output is /dev/null.
        out["reread"] = 1 / _timed("tar -cf - . | cat > /dev/null", d)
        out["rm-tree"] = 1 / _timed(["rm", "-rf", str(d)], root)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return out


Workload = Callable[[Path, Params, str, Path], dict[str, float]]
WORKLOADS: dict[str, Workload] = {
    "sequential": sequential,
    "random": random_read,
    "metadata": metadata,
    "tree": tree,
}
