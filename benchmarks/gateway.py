"""Gateway benchmark: ops/s, µs/op and gateway CPU per op, through a Unix socket.

    .venv/bin/python benchmarks/gateway.py [--seconds 2] [--sessions 1000] [--json]

The gateway runs as its own process (``vshare gateway run``) on a POSIX volume in a
temporary directory; the client (vshare.client) runs here. "CPU µs/op" is the gateway
process's user+system time divided by the operations done (from /proc/PID/stat), so the
client's own cost is not counted. Then RSS at start and with ``--sessions`` idle sessions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from vshare import protocol as p
from vshare.client import Client, open_client

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def walk(c: Client, fid: int, *names: str) -> int:
    new = c.new_fid()
    await c.rpc(p.Twalk(fid, new, names))
    return new


Op = Callable[[], Awaitable[object]]
MakeOp = Callable[[Client, int], Awaitable[Op]]


async def measure(
    name: str, make_op: MakeOp, uri: str, pid: int, inflight: int, seconds: float, nbytes: int = 0
) -> dict[str, object]:
    async with open_client(uri, msize=1024 * 1024 + 24) as c:
        root, _ = await c.attach("bench")
        ops = [await make_op(c, root) for _ in range(inflight)]
        count = 0
        deadline = 0.0

        async def worker(op: Callable[[], Awaitable[object]]) -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                await op()
                count += 1

        deadline = time.perf_counter() + 0.3  # warm-up
        async with anyio.create_task_group() as tg:
            for op in ops:
                tg.start_soon(worker, op)
        count = 0
        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        deadline = t0 + seconds
        async with anyio.create_task_group() as tg:
            for op in ops:
                tg.start_soon(worker, op)
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    row: dict[str, object] = {
        "case": name, "inflight": inflight, "ops_per_s": count / elapsed,
        "us_per_op": elapsed / count * 1e6 * inflight, "gateway_cpu_us_per_op": cpu / count * 1e6,
    }  # fmt: skip
    if nbytes:
        row["MiB_per_s"] = count * nbytes / elapsed / 2**20
    return row


async def op_getattr(c: Client, root: int) -> Callable[[], Awaitable[object]]:
    fid = await walk(c, root, "small")
    return lambda: c.rpc(p.Tgetattr(fid, p.GETATTR_BASIC))


async def op_walk_clunk(c: Client, root: int) -> Callable[[], Awaitable[object]]:
    async def op() -> None:
        fid = await walk(c, root, "dir", "small")
        await c.clunk(fid)

    return op


def op_read(size: int) -> Callable[[Client, int], Awaitable[Callable[[], Awaitable[object]]]]:
    async def make(c: Client, root: int) -> Callable[[], Awaitable[object]]:
        fid = await walk(c, root, "big")
        await c.rpc(p.Tlopen(fid, p.DOTL_RDONLY))
        limit = (64 << 20) // size

        state = {"i": 0}

        async def op() -> None:
            state["i"] = (state["i"] + 1) % limit
            await c.rpc(p.Tread(fid, state["i"] * size, size))

        return op

    return make


async def op_create_unlink(c: Client, root: int) -> Callable[[], Awaitable[object]]:
    name = f"f{id(c)}-{os.urandom(4).hex()}"

    async def op() -> None:
        fid = await walk(c, root)
        await c.rpc(p.Tlcreate(fid, name, p.DOTL_RDWR, 0o644, 0))
        await c.clunk(fid)
        await c.rpc(p.Tunlinkat(root, name, 0))

    return op


async def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="vshare-bench-") as tmp:
        vol = Path(tmp) / "vol"
        share = vol / "shares" / "bench"
        (share / "dir").mkdir(parents=True)
        (share / "small").write_bytes(b"x" * 100)
        (share / "dir" / "small").write_bytes(b"x" * 100)
        with open(share / "big", "wb") as f:
            f.write(os.urandom(1 << 20) * 64)  # 64 MiB, warm in the page cache
        sock = Path(tmp) / "gw.sock"
        config = Path(tmp) / "gw.toml"
        config.write_text(
            f'listen = ["unix://{sock}"]\nbackend = "posix:{vol}"\nmsize = {1024 * 1024 + 24}\n'
            f"max_sessions = {args.sessions + 10}\n"
            f'inline_metadata = "{args.inline_metadata}"\n'
            # every session here is one identity (this uid): lift its share of the slots
            f"max_sessions_per_identity = {args.sessions + 10}\n"
            f'[[share]]\nname = "bench"\npath = "shares/bench"\n'
            f'access = [{{ type = "user", to = "{os.getuid()}" }}]\n'
        )
        vshare = Path(sys.executable).parent / "vshare"
        command = [str(vshare), "gateway", "run", "--config", str(config)]
        if args.profile:  # sample the gateway with py-spy; the report is written at exit
            py_spy = Path(sys.executable).parent / "py-spy"
            command = [str(py_spy), "record", "--format", args.profile_format, "-o", args.profile,
                       "--rate", "250", "--nonblocking", "--", *command]  # fmt: skip
        log = open(args.gateway_log, "w") if args.gateway_log else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(command, stderr=log)
        try:
            while not sock.exists():
                await anyio.sleep(0.05)
            await anyio.sleep(0.2)
            rss_start = rss_kib(proc.pid)
            uri = f"unix://{sock}"
            rows = []
            cases = [("getattr", op_getattr, 0), ("walk+clunk", op_walk_clunk, 0),
                     ("read 4 KiB", op_read(4096), 4096), ("read 1 MiB", op_read(1 << 20), 1 << 20),
                     ("create+unlink", op_create_unlink, 0)]  # fmt: skip
            for name, make, nbytes in cases:
                if args.case and name not in args.case:
                    continue
                for inflight in args.inflight or (1, 16):
                    rows.append(
                        await measure(name, make, uri, proc.pid, inflight, args.seconds, nbytes)
                    )
            # idle sessions: version + attach, then hold
            if not args.sessions:
                args.sessions = 1  # keep the arithmetic below honest
            rss_before = rss_kib(proc.pid)
            async with anyio.create_task_group() as tg:
                ready = anyio.Event()
                held = 0

                async def hold() -> None:
                    nonlocal held
                    async with open_client(uri, msize=65536) as c:
                        await c.attach("bench")
                        held += 1
                        if held == args.sessions:
                            ready.set()
                        await anyio.sleep_forever()

                for _ in range(args.sessions):
                    tg.start_soon(hold)
                await ready.wait()
                await anyio.sleep(0.5)
                rss_held = rss_kib(proc.pid)
                tg.cancel_scope.cancel()
        finally:
            # py-spy writes its report on SIGINT (and stops the gateway with it)
            proc.send_signal(signal.SIGINT if args.profile else signal.SIGTERM)
            proc.wait(30)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "results": rows,
        "rss_start_kib": rss_start,
        "idle_sessions": args.sessions,
        "rss_per_idle_session_kib": (rss_held - rss_before) / args.sessions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--case", action="append", help="only this case (repeatable)")
    parser.add_argument("--inflight", type=int, action="append", help="only this depth")
    parser.add_argument("--profile", metavar="FILE", help="record the gateway with py-spy")
    parser.add_argument("--gateway-log", metavar="FILE", help="the gateway's log (stderr)")
    parser.add_argument("--profile-format", default="speedscope", help="py-spy output format")
    parser.add_argument(
        "--inline-metadata", default="auto", choices=("auto", "always", "never"),
        help="the gateway's inline_metadata: 'never' sends every metadata request through "
        "a task and a worker thread, the path every request takes on GlusterFS",
    )  # fmt: skip
    args = parser.parse_args()
    out = anyio.run(run, args)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"vshare gateway benchmark — {out['machine']}, {args.seconds:g} s per case, Unix socket")
    print(
        f"{'case':<16} {'in flight':>9} {'ops/s':>10} {'µs/op':>8} {'gw CPU µs/op':>13}"
        f" {'MiB/s':>8}"
    )
    for r in out["results"]:  # type: ignore[attr-defined]
        mib = f"{r['MiB_per_s']:,.0f}" if "MiB_per_s" in r else ""
        print(f"{r['case']:<16} {r['inflight']:>9} {r['ops_per_s']:>10,.0f} {r['us_per_op']:>8.1f} "
              f"{r['gateway_cpu_us_per_op']:>13.1f} {mib:>8}")  # fmt: skip
    print(
        f"gateway RSS at start: {out['rss_start_kib'] / 1024:.1f} MiB; "
        f"per idle session ({out['idle_sessions']} held): {out['rss_per_idle_session_kib']:.1f} KiB"
    )


if __name__ == "__main__":
    main()
