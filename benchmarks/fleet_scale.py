"""A simulated fleet of gateways following one etcd: rule-change propagation and etcd's cost.

    .venv/bin/python benchmarks/fleet_scale.py [--gateways 200] [--changes 20]
        [--interval 0.5] [--shares 100] [--rules 2] [--instances 500]
        [--mode feed|snapshot] [--no-heartbeat] [--procs 2] [--idle 10] [--json FILE]

Starts its own etcd (``vshare.testing.etcd.EtcdServer``, one member on loopback) unless
``--etcd HOST:PORT`` names one, fills it through one control-plane ``EtcdStore`` (shares,
rules, instances), then starts ``--gateways`` simulated gateways, each a thread with its
own ``EtcdStore`` (its own HTTP client and its own watch stream, as a gateway process has)
doing what ``StoreFollower`` does: ``wait_for_change(revision, 1 s)`` in a loop and, when
the revision moved, read ``changes_since(revision)`` and, with ``--mode feed`` (what the
follower does since commit 28bb39b), nothing more, or with ``--mode snapshot`` (what it did
before) a full ``snapshot()`` unless the changes were only gateway registrations; and,
unless ``--no-heartbeat``, a heartbeat every ttl/3 = 3.3 s as a real gateway.

Measured: for each of ``--changes`` rule writes (one every ``--interval`` s), the delay
until each simulated gateway holds a view at or past that write's revision: p50/p99/max
over all (change, gateway) pairs; etcd's CPU (utime+stime from ``/proc/PID/stat``) per
second of wall time during an idle phase (watches and heartbeats only) and during the
change phase, and its RSS (``VmRSS``) at the end; this process's own CPU (the simulated
fleet is Python threads under one GIL: on a small machine it, not etcd, may set the tail).
Not part of ``make bench``; docs/scale.md has the model the figures feed and how to run it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from vshare.policy import Instance
from vshare.store import (
    Compacted,
    GatewayRecord,
    InstanceRecord,
    RuleRecord,
    ShareRecord,
    ShareStatus,
    StoreError,
)
from vshare.store.etcd import EtcdStore
from vshare.testing.etcd import EtcdServer

TTL = 10.0  # StoreFollower's default: a heartbeat every TTL / 3 s


def proc_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class SimGateway:
    """One simulated gateway: a thread following the store."""

    n: int
    endpoint: str
    prefix: str
    mode: str
    heartbeat: bool
    stop: Any  # a threading or multiprocessing Event
    spread: float = 0.0
    #: (monotonic time, revision) each time a newer view was applied.
    views: list[tuple[float, int]] = field(default_factory=list)
    snapshot_times: list[float] = field(default_factory=list)
    first_beat: float = 0.0
    errors: int = 0
    beats: int = 0
    beat_errors: int = 0
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name=f"gw-{self.n}", daemon=True)
        self.thread.start()

    def result(self) -> dict[str, Any]:
        return {
            "views": self.views, "snapshots": self.snapshot_times, "first_beat": self.first_beat,
            "errors": self.errors, "beats": self.beats, "beat_errors": self.beat_errors,
        }  # fmt: skip

    def run(self) -> None:
        store = EtcdStore([self.endpoint], prefix=self.prefix, timeout=30.0)
        record = GatewayRecord(id=f"sim-{self.n:05d}", addresses=(f"vsock://any:{self.n}",),
                               host=f"hv-{self.n:05d}")  # fmt: skip
        try:
            revision = store.snapshot().revision
            self.views.append((time.monotonic(), revision))
            # Spread the first beats over one period, as a fleet's gateways are.
            next_beat = time.monotonic() + self.spread
            while not self.stop.is_set():
                now = time.monotonic()
                if self.heartbeat and now >= next_beat:
                    next_beat = now + TTL / 3
                    try:
                        store.heartbeat(record, TTL)
                        self.beats += 1
                        self.first_beat = self.first_beat or time.monotonic()
                    except StoreError:
                        self.beat_errors += 1
                wait = min(1.0, max(0.01, next_beat - now)) if self.heartbeat else 1.0
                try:
                    seen = store.wait_for_change(revision, wait)
                    if seen <= revision:
                        continue
                    revision = self.catch_up(store, revision)
                except StoreError:
                    self.errors += 1
                    time.sleep(0.5)
                    continue
                self.views.append((time.monotonic(), revision))
        finally:
            store.close()

    def catch_up(self, store: EtcdStore, revision: int) -> int:
        """What StoreFollower does on a wake-up: past registry-only changes without a read;
        else a full snapshot (``snapshot`` mode) or the changes alone (``feed`` mode)."""
        try:
            changes = store.changes_since(revision)
        except Compacted:
            self.snapshot_times.append(time.monotonic())
            return store.snapshot().revision
        if not changes:
            return revision
        if self.mode == "feed" or all(c.kind in ("gateway", "token") for c in changes):
            return changes[-1].revision
        self.snapshot_times.append(time.monotonic())
        return store.snapshot().revision


def worker(indices: list[int], total: int, endpoint: str, prefix: str, mode: str,
           heartbeat: bool, stop: Any, results: Any) -> None:  # fmt: skip
    """One process of the simulated fleet: a thread per gateway until ``stop``; then each
    gateway's record, by index, into ``results``."""
    gateways = [SimGateway(n, endpoint, prefix, mode, heartbeat, stop,
                           spread=n / total * TTL / 3) for n in indices]  # fmt: skip
    for g in gateways:
        g.start()
    stop.wait()
    for g in gateways:
        if g.thread is not None:
            g.thread.join(30)
    results.put({g.n: g.result() for g in gateways})


def populate(store: EtcdStore, shares: int, rules: int, instances: int) -> ShareRecord:
    first: ShareRecord | None = None
    for s in range(shares):
        share = store.create_share(
            ShareRecord(name=f"share-{s:05d}", tenant=f"t{s % 50}", backend="posix:/srv/vol",
                        path=f"shares/s{s}", size_gib=10, status=ShareStatus.AVAILABLE)
        )  # fmt: skip
        first = first or share
        for r in range(rules):
            vm = f"vm-{(s * rules + r) % max(instances, 1)}"
            store.add_rule(RuleRecord(share_id=share.id, access_type="instance", access_to=vm))
    for i in range(instances):
        vm = Instance(uuid=f"vm-{i}", tenant=f"t{i % 50}", name=f"vm-{i}", cids=frozenset({3 + i}))
        store.put_instance(InstanceRecord(instance=vm))
    assert first is not None
    return first


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gateways", type=int, default=200)
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--shares", type=int, default=100)
    ap.add_argument("--rules", type=int, default=2, help="rules per share")
    ap.add_argument("--instances", type=int, default=500)
    ap.add_argument("--mode", choices=("snapshot", "feed"), default="feed")
    ap.add_argument("--no-heartbeat", action="store_true")
    ap.add_argument("--procs", type=int, default=2,
                    help="processes the simulated gateways are spread over (GIL)")  # fmt: skip
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle measurement")
    ap.add_argument("--etcd", help="HOST:PORT of an etcd to use (default: start one)")
    ap.add_argument("--etcd-pid", type=int, help="its PID, for CPU/RSS (with --etcd)")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()

    # Many threads each holding a socket and a watch stream: make room for their files.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (min(hard, max(soft, 8 * args.gateways + 256)), hard)
    )

    server = None
    if args.etcd:
        endpoint, etcd_pid = args.etcd, args.etcd_pid
    else:
        server = EtcdServer().__enter__()
        endpoint, etcd_pid = server.endpoint, server.pid
    prefix = f"/scale-{uuid.uuid4().hex[:8]}/"
    control = EtcdStore([endpoint], prefix=prefix, timeout=30.0)
    stop: Any = None
    procs: list[Any] = []
    report: dict[str, object] = {}
    try:
        t0 = time.monotonic()
        share = populate(control, args.shares, args.rules, args.instances)
        snap = control.snapshot()
        size = sum(len(x) for x in (snap.shares, snap.rules, snap.instances))
        print(f"store: {len(snap.shares)} shares, {len(snap.rules)} rules, "
              f"{len(snap.instances)} instances ({size} records) in "
              f"{time.monotonic() - t0:.1f} s", flush=True)  # fmt: skip

        ctx = multiprocessing.get_context("fork")
        stop = ctx.Event()
        results = ctx.Queue()
        slices = [list(range(args.gateways))[k :: args.procs] for k in range(args.procs)]
        procs = [
            ctx.Process(target=worker, args=(part, args.gateways, endpoint, prefix, args.mode,
                                             not args.no_heartbeat, stop, results))
            for part in slices if part
        ]  # fmt: skip
        started = time.monotonic()
        for p in procs:
            p.start()

        def fleet_cpu() -> float:
            return sum(proc_cpu(p.pid) for p in procs if p.pid is not None)

        def etcd_cpu() -> float:
            return proc_cpu(etcd_pid) if etcd_pid else float("nan")

        # Registration is a store write (a feed change that wakes every follower): measure
        # from when all are registered, the fleet's steady state.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not args.no_heartbeat:
            if len(control.list_gateways()) >= args.gateways:
                break
            time.sleep(0.5)
        registered_in = time.monotonic() - started
        print(f"{args.gateways} simulated gateways in {len(procs)} processes following "
              f"({args.mode}); all registered {registered_in:.1f} s after the start (first "
              f"beats spread over {TTL / 3:.1f} s)", flush=True)  # fmt: skip
        time.sleep(2.0 + args.gateways / 200)

        cpu0, mine0, w0 = etcd_cpu(), fleet_cpu(), time.monotonic()
        time.sleep(args.idle)
        idle_wall = time.monotonic() - w0
        idle_etcd = (etcd_cpu() - cpu0) / idle_wall
        idle_me = (fleet_cpu() - mine0) / idle_wall

        writes: list[tuple[float, int]] = []
        cpu0, mine0, changes_from = etcd_cpu(), fleet_cpu(), time.monotonic()
        for i in range(args.changes):
            at = time.monotonic()
            rule = control.add_rule(RuleRecord(share_id=share.id, access_type="ip",
                                               access_to=f"10.{i // 250}.{i % 250}.1"))  # fmt: skip
            writes.append((at, rule.revision))
            time.sleep(max(0.0, at + args.interval - time.monotonic()))
        time.sleep(3.0)  # let the last change arrive everywhere
        changes_to = time.monotonic()
        busy_wall = changes_to - changes_from
        busy_etcd = (etcd_cpu() - cpu0) / busy_wall
        busy_me = (fleet_cpu() - mine0) / busy_wall
        rss = proc_rss_mib(etcd_pid) if etcd_pid else float("nan")
        stop.set()
        fleet: dict[int, dict[str, Any]] = {}
        for _ in procs:
            fleet.update(results.get(timeout=120))
        for p in procs:
            p.join(30)

        delays: list[float] = []
        missing = 0
        for at, revision in writes:
            for g in fleet.values():
                arrived = next((t for t, r in g["views"] if r >= revision), None)
                if arrived is None:
                    missing += 1
                else:
                    delays.append(arrived - at)
        beats = sum(g["beats"] for g in fleet.values())
        snapshots = sum(changes_from <= t <= changes_to for g in fleet.values()
                        for t in g["snapshots"])  # fmt: skip
        report = {
            "gateways": args.gateways, "processes": len(procs), "mode": args.mode,
            "heartbeat": not args.no_heartbeat, "records": size, "changes": args.changes,
            "interval_s": args.interval,
            "propagation_p50_ms": round(statistics.median(delays) * 1000, 1) if delays else None,
            "propagation_p99_ms": round(percentile(delays, 0.99) * 1000, 1) if delays else None,
            "propagation_max_ms": round(max(delays) * 1000, 1) if delays else None,
            "not_arrived": missing, "store_errors": sum(g["errors"] for g in fleet.values()),
            "etcd_cpu_idle": round(idle_etcd, 3), "etcd_cpu_changes": round(busy_etcd, 3),
            "etcd_rss_mib": round(rss, 1), "fleet_cpu_idle": round(idle_me, 3),
            "fleet_cpu_changes": round(busy_me, 3), "heartbeats": beats,
            "heartbeat_errors": sum(g["beat_errors"] for g in fleet.values()),
            "registered_in_s": round(registered_in, 1),
            "snapshots_during_changes": snapshots,
        }  # fmt: skip
        print(f"propagation over {len(delays)} (change, gateway) pairs: "
              f"p50 {report['propagation_p50_ms']} ms, p99 {report['propagation_p99_ms']} ms, "
              f"max {report['propagation_max_ms']} ms; not arrived: {missing}")  # fmt: skip
        print(f"etcd: CPU {idle_etcd:.2f} cores idle (watches + heartbeats), "
              f"{busy_etcd:.2f} during changes; RSS {rss:.0f} MiB")  # fmt: skip
        print(f"the simulated fleet ({len(procs)} processes): CPU {idle_me:.2f} cores idle, "
              f"{busy_me:.2f} during changes; {beats} heartbeats "
              f"({report['heartbeat_errors']} failed); {snapshots} snapshots read")  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        if stop is not None:
            stop.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
        control.close()
        if server is not None:
            server.close()
    return 0 if report and report["not_arrived"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
