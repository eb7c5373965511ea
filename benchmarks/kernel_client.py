"""The stock Linux 9P client (v9fs) in a QEMU guest: the vshare gateway against diod.

    .venv/bin/python benchmarks/kernel_client.py [--rounds 3] [--files 1000] [--quick]
        [--caches loose,none] [--json FILE] [--markdown FILE]
    .venv/bin/python benchmarks/kernel_client.py --from-json FILE [--markdown FILE]

One boot of the project's kernel-client guest (``tests/vm``: the Debian kernel's own 9P
modules and static busybox in an initramfs; TCG, one vCPU; nothing of vshare inside) runs
everything. On the host, a vshare gateway (``vshare gateway run``, POSIX backend, TCP on
loopback, its metrics on another port) and diod serve the same export directory; the guest
reaches both at 10.0.2.2 (QEMU user networking: the host's 127.0.0.1) with ``trans=tcp``,
the same ``msize`` for both (diod caps it at 65536), mounted with ``cache=loose`` and with
no cache option (``cache=none``). A tarball of a tree of small files (made here with
``tarfile``, 0–8 KiB each, in a few dozen directories) is fetched once into the guest's
tmpfs over HTTP from the host.

For each round, cache mode and system (the order of the two systems alternates from one
round and cache mode to the next), the guest mounts, then times with ``/proc/uptime``
(10 ms resolution), each after ``sync`` and dropping its own caches
(``/proc/sys/vm/drop_caches``):

- ``untar``: ``tar -xf`` of the tarball into the mount, then ``sync`` (busybox tar);
- ``stat``: ``find TREE -exec stat {} +`` (every entry);
- ``cat``: ``find TREE -type f -exec cat {} +`` (every file's data);
- ``rm``: ``rm -rf TREE``.

The guest prints a line before and after each workload; the host reads the CPU time of the
server under test (``/proc/PID/stat`` utime + stime, all threads) and, for the gateway, its
``vshare_requests_total``, at each. Under TCG the guest's CPU is the bottleneck, so the wall
times are mostly the guest's own work; the servers' CPU seconds say what each costs.
The host's page cache is not dropped (others may be measuring on this machine): both
servers read the same warm export.

The report: per workload and cache mode, the median (min–max) of the rounds for vshare and
diod, the ratio vshare ÷ diod (the target: ≤ 0.67), both servers' CPU time, and the
gateway's requests. Needs root (diod), QEMU, the Debian kernel, busybox-static, gcc and
diod: ``make bench`` installs them.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import io
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from cache import by_label, commit, scrape
from compare import fmt, machine
from systems import VSHARE, process
from vshare.testing.processes import free_port, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: tests.vm
from tests.vm.build_initramfs import MODULES, BuildError, Flavour, GuestImage, build, cache_root
from tests.vm.guest import boot, have_qemu

from marked import write_marked

WORKLOADS = ("untar", "stat", "cat", "rm")
CACHES = ("loose", "none")
SYSTEMS = ("vshare", "diod")
#: diod agrees to no more; both systems are mounted with it.
MSIZE = 65536
#: The project's target for the stock kernel client: vshare's time at most this × diod's.
TARGET = 0.67

#: The guest's /init. build_initramfs takes a flavour's /init as a file name next to it;
#: an absolute path replaces that directory (pathlib), so this is written to the VM cache
#: and named by its absolute path. The initramfs is cached by a hash of its content.
INIT = r"""#!/bin/sh
# /init of benchmarks/kernel_client.py's guest: mount the vshare gateway and diod on the
# host through v9fs and time the same workloads on each. Lines for the host:
#   BEGIN SYS CACHE WORKLOAD ROUND       just before a workload starts (after the cache drop)
#   END SYS CACHE WORKLOAD ROUND RC SECONDS
#   FAIL text                            something did not work (the run goes on)
#   DONE                                 then poweroff -f
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
arg() { sed -n "s/.*\\bvshare\\.$1=\\([^ ]*\\).*/\\1/p" /proc/cmdline; }
now() { cut -d' ' -f1 /proc/uptime; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
for m in $(cat /lib/modules/load.order); do
  insmod "/lib/modules/$m.ko" || echo "FAIL insmod $m"
done
ip link set lo up && ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 &&
  ip route add default via 10.0.2.2 || echo "FAIL network"
HOST=10.0.2.2
ROUNDS=$(arg rounds)
CACHES=$(arg caches | tr , ' ')
echo "GUEST $(uname -r) $(busybox | head -n 1)"
wget -q -O /tmp/tree.tar "http://$HOST:$(arg http_port)/tree.tar" || echo "FAIL wget of the tarball"
echo "TARBALL $(wc -c < /tmp/tree.tar)"

step() {  # SYS CACHE NAME ROUND COMMAND...
  s=$1 c=$2 w=$3 r=$4; shift 4
  sync; echo 3 > /proc/sys/vm/drop_caches
  echo "BEGIN $s $c $w $r"
  t0=$(now)
  "$@" > /tmp/out 2>&1; rc=$?
  echo "END $s $c $w $r $rc $(elapsed "$t0")"
  [ $rc = 0 ] && return
  echo "FAIL $s $c $w round $r: exit $rc"; tail -n 5 /tmp/out | sed 's/^/FAIL   /'
}
w_untar() { tar -xf /tmp/tree.tar -C "$1" && sync; }
w_stat() { find "$1/tree" -exec stat {} + > /dev/null; }
w_cat() { find "$1/tree" -type f -exec cat {} + > /dev/null; }
w_rm() { rm -rf "$1/tree"; }

r=0; i=0
mkdir -p /mnt/s
while [ $r -lt "$ROUNDS" ]; do
  for c in $CACHES; do
    if [ $((i % 2)) = 0 ]; then order="vshare diod"; else order="diod vshare"; fi
    i=$((i + 1))
    for s in $order; do
      if [ $s = vshare ]; then o="port=$(arg gw_port),aname=bench"
      else o="port=$(arg diod_port),aname=$(arg diod_aname)"; fi
      o="trans=tcp,version=9p2000.L,msize=$(arg msize),$o"
      [ $c = none ] || o="$o,cache=$c"
      if ! mount -t 9p -o "$o" $HOST /mnt/s 2> /tmp/err; then
        echo "FAIL mount $s $o: $(tail -n 1 /tmp/err)"; dmesg | tail -n 3 | sed 's/^/FAIL   /'
        continue
      fi
      D=/mnt/s/$s-$c-$r
      mkdir "$D" || echo "FAIL mkdir $D"
      for w in untar stat cat rm; do step $s $c $w $r w_$w "$D"; done
      rmdir "$D"
      umount /mnt/s || echo "FAIL umount $s"
    done
  done
  r=$((r + 1))
done
echo DONE
poweroff -f
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- the host side -----------------------------------------------------------------------


def make_tarball(path: Path, files: int, seed: int = 1, *, interleaved: bool = False) -> int:
    """A tar of ``tree/dNN/fNNNN`` (50 files a directory, 0–8 KiB of random bytes each);
    the number of entries (files and directories). Each directory's files together, as
    ``tar c`` of a tree writes them; ``interleaved``: file n in directory n % dirs (every
    directory gets a file every ``dirs`` files, which no archiver writes, and which makes
    a client that knows a directory it made whole for a second forget it mid-run)."""
    rng = random.Random(seed)
    dirs = max(1, files // 50)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:

        def add(name: str, data: bytes | None) -> None:
            info = tarfile.TarInfo(name)
            info.mtime, info.uname, info.gname = 1_700_000_000, "root", "root"
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))

        add("tree", None)
        if interleaved:
            for d in range(dirs):
                add(f"tree/d{d:02d}", None)
            for n in range(files):
                add(f"tree/d{n % dirs:02d}/f{n:04d}", rng.randbytes(rng.randint(0, 8192)))
        else:
            for d in range(dirs):
                add(f"tree/d{d:02d}", None)
                for n in range(d, files, dirs):  # the same names as interleaved
                    add(f"tree/d{d:02d}/f{n:04d}", rng.randbytes(rng.randint(0, 8192)))
    return 1 + dirs + files


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


@contextlib.contextmanager
def http_server(directory: Path) -> Iterator[int]:
    """Serve ``directory`` on a free loopback port (the guest fetches the tarball here)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Servers:
    gw_pid: int
    gw_port: int
    metrics_port: int
    diod_pid: int
    diod_port: int
    export: Path


@contextlib.contextmanager
def servers(root: Path) -> Iterator[Servers]:
    """A vshare gateway and diod serving ``root/volume/export`` on loopback TCP."""
    volume = root / "volume"
    export = volume / "export"
    export.mkdir(parents=True)
    gw_port, metrics_port, diod_port = free_port(), free_port(), free_port()
    config = root / "gateway.toml"
    config.write_text(
        f'listen = ["tcp://127.0.0.1:{gw_port}"]\nbackend = "posix:{volume}"\n'
        f'metrics = "127.0.0.1:{metrics_port}"\nmsize = {MSIZE}\n'
        '[[share]]\nname = "bench"\npath = "export"\n'
        'access = [{ type = "ip", to = "127.0.0.1/32", level = "rw" }]\n'
    )
    gw_argv = [VSHARE, "gateway", "run", "--config", str(config)]
    diod_argv = ["diod", "-f", "-n", "-l", f"127.0.0.1:{diod_port}", "-e", str(export),
                 "-c", "/dev/null", "-L", str(root / "diod.log")]  # fmt: skip
    with (
        process(gw_argv, root / "gateway.log") as gw,
        process(diod_argv, root / "diod.out") as diod,
    ):
        for proc, port, name in ((gw, gw_port, "vshare gateway"), (diod, diod_port, "diod")):
            up = functools.partial(lambda p, n: accepts(n) or p.poll() is not None, proc, port)
            wait_for(up, 30, name)
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited; see its log in {root}")
        yield Servers(gw.pid, gw_port, metrics_port, diod.pid, diod_port, export)


@dataclass
class Sample:
    seconds: float  # in the guest
    cpu: float  # the server under test
    other_cpu: float  # the other server, idle meanwhile (noise)
    requests: float | None  # the gateway's, when it is the one under test
    rc: int
    ops: dict[str, float] = field(default_factory=dict)  # the gateway's requests by op


@dataclass
class Run:
    samples: dict[str, list[Sample]] = field(default_factory=dict)  # "sys cache workload"
    failures: list[str] = field(default_factory=list)
    guest: str = ""
    seconds: float = 0.0


class Watcher:
    """Reads the guest's console: counters at each BEGIN and END line."""

    def __init__(self, srv: Servers, run: Run) -> None:
        self.srv = srv
        self.run = run
        self.open: dict[str, tuple[float, float, dict[str, float]]] = {}

    def counters(self, system: str) -> tuple[float, float, dict[str, float]]:
        gw, diod = cpu_seconds(self.srv.gw_pid), cpu_seconds(self.srv.diod_pid)
        mine, other = (gw, diod) if system == "vshare" else (diod, gw)
        ops: dict[str, float] = {}
        if system == "vshare":
            ops = by_label(scrape(self.srv.metrics_port), "vshare_requests_total", "op")
        return mine, other, ops

    async def __call__(self, line: str) -> None:
        words = line.split()
        if not words:
            return
        if words[0] == "BEGIN" and len(words) == 5:
            self.open[" ".join(words[1:4])] = self.counters(words[1])
        elif words[0] == "END" and len(words) == 7:
            key = " ".join(words[1:4])
            before = self.open.pop(key, None)
            if before is None:
                return
            after = self.counters(words[1])
            ops = {op: n - before[2].get(op, 0.0) for op, n in after[2].items()}
            ops = {op: n for op, n in sorted(ops.items(), key=lambda kv: -kv[1]) if n}
            sample = Sample(
                seconds=float(words[6]),
                cpu=after[0] - before[0],
                other_cpu=after[1] - before[1],
                requests=sum(ops.values()) if words[1] == "vshare" else None,
                rc=int(words[5]),
                ops=ops,
            )
            self.run.samples.setdefault(key, []).append(sample)
            log(f"round {words[4]}: {key:<20} {sample.seconds:7.2f} s, server CPU "
                f"{sample.cpu:6.2f} s" + (f", {sample.requests:,.0f} requests"
                                          if sample.requests is not None else ""))  # fmt: skip
        elif words[0] in ("FAIL", "GUEST", "TARBALL"):
            log(f"guest: {line}")
            if words[0] == "FAIL":
                self.run.failures.append(line)
            elif words[0] == "GUEST":
                self.run.guest = " ".join(words[1:])


def guest_image() -> GuestImage:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    init = root / "bench-kernel-client-init.sh"
    if not init.exists() or init.read_text() != INIT:
        init.write_text(INIT)
    return build(flavour=Flavour("bench-kernel-client", str(init), MODULES))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    image = guest_image()
    started = time.time()
    at_start = {"commit": commit(), "source": source()}  # others commit meanwhile
    run = Run()
    with tempfile.TemporaryDirectory(prefix="vshare-kclient-", dir=args.workdir) as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # diod serves the guest's first attach (uname nobody) as nobody
        (root / "www").mkdir()
        entries = make_tarball(root / "www" / "tree.tar", args.files)
        tar_bytes = (root / "www" / "tree.tar").stat().st_size
        log(f"tarball: {args.files} files, {entries} entries, {tar_bytes / 2**20:.1f} MiB")
        with servers(root) as srv, http_server(root / "www") as http_port:
            boot_params = {
                "gw_port": srv.gw_port, "diod_port": srv.diod_port, "diod_aname": srv.export,
                "http_port": http_port, "msize": MSIZE, "rounds": args.rounds,
                "caches": ",".join(args.caches),
            }  # fmt: skip
            log(f"booting the guest (TCG): {args.rounds} rounds × {len(args.caches)} cache "
                f"modes × 2 systems × {len(WORKLOADS)} workloads")  # fmt: skip
            watcher = Watcher(srv, run)
            guest = anyio.run(functools.partial(boot, image, boot_params, watcher, args.timeout))
            run.seconds = guest.seconds
            if guest.timed_out:
                run.failures.append(f"the guest did not finish in {args.timeout:g} s")
            elif not guest.done:
                run.failures.append(f"the guest stopped before DONE: {guest.console(20)}")
            for name in ("gateway.log", "diod.log", "diod.out") if run.failures else ():
                with contextlib.suppress(OSError):
                    for line in (root / name).read_text().splitlines()[-5:]:
                        log(f"{name}: {line}")
            left = sorted(p.name for p in srv.export.iterdir())
            if left:
                run.failures.append(f"left in the export: {left[:5]}")
    params = {"rounds": args.rounds, "files": args.files, "entries": entries,
              "tar_bytes": tar_bytes, "msize": MSIZE, "caches": args.caches}  # fmt: skip
    return {
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
        "seconds": time.time() - started,
        "command": " ".join(["python", "benchmarks/kernel_client.py", *sys.argv[1:]]),
        **at_start,
        "machine": machine(),
        "load": os.getloadavg(),
        "guest": run.guest,
        "guest_seconds": run.seconds,
        "diod": diod_version(),
        "params": params,
        "failures": run.failures,
        "samples": {k: [vars(s) for s in v] for k, v in run.samples.items()},
    }


def source() -> str:
    """Which vshare this run measured: the checkout (and its uncommitted files under src/:
    the FUSE client is being rewritten), or where else it was imported from (``PYTHONPATH``
    on an export of another commit)."""
    import vshare

    found = Path(vshare.__file__).resolve().parents[1]
    if found != Path(__file__).resolve().parents[1] / "src":
        return f"vshare imported from {found}"
    done = subprocess.run(["git", "status", "--porcelain", "--", "src"], capture_output=True,
                          text=True, check=False, cwd=Path(__file__).parent)  # fmt: skip
    changed = [line[3:] for line in done.stdout.splitlines()]
    return f"uncommitted: {', '.join(changed)}" if changed else "the checkout"


def diod_version() -> str:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "diod"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    return done.stdout.strip() or "?"


# --- the report --------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    if not values:
        return "—"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}–{fmt(max(values))})"


def summarize(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    samples: dict[str, list[dict[str, Any]]] = report["samples"]
    for cache in report["params"]["caches"]:
        for workload in WORKLOADS:
            row: dict[str, Any] = {"cache": cache, "workload": workload}
            for system in SYSTEMS:
                got = [s for s in samples.get(f"{system} {cache} {workload}", []) if s["rc"] == 0]
                row[system] = {
                    "seconds": [s["seconds"] for s in got],
                    "cpu": [s["cpu"] for s in got],
                    "requests": [s["requests"] for s in got if s["requests"] is not None],
                }
            v, d = row["vshare"]["seconds"], row["diod"]["seconds"]
            row["ratio"] = statistics.median(v) / statistics.median(d) if v and d else None
            vc, dc = row["vshare"]["cpu"], row["diod"]["cpu"]
            row["cpu_ratio"] = (statistics.median(vc) / statistics.median(dc)
                                if vc and dc and statistics.median(dc) > 0 else None)  # fmt: skip
            rows.append(row)
    return rows


def markdown(report: dict[str, Any]) -> str:
    p = report["params"]
    where = report.get("source", "the checkout")
    lines = [
        f"Run of {report['date']} (commit {report['commit']}"
        + (f"; {where}" if where != "the checkout" else "")
        + f"): {p['rounds']} round(s), "
        f"{p['files']:,} files ({p['entries']:,} entries, {p['tar_bytes'] / 2**20:.1f} MiB), "
        f"msize {p['msize']:,}, trans=tcp to 10.0.2.2 (QEMU user networking). Guest: Linux "
        f"{report['guest'].split(' (')[0] or '?'}, TCG, 1 vCPU; diod {report['diod']}. Host: "
        f"{report['machine']}; load average at the end {report['load'][0]:.2f}.",
        "",
        "Seconds in the guest, median (min–max) of the rounds; server CPU seconds (utime + "
        "stime of the gateway or diod during the workload); the gateway's 9P requests. "
        f"Target: vshare ÷ diod ≤ {TARGET} (time).",
        "",
        "| cache | workload | vshare s | diod s | vshare ÷ diod | vshare CPU s | diod CPU s "
        "| CPU ÷ | gateway requests | |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in summarize(report):
        v, d = row["vshare"], row["diod"]
        ratio = row["ratio"]
        verdict = "—" if ratio is None else ("met" if ratio <= TARGET else "missed")
        cpu_ratio = row["cpu_ratio"]
        reqs = f"{statistics.median(v['requests']):,.0f}" if v["requests"] else "—"
        lines.append(
            f"| {row['cache']} | {row['workload']} | {spread(v['seconds'])} "
            f"| {spread(d['seconds'])} | {'—' if ratio is None else f'{ratio:.2f}'} "
            f"| {spread(v['cpu'])} | {spread(d['cpu'])} "
            f"| {'—' if cpu_ratio is None else f'{cpu_ratio:.2f}'} | {reqs} | {verdict} |"
        )
    lines += ["", f"The gateway's 9P requests per entry of the tree ({p['entries']:,} entries), "
              "by operation (the first round):", "",
              "| cache | workload | requests per entry | by op |",
              "|---|---|---:|---|"]  # fmt: skip
    for cache in p["caches"]:
        for workload in WORKLOADS:
            got = report["samples"].get(f"vshare {cache} {workload}")
            if not got:
                continue
            ops: dict[str, float] = got[0].get("ops", {})
            shown = ", ".join(f"{op} {n / p['entries']:.2f}" for op, n in ops.items())
            lines.append(f"| {cache} | {workload} | {sum(ops.values()) / p['entries']:.2f} "
                         f"| {shown} |")  # fmt: skip
    if report["failures"]:
        lines += ["", "Failures:", ""] + [f"- `{f}`" for f in report["failures"][:20]]
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, text: str) -> None:
    write_marked(path, text, "kernel_client.py", "The stock kernel 9P client: vshare and diod")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--files", type=int, default=1000, help="small files in the tree")
    ap.add_argument("--caches", default=",".join(CACHES), help="comma-separated: loose,none")
    ap.add_argument("--quick", action="store_true", help="1 round, 200 files: a smoke run")
    ap.add_argument("--timeout", type=float, help="seconds the guest may run (default: scaled)")
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
            print(f"kernel_client.py: {args.from_json}: not a saved run ({exc!r})", file=sys.stderr)
            return 2
    else:
        args.caches = [c for c in args.caches.split(",") if c]
        if not set(args.caches) <= set(CACHES) or not args.caches:
            print("kernel_client.py: --caches takes loose,none", file=sys.stderr)
            return 2
        if args.quick:
            args.rounds, args.files = 1, 200
        if args.timeout is None:
            args.timeout = 300 + args.rounds * len(args.caches) * args.files * 0.6
        if os.geteuid() != 0:
            print("kernel_client.py: needs root (diod)", file=sys.stderr)
            return 2
        if shutil.which("diod") is None or not have_qemu():
            print("kernel_client.py: diod or QEMU is missing (make bench installs them)",
                  file=sys.stderr)  # fmt: skip
            return 2
        report = measure(args)
        text = markdown(report)
    print(text)
    if args.json and not args.from_json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        write_markdown(args.markdown, text)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BuildError, RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
        print(f"kernel_client.py: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
