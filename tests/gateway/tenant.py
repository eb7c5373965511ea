"""The other tenant, as a separate process: getattr after getattr over its own connection,
each timed, while an attacker does its worst.

    python -m tests.gateway.tenant URI SHARE

It attaches and prints ``ready``; then it sends a Tgetattr every 2 ms and times its round
trip. A line ``mark`` on its stdin ends the getattrs made alone (before the attack); the
line ``stop`` ends the rest. It prints both lists of latencies (seconds) as one JSON object,
``{"alone": [...], "beside": [...]}``, and exits. A separate process, like a VM (and like
``attacker.py``): what it measures is the gateway's doing, not the hops its own client would
take on the gateway's event loop.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time

from vshare import protocol as p

from .attacker import Peer

PAUSE = 0.002


def main(uri: str, share: str) -> None:
    try:  # woken first when its reply comes: the latency is the gateway's, not the CPU queue's
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except PermissionError:
        pass
    peer = Peer(uri)
    peer.attach(share=share)
    (clone,) = peer.pipeline([p.Twalk(0, 1, ())])
    assert isinstance(clone, p.Rwalk), clone
    print("ready", flush=True)
    latencies: list[float] = []
    alone: list[float] | None = None
    lines = b""
    while True:
        if select.select([sys.stdin], [], [], PAUSE)[0]:
            got = os.read(sys.stdin.fileno(), 64)
            lines += got
            if not got or b"stop\n" in lines:
                break  # (an empty read: the test has gone)
            if b"mark\n" in lines and alone is None:
                alone, latencies = latencies, []
            continue
        start = time.perf_counter()
        (reply,) = peer.pipeline([p.Tgetattr(1, p.GETATTR_BASIC)])
        latencies.append(time.perf_counter() - start)
        assert isinstance(reply, p.Rgetattr), reply
    print(json.dumps({"alone": alone or [], "beside": latencies}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
