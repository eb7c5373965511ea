"""Codec benchmark: how fast vshare.protocol encodes and decodes (one core, no I/O).

    .venv/bin/python benchmarks/codec.py [--seconds 1.0] [--json]

Each case runs for ``--seconds`` of wall time after a warm-up and reports operations per
second and microseconds per operation. For payload-carrying replies the figure to compare
is "bytes/s" against a plain memory copy of the same size measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable

from vshare import protocol as p


def rate(fn: Callable[[], object], seconds: float) -> tuple[float, int]:
    """Calls per second of ``fn`` (batched so that the clock is read rarely)."""
    for _ in range(200):
        fn()
    n = 0
    batch = 100
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(batch):
            fn()
        n += batch
    return n / elapsed, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    t_getattr = p.Tgetattr(1, p.GETATTR_ALL)
    r_getattr = p.Rgetattr(p.GETATTR_BASIC, p.Qid(0, 0, 123456), 0o100644, 1000, 1000, 1,
                           0, 4096, 4096, 8, 1, 2, 3, 4, 5, 6, 0, 0, 0, 0)  # fmt: skip
    enc, dec, parts = p.encode, p.decode_frame, p.encode_parts

    def getattr_round_trip() -> None:
        dec(enc(1, t_getattr))
        dec(enc(1, r_getattr))

    results: list[dict[str, object]] = []

    def record(name: str, fn: Callable[[], object], nbytes: int = 0) -> None:
        ops, _ = rate(fn, args.seconds)
        row: dict[str, object] = {"case": name, "ops_per_s": ops, "us_per_op": 1e6 / ops}
        if nbytes:
            row["MiB_per_s"] = ops * nbytes / 2**20
        results.append(row)

    record("Tgetattr+Rgetattr round trip (enc+dec both)", getattr_round_trip)
    t_read = p.Tread(1, 0, 4096)
    record("Tread encode+decode", lambda: dec(enc(1, t_read)))
    for size, label in ((4096, "4 KiB"), (1 << 20, "1 MiB")):
        payload = memoryview(bytearray(size))
        msize = size + p.IOHDRSZ
        rread = p.Rread(payload)
        frame = enc(1, rread, msize)
        record(f"Rread {label}: encode_parts (zero-copy, for sendmsg)",
               lambda r=rread, m=msize: parts(1, r, m), size)  # fmt: skip
        record(f"Rread {label}: decode (payload is a view)",
               lambda f=frame, m=msize: dec(f, m), size)  # fmt: skip
        record(f"Rread {label}: encode to one bytes object (one copy)",
               lambda r=rread, m=msize: enc(1, r, m), size)  # fmt: skip
        record(f"memory copy of {label} (the yardstick)", lambda b=payload: bytes(b), size)
    entries = [p.Dirent(p.Qid(0, 0, i), i + 1, 8, f"file-{i:05d}.txt") for i in range(400)]

    def readdir_reply() -> None:
        data, _ = p.pack_dirents(entries, 8192)
        dec(enc(1, p.Rreaddir(data)))

    n_fit = p.pack_dirents(entries, 8192)[1]
    record(f"Rreaddir 8 KiB ({n_fit} entries): pack+encode+decode", readdir_reply)
    rd = enc(1, p.Rreaddir(p.pack_dirents(entries, 8192)[0]))
    record(f"Rreaddir 8 KiB: decode + unpack {n_fit} entries",
           lambda: p.unpack_dirents(dec(rd)[1][0]))  # type: ignore[index]  # fmt: skip

    machine = f"{platform.processor() or platform.machine()}, Python {sys.version.split()[0]}"
    if args.json:
        print(json.dumps({"machine": machine, "results": results}, indent=2))
        return
    print(f"vshare codec benchmark — {machine}, {args.seconds:g} s per case")
    print(f"{'case':<58} {'ops/s':>12} {'µs/op':>8} {'MiB/s':>9}")
    for row in results:
        mib = f"{row['MiB_per_s']:,.0f}" if "MiB_per_s" in row else ""
        print(f"{row['case']:<58} {row['ops_per_s']:>12,.0f} {row['us_per_op']:>8.2f} {mib:>9}")


if __name__ == "__main__":
    main()
