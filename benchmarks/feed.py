"""The change feed (``--cache coherent``, docs/changes-feed.md): how soon a change reaches
a coherent mount's inotify, and what the mode costs a metadata workload.

1. Latency: ``--changes`` files are stat'ed in a ``coherent`` mount (so its kernel caches
   them for an hour), each is appended to once, one at a time, and the time from the
   write's return to the IN_MODIFY of an inotify watch in that mount is taken: on the host
   (the POSIX volume behind the gateway) and through a second mount (``always``) of the
   same gateway; on a GlusterFS volume (when glusterd runs here), through a mount of a
   second gateway and by GlusterFS's native client, each told by an upcall. p50 and p99.
2. The two-writer stale-read checker (tests/two_writers.py): ``--turns`` turns each way
   between two coherent mounts, and between the host and a coherent mount; stale reads
   (must be 0), reads told of a part of a change first, and the time from a writer's
   close to the other's right read.
3. The metadata workloads of benchmarks/workloads.py (``metadata``: create, stat, list and
   unlink ``--files`` files; ``tree``: a ``--files``-file tarball unpacked, stat'ed,
   re-read, removed) through a mount in ``coherent``, ``always`` and ``auto``: the median
   of ``--rounds`` rounds.

One gateway (POSIX backend) and the mounts on this machine, over a Unix socket. Needs root.
Usage: ``python benchmarks/feed.py [--changes 200] [--turns 100] [--files 2000]
[--rounds 3] [--markdown FILE]``.
"""

from __future__ import annotations

import argparse
import os
import select
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cache import commit
from compare import machine
from kernel_client import make_tarball
from marked import write_marked
from systems import VSHARE, Rig, fuse_mounted, gateway
from workloads import Params, metadata, tree

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: tests
from tests import inotify, two_writers

MODES = ("coherent", "always", "auto")


def _mount(sock: Path, mnt: Path, cache: str):  # type: ignore[no-untyped-def]
    argv = [VSHARE, "mount", f"unix://{sock}", "bench", str(mnt), "--cache", cache]
    return fuse_mounted(mnt, argv, mnt.parent / f"{mnt.name}.log")


def _wait(fd: int, name: bytes, timeout: float = 5.0) -> float | None:
    end = time.perf_counter() + timeout
    while (left := end - time.perf_counter()) > 0:
        if select.select([fd], [], [], left)[0]:
            for ev in inotify.parse(os.read(fd, 65536)):
                if ev.name == name and ev.mask & inotify.IN_MODIFY:
                    return time.perf_counter()
    return None


def _latencies_into(
    a: Path, writers: dict[str, Path], names: list[str], out: dict[str, list[float]]
) -> None:
    """ms from each writer's append to IN_MODIFY in ``a`` (the coherent view of the same
    directory), for each name, one change at a time."""
    for n in names:
        os.stat(a / n)
    time.sleep(0.5)  # the Twatch waits and the share is watched
    fd = inotify.init()
    try:
        inotify.add_watch(fd, os.fsencode(a), inotify.IN_MODIFY)
        for writer, where in writers.items():
            for n in names:
                with (where / n).open("ab") as f:
                    f.write(b"1")
                t0 = time.perf_counter()
                seen = _wait(fd, n.encode())
                if seen is None:
                    raise RuntimeError(f"{writer}: no IN_MODIFY of {n} in 5 s")
                out.setdefault(writer, []).append((seen - t0) * 1000)
                time.sleep(0.002)  # one change at a time: no coalescing
    finally:
        os.close(fd)


def latencies(rig: Rig, sock: Path, changes: int) -> dict[str, list[float]]:
    """ms from a write's return to IN_MODIFY in the coherent mount, per writer."""
    run = sock.parent
    d = rig.export / "lat"
    d.mkdir()
    names = [f"f{i:04d}" for i in range(changes)]
    for n in names:
        (d / n).write_bytes(b"0")
    out: dict[str, list[float]] = {}
    with _mount(sock, run / "coherent", "coherent") as a, _mount(sock, run / "b", "always") as b:
        _latencies_into(a / "lat", {"host": d, "second mount": b / "lat"}, names, out)
    return out


def gluster_latencies(rig: Rig, changes: int) -> dict[str, list[float]]:
    """The same on a GlusterFS volume (cache invalidation on): a write through a second
    gateway's mount, and one by GlusterFS's native client, each told to the first
    gateway by an upcall."""
    from vshare.backend.gluster import CACHE_VOLUME_OPTIONS
    from vshare.testing.glusterd import available, fuse_mount, gluster_volume

    missing = available()
    if missing:
        print(f"feed.py: no GlusterFS figures: {missing}", file=sys.stderr)
        return {}
    names = [f"f{i:04d}" for i in range(changes)]
    out: dict[str, list[float]] = {}
    with (
        gluster_volume("vshare-feed", rig.root, options=CACHE_VOLUME_OPTIONS) as vol,
        fuse_mount(vol, rig.scratch("gluster-native") / "m") as native,
    ):
        (native / "export" / "lat").mkdir(parents=True)
        for n in names:
            (native / "export" / "lat" / n).write_bytes(b"0")
        with (
            gateway(rig, "feed-gl1", vol.uri) as one,
            gateway(rig, "feed-gl2", vol.uri) as two,
            _mount(one, one.parent / "a", "coherent") as a,
            _mount(two, two.parent / "b", "always") as b,
        ):
            writers = {"GlusterFS: second gateway": b / "lat",
                       "GlusterFS: native client": native / "export" / "lat"}  # fmt: skip
            _latencies_into(a / "lat", writers, names, out)
    return out


def stale_reads(rig: Rig, sock: Path, turns: int) -> dict[str, two_writers.Tally]:
    """The two-writer checker between two coherent mounts, and the host and one."""
    run = sock.parent
    out: dict[str, two_writers.Tally] = {}
    with _mount(sock, run / "tw-a", "coherent") as a, _mount(sock, run / "tw-b", "coherent") as b:
        for what, sub, views in (
            ("two coherent mounts", "mounts", (a, b)),
            ("host and a coherent mount", "host", (rig.export, a)),
        ):
            (rig.export / sub).mkdir()
            one, other = views[0] / sub, views[1] / sub
            two_writers.prepare(rig.export / sub, [one, other])
            time.sleep(0.3)  # the Twatches wait
            out[what] = two_writers.check(one, other, turns)
    return out


def workloads(rig: Rig, sock: Path, files: int, rounds: int) -> dict[str, dict[str, float]]:
    """Each workload's rate per mode: the median of ``rounds`` rounds, the modes taking
    turns within a round (one run each is ±15 % on this machine)."""
    tarball = rig.root / "tree.tar"
    make_tarball(tarball, files)
    p = Params(files=files, tarball=tarball)
    runs: dict[str, dict[str, list[float]]] = {mode: {} for mode in MODES}
    for r in range(rounds):
        for mode in MODES:
            with _mount(sock, sock.parent / f"w-{mode}-{r}", mode) as m:
                shared = rig.scratch(f"shared-{r}")
                tag = f"{mode}-{r}"
                got = {**metadata(m, p, tag, shared), **tree(m, p, tag, shared)}
            for step, rate in got.items():
                runs[mode].setdefault(step, []).append(rate)
    return {
        mode: {step: statistics.median(xs) for step, xs in steps.items()}
        for mode, steps in runs.items()
    }


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def markdown(
    lat: dict[str, list[float]],
    stale: dict[str, two_writers.Tally],
    work: dict[str, dict[str, float]],
    argv: str,
) -> str:
    when = time.strftime("%Y-%m-%d %H:%M")
    lines = [f"`{argv}` ({when}, {commit()}, {machine()})", "",
             "| change made | changes | p50 ms | p99 ms | max ms |",
             "|---|---|---|---|---|"]  # fmt: skip
    for writer, xs in lat.items():
        p50, p99 = statistics.median(xs), pct(xs, 0.99)
        lines.append(f"| {writer} → IN_MODIFY in the coherent mount | {len(xs)} "
                     f"| {p50:.1f} | {p99:.1f} | {max(xs):.1f} |")  # fmt: skip
    lines += ["", "| two writers | turns | stale reads | early reads "
              "| close → right read p50 ms | p99 ms |", "|---|---|---|---|---|---|"]  # fmt: skip
    for what, t in stale.items():
        ms = [x * 1000 for x in t.latencies] or [0.0]
        lines.append(f"| {what} | {t.turns} | {t.stale} | {t.early} "
                     f"| {statistics.median(ms):.1f} | {pct(ms, 0.99):.1f} |")  # fmt: skip
    steps = list(next(iter(work.values())))
    lines += ["", "| per second | " + " | ".join(MODES) + " | coherent / always |",
              "|---|" + "---|" * (len(MODES) + 1)]  # fmt: skip
    for step in steps:
        row = [work[m].get(step, 0.0) for m in MODES]
        ratio = row[0] / row[1] if row[1] else 0.0
        lines.append(f"| {step} | " + " | ".join(f"{v:,.1f}" for v in row) + f" | {ratio:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--changes", type=int, default=200)
    ap.add_argument("--turns", type=int, default=100)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3, help="of the workloads (median)")
    ap.add_argument("--markdown", type=Path, help="write the report here (its marked block)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("feed.py: needs root (FUSE mounts)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="vshare-feed-") as tmp:
        rig = Rig(Path(tmp))
        rig.export.mkdir(parents=True)
        with gateway(rig, "feed-gw") as sock:
            lat = latencies(rig, sock, args.changes)
            stale = stale_reads(rig, sock, args.turns)
            work = workloads(rig, sock, args.files, args.rounds)
        lat.update(gluster_latencies(rig, args.changes))
    text = markdown(lat, stale, work, " ".join(["python", "benchmarks/feed.py", *sys.argv[1:]]))
    print(text)
    if args.markdown:
        write_marked(args.markdown, text, "feed.py", "The change feed: latency and cost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
