"""Instructions per syscall through the vshare FUSE mount, in each process (callgrind).

    .venv/bin/python benchmarks/instructions.py [--count 1000] [--calls chmod,getxattr]

Wall-clock time on a shared 2-CPU VM moves by ±15 % from run to run, and by 2.5× between
a quiet morning and a busy afternoon; instructions do not. For each call, the gateway and
then the FUSE client run under ``valgrind --tool=callgrind`` (the other one natively), a
warm-up of the call is made, the process's counters are zeroed (``callgrind_control -z``),
``--count`` calls are made, and the counters dumped (``-d``): the dump's total over the
count is that process's user-space instructions per call, kernel time not included.

- ``chmod``: one FUSE SETATTR with no file open, one Tsetattr (a round trip the caller
  waits for: tar's directory modes, chmod -R);
- ``getxattr``: security.capability, which the kernel asks at each chown and first write
  of a file and the client answers itself (ENODATA): a request with no round trip.

Needs root (FUSE), valgrind; the export is on tmpfs (``/dev/shm``) so that no disk is
measured. docs/benchmarks.md holds runs of it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from vshare.fuse import is_mounted
from vshare.testing.processes import stop


def _no_xattr(f: Path) -> None:
    with contextlib.suppress(OSError):
        os.getxattr(f, "security.capability")


CALLS: dict[str, Callable[[Path], None]] = {
    "chmod": lambda f: os.chmod(f, 0o644),
    "getxattr": _no_xattr,
}


def callgrind(out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]


@contextlib.contextmanager
def started(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        stop(proc, grace=30)


def until_ready(what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 300  # a Python under valgrind starts in a minute or so
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start (exit {proc.poll()})")
        time.sleep(0.2)


def counted(pid: int, out: Path, work: Callable[[], None]) -> int:
    """Instructions ``pid`` (under callgrind, writing ``out``) spent during ``work``."""
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    work()
    before = set(out.parent.glob(f"{out.name}.*"))
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    dumps = set(out.parent.glob(f"{out.name}.*")) - before
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump for pid {pid}")
    for line in max(dumps, key=lambda p: p.stat().st_mtime).read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError("no summary line in the callgrind dump")


def measure(tmp: Path, target: str, call: str, count: int, cache: str) -> float:
    """Instructions per ``call`` in ``target`` ("gateway" or "client")."""
    run = tmp / f"{target}-{call}"
    share = run / "vol" / "shares" / "bench"
    share.mkdir(parents=True)
    (share / "f").write_bytes(b"x")
    sock, mnt, grind = run / "gw.sock", run / "mnt", run / "callgrind.out"
    mnt.mkdir()
    (run / "gw.toml").write_text(
        f'listen = ["unix://{sock}"]\nbackend = "posix:{run / "vol"}"\n'
        f'[[share]]\nname = "bench"\npath = "shares/bench"\n'
        f'access = [{{ type = "user", to = "{os.getuid()}" }}]\n'
    )
    gw_argv = [sys.executable, "-m", "vshare", "gateway", "run", "--config", str(run / "gw.toml")]
    mount_argv = [sys.executable, "-m", "vshare.fuse", f"unix://{sock}", "bench", str(mnt),
                  "--cache", cache, "--foreground"]  # fmt: skip
    if target == "gateway":
        gw_argv = [*callgrind(grind), *gw_argv]
    else:
        mount_argv = [*callgrind(grind), *mount_argv]
    with started(gw_argv, run / "gateway.log") as gw:
        until_ready("the gateway", sock.exists, gw)
        with started(mount_argv, run / "mount.log") as client:
            try:
                until_ready("the mount", lambda: is_mounted(str(mnt)), client)
                f, fn = mnt / "f", CALLS[call]
                for _ in range(100):  # warm: caches, lazily made objects
                    fn(f)
                pid = gw.pid if target == "gateway" else client.pid

                def calls() -> None:
                    for _ in range(count):
                        fn(f)

                total = counted(pid, grind, calls)
            finally:
                subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, check=False)
    return total / count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1000, help="calls counted per case")
    ap.add_argument("--calls", default=",".join(CALLS), help="of: " + ", ".join(CALLS))
    ap.add_argument("--cache", default="auto", help="the FUSE client's --cache mode")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("instructions.py: needs root (FUSE mounts)", file=sys.stderr)
        return 2
    for tool in ("valgrind", "callgrind_control"):
        if subprocess.run(["which", tool], capture_output=True, check=False).returncode:
            print(f"instructions.py: {tool} is not installed (make bench installs it)",
                  file=sys.stderr)  # fmt: skip
            return 2
    calls = [c for c in args.calls.split(",") if c]
    print(f"instructions per call, --cache {args.cache}, {args.count:,} calls each "
          "(callgrind; user space only)")  # fmt: skip
    print(f"{'call':10} {'gateway':>12} {'FUSE client':>12}")
    with tempfile.TemporaryDirectory(prefix="vshare-instr-", dir="/dev/shm") as tmp:
        for call in calls:
            row = [
                measure(Path(tmp), t, call, args.count, args.cache) for t in ("gateway", "client")
            ]
            print(f"{call:10} {row[0]:>12,.0f} {row[1]:>12,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
