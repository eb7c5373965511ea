"""Soak: 100 well-behaved sessions while each attack of tests/gateway/attacker.py runs in turn.

    .venv/bin/python benchmarks/soak.py [--sessions 100] [--hold 5] [--json FILE]
        [--markdown FILE]

The gateway runs as its own process (``vshare gateway run``) on a POSIX volume in a
temporary directory. The well-behaved sessions (vshare.client, in this process) connect
over TCP from 127.0.0.1, one identity; each does, at a modest rate (one request every
~100 ms, ~1,000 requests/s in all), a mix of getattr, walk+clunk, a 4 KiB read and a
readdir. The attacker (``python -m tests.gateway.attacker``, a process of its own at nice
19) connects over the Unix socket, another identity (this uid). Every identity gets
``--per-identity`` session slots (the default, an eighth of the total, would refuse most of
the well-behaved sessions of one address); the attacker is bound by the same share.

For each phase (a baseline without attack, then each attack: made, then held ``--hold``
seconds) it records the well-behaved requests' latency p50/p99/max and errors, and the
gateway's peak RSS and fd count (sampled every 0.1 s), and its fd count once the attacker
has left.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from marked import write_marked
from vshare import protocol as p
from vshare.client import Client, open_client

ROOT = Path(__file__).resolve().parents[1]

#: (phase, attacker arguments after the URI); None: no attacker (the baseline).
PHASES: list[tuple[str, list[str] | None]] = [
    ("baseline", None),
    ("fids", ["fids", "1", "f"]),
    ("silent", ["silent", "300"]),
    ("partial", ["partial", "100", "100"]),
    ("unread", ["unread", "big", "400"]),
    ("locks", ["locks", "f", "20000", "1"]),
    ("dotdot", ["dotdot", "5000", "20", "3"]),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Tenants:
    """The well-behaved sessions: latencies and errors, kept per phase."""

    def __init__(self) -> None:
        self.phase = "setup"
        self.latencies: dict[str, list[float]] = {}
        self.errors: dict[str, int] = {}

    async def session(self, uri: str, seed: int) -> None:
        rng = random.Random(seed)
        async with open_client(uri, msize=65536 + 24) as c:
            root, _ = await c.attach("alpha")
            f = await self._walk(c, root, "small")
            await c.call(p.Tlopen(f, p.DOTL_RDONLY), p.Rlopen)
            d = await self._walk(c, root, "dir")
            await c.call(p.Tlopen(d, p.DOTL_RDONLY | p.DOTL_DIRECTORY), p.Rlopen)
            await anyio.sleep(rng.random() * 0.1)
            while True:
                kind = rng.randrange(4)
                start = time.perf_counter()
                phase = self.phase
                try:
                    if kind == 0:
                        await c.call(p.Tgetattr(f, p.GETATTR_BASIC), p.Rgetattr)
                    elif kind == 1:
                        await c.clunk(await self._walk(c, root, "dir", "small"))
                    elif kind == 2:
                        await c.call(p.Tread(f, 0, 4096), p.Rread)
                    else:
                        await c.call(p.Treaddir(d, 0, 8192), p.Rreaddir)
                except OSError:
                    self.errors[phase] = self.errors.get(phase, 0) + 1
                else:
                    self.latencies.setdefault(phase, []).append(time.perf_counter() - start)
                await anyio.sleep(0.05 + rng.random() * 0.1)

    @staticmethod
    async def _walk(c: Client, fid: int, *names: str) -> int:
        new = c.new_fid()
        await c.call(p.Twalk(fid, new, names), p.Rwalk)
        return new


async def attack(uri: str, args: list[str], hold: float) -> dict[str, Any]:
    """Run one attack: start the attacker, let it attack, hold ``hold`` s, let it go."""
    proc = await anyio.open_process(
        [sys.executable, "-m", "tests.gateway.attacker", args[0], uri, *args[1:]], cwd=ROOT,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    stdout = proc.stdout

    async def line() -> bytes:
        got = b""
        while not got.endswith(b"\n"):
            got += await stdout.receive()
        return got

    try:
        try:
            with anyio.fail_after(120):
                assert await line() == b"ready\n"  # its start (a fork of this process) is over
                await proc.stdin.send(b"go\n")
                result = await line()
        except anyio.EndOfStream:  # it died: its traceback is on stderr
            return {"attacker failed": await proc.wait()}
        await anyio.sleep(hold)
        await proc.stdin.aclose()
        with anyio.fail_after(30):
            await proc.wait()
        return dict(json.loads(result))
    finally:
        if proc.returncode is None:
            proc.kill()
            with anyio.CancelScope(shield=True):
                await proc.wait()


def flatten(top: Path) -> None:
    """Remove the attacker's chain of ``d`` directories without recursing."""
    spare = top.parent / (top.name + ".spare")
    while (top / "d").exists():
        os.rename(top / "d", spare)
        os.rmdir(top)
        os.rename(spare, top)
    os.rmdir(top)


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="vshare-soak-"))
    vol = tmp / "vol"
    share = vol / "shares" / "soak"
    (share / "dir").mkdir(parents=True)
    (share / "small").write_bytes(b"x" * 4096)
    (share / "f").write_bytes(b"shared")
    for i in range(50):
        (share / "dir" / f"entry{i:02d}").write_bytes(b"x" * 100)
    (share / "dir" / "small").write_bytes(b"x" * 100)
    with open(share / "big", "wb") as f:
        f.write(os.urandom(1 << 20) * 64)
    sock = tmp / "gw.sock"
    port = free_port()
    config = tmp / "gw.toml"
    config.write_text(
        f'listen = ["unix://{sock}", "tcp://127.0.0.1:{port}"]\nbackend = "posix:{vol}"\n'
        f"max_sessions_per_identity = {args.per_identity}\n"
        f'[[share]]\nname = "alpha"\npath = "shares/soak"\n'
        f'access = [{{ type = "user", to = "{os.getuid()}" }},'
        f' {{ type = "ip", to = "127.0.0.1/8" }}]\n'
    )
    vshare = Path(sys.executable).parent / "vshare"
    proc = subprocess.Popen(
        [str(vshare), "gateway", "run", "--config", str(config)], stderr=subprocess.DEVNULL
    )
    tenants = Tenants()
    rows: list[dict[str, Any]] = []
    try:
        while not sock.exists():
            await anyio.sleep(0.05)
        await anyio.sleep(0.3)
        uri = f"unix://{sock}"
        async with anyio.create_task_group() as tg:
            for i in range(args.sessions):
                tg.start_soon(tenants.session, f"tcp://127.0.0.1:{port}", i)
            await anyio.sleep(2)  # all connected, and settled
            for name, attacker_args in PHASES:
                if args.phase and name not in args.phase and name != "baseline":
                    continue
                tenants.phase = name
                peak = {"rss": rss_mib(proc.pid), "fds": fds(proc.pid)}
                fds_before = fds(proc.pid)

                async def sample(peak: dict[str, float] = peak) -> None:
                    while True:
                        peak["rss"] = max(peak["rss"], rss_mib(proc.pid))
                        peak["fds"] = max(peak["fds"], fds(proc.pid))
                        await anyio.sleep(0.1)

                started = time.monotonic()
                async with anyio.create_task_group() as stg:
                    stg.start_soon(sample)
                    if attacker_args is None:
                        await anyio.sleep(args.hold)
                        got: dict[str, Any] = {}
                    else:
                        got = await attack(uri, attacker_args, args.hold)
                    stg.cancel_scope.cancel()
                tenants.phase = "between"
                await anyio.sleep(1)  # the attacker's sessions end
                lat = tenants.latencies.get(name, [])
                rows.append({
                    "phase": name, "seconds": round(time.monotonic() - started, 1),
                    "requests": len(lat), "errors": tenants.errors.get(name, 0),
                    "p50_ms": percentile(lat, 0.5) * 1e3, "p99_ms": percentile(lat, 0.99) * 1e3,
                    "max_ms": max(lat, default=0.0) * 1e3, "rss_peak_mib": peak["rss"],
                    "fds_before": fds_before, "fds_peak": peak["fds"],
                    "fds_after": fds(proc.pid), "rss_after_mib": rss_mib(proc.pid),
                    "attacker": got,
                })  # fmt: skip
                print(row_line(rows[-1]), flush=True)
            tg.cancel_scope.cancel()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        with contextlib.suppress(OSError):
            flatten(share / "d")
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "sessions": args.sessions, "hold_s": args.hold, "per_identity": args.per_identity,
        "rows": rows,
    }  # fmt: skip


HEADER = ("phase", "s", "requests", "errors", "p50 ms", "p99 ms", "max ms", "RSS peak MiB",
          "fds before/peak/after")  # fmt: skip


def cells(r: dict[str, Any]) -> tuple[str, ...]:
    return (r["phase"], f"{r['seconds']:.0f}", str(r["requests"]), str(r["errors"]),
            f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['max_ms']:.1f}",
            f"{r['rss_peak_mib']:.0f}",
            f"{r['fds_before']}/{r['fds_peak']}/{r['fds_after']}")  # fmt: skip


def row_line(r: dict[str, Any]) -> str:
    return "  ".join(f"{c:>10}" for c in cells(r))


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"{report['sessions']} well-behaved sessions (TCP, one identity), each attack held "
        f"{report['hold_s']:g} s after it is made; {report['machine']}.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" for _ in HEADER) + "|",
    ]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in report["rows"]]
    lines += ["", "What each attacker got:", ""]
    lines += [
        f"- {r['phase']}: `{json.dumps(r['attacker'])}`" for r in report["rows"] if r["attacker"]
    ]
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, text: str) -> None:
    write_marked(path, text, "soak.py", "Soak: 100 sessions and each attack", append=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--hold", type=float, default=5.0, help="seconds each attack is held")
    ap.add_argument("--per-identity", type=int, default=128, help="session slots per identity")
    ap.add_argument("--phase", action="append", help="only these attacks (and the baseline)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()
    print("  ".join(f"{h:>10}" for h in HEADER))
    report = anyio.run(run, args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        write_markdown(args.markdown, markdown(report))
    else:
        print(markdown(report))


if __name__ == "__main__":
    main()
