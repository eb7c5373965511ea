"""The other tenant, as a separate process: getattr after getattr over its own connection,
each timed, while an attacker does its worst.

    python -m tests.gateway.tenant URI SHARE

It attaches and prints ``ready``; then it sends a Tgetattr every 2 ms and times its round
trip until a line arrives on its stdin; then it prints the latencies (seconds) as one JSON
list and exits. A separate process, like a VM (and like ``attacker.py``): what it measures
is the gateway's doing, not the hops its own client would take on the gateway's event loop.
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
    while not select.select([sys.stdin], [], [], PAUSE)[0]:
        start = time.perf_counter()
        (reply,) = peer.pipeline([p.Tgetattr(1, p.GETATTR_BASIC)])
        latencies.append(time.perf_counter() - start)
        assert isinstance(reply, p.Rgetattr), reply
    print(json.dumps(latencies), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
