"""A hostile tenant, as a separate process: raw 9P over blocking sockets.

    python -m tests.gateway.attacker ATTACK URI [ARG...]

It prints ``ready`` once started and waits for a line on its stdin (so that its start, a
fork of the test process and its imports, is over before anyone measures), makes its
attack, prints one JSON line saying what it got, then holds everything it made
(connections, fids, locks) until its stdin closes, and exits (closing it all). A separate
process, like a VM: its own work never runs on the gateway's event loop, so what the other
tenant measures there is the gateway's doing.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from vshare import protocol as p

MSIZE = 1 << 20


class Peer:
    """One connection: frames sent in batches, replies decoded by tag."""

    def __init__(self, uri: str, *, version: bool = True) -> None:
        if uri.startswith("tcp://"):
            host, _, port = uri[len("tcp://") :].rpartition(":")
            self.sock = socket.create_connection((host, int(port)))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            assert uri.startswith("unix://"), uri
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(uri[len("unix://") :])
        self.decoder = p.FrameDecoder(accept="R")
        self.next_tag = 1
        if version:
            (reply,) = self.pipeline([p.Tversion(MSIZE, "9P2000.L")], tag=p.NOTAG)
            assert isinstance(reply, p.Rversion), reply

    def send(self, msgs: Sequence[p.Message], tag: int | None = None) -> list[int]:
        tags = []
        frames = []
        for msg in msgs:
            t = tag if tag is not None else self.next_tag
            self.next_tag = self.next_tag % 0xFFFE + 1
            tags.append(t)
            frames.append(p.encode(t, msg))
        self.sock.sendall(b"".join(frames))
        return tags

    def pipeline(self, msgs: Sequence[p.Message], tag: int | None = None) -> list[p.Message]:
        tags = self.send(msgs, tag)
        got: dict[int, p.Message] = {}
        while len(got) < len(set(tags)):
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the gateway closed the connection")
            self.decoder.feed(data)
            got.update(self.decoder)
        return [got[t] for t in tags]

    def attach(self, fid: int = 0, share: str = "alpha") -> None:
        (reply,) = self.pipeline([p.Tattach(fid, p.NOFID, "", share, p.NOFID)])
        assert isinstance(reply, p.Rattach), reply


def ecode(reply: p.Message) -> int:
    return reply.ecode if isinstance(reply, p.Rlerror) else 0


def fids(uri: str, sessions: str, name: str) -> tuple[list[Peer], dict[str, Any]]:
    """In each of ``sessions`` sessions, walk to ``name`` and open it, again and again
    (each open holds an fd), until EMFILE."""
    peers = []
    made = []
    errors = set()
    for _ in range(int(sessions)):
        peer = Peer(uri)
        peer.attach()
        peers.append(peer)
        count = 0
        number = 1
        while True:
            batch: list[p.Message] = []
            for n in range(number, number + 100):
                batch += [p.Twalk(0, n, (name,)), p.Tlopen(n, p.DOTL_RDONLY)]
            number += 100
            replies = peer.pipeline(batch)
            count += sum(isinstance(r, p.Rlopen) for r in replies)
            failed = {ecode(r) for r in replies[::2] if ecode(r)}  # of the walks
            if failed:
                errors |= failed
                break
        made.append(count)
    return peers, {"fids": made, "errors": sorted(errors)}


def silent(uri: str, count: str) -> tuple[list[Peer], dict[str, Any]]:
    """Open ``count`` connections and send nothing on them; how many the gateway closed
    at once."""
    peers = [Peer(uri, version=False) for _ in range(int(count))]
    time.sleep(0.3)
    closed = 0
    for peer in peers:
        peer.sock.setblocking(False)
        try:
            closed += peer.sock.recv(1) == b""
        except BlockingIOError:
            pass
        except ConnectionError:
            closed += 1
    return peers, {"closed_at_once": closed}


def partial(uri: str, count: str, sent: str) -> tuple[list[Peer], dict[str, Any]]:
    """In each of ``count`` sessions (attached), a Twrite frame that says 1 MiB, of which
    only ``sent`` bytes are sent."""
    peers = []
    for _ in range(int(count)):
        peer = Peer(uri)
        peer.attach()
        head = struct.pack("<IBH", MSIZE, 118, 1)  # Twrite, tag 1
        peer.sock.settimeout(0.1)  # what the socket takes: the gateway may stop reading it
        try:
            peer.sock.sendall(head + b"x" * (int(sent) - len(head)))
        except TimeoutError:
            pass
        peers.append(peer)
    return peers, {"sessions": len(peers)}


def unread(uri: str, name: str, count: str) -> tuple[list[Peer], dict[str, Any]]:
    """Open ``name`` and send ``count`` Treads of 1 MiB (at offsets across the file) in
    one go, never reading the replies."""
    peer = Peer(uri)
    peer.attach()
    walk, lopen = peer.pipeline([p.Twalk(0, 1, (name,)), p.Tlopen(1, p.DOTL_RDONLY)])
    assert isinstance(lopen, p.Rlopen), (walk, lopen)
    size = 64 << 20
    frames = b"".join(p.encode(100 + i, p.Tread(1, (i << 20) % size, 1 << 20))
                      for i in range(int(count)))  # fmt: skip
    peer.sock.settimeout(2)  # what the socket takes: the gateway stops reading it
    try:
        peer.sock.sendall(frames)
    except TimeoutError:
        pass
    return [peer], {"sent": int(count)}


def locks(uri: str, name: str, count: str, owners: str) -> tuple[list[Peer], dict[str, Any]]:
    """Take ``count`` write locks of one byte each (not adjacent: none merge) on ``name``,
    pipelined 500 at a time, as ``owners`` processes; then time 200 more Tlocks that
    conflict with nothing (its own cost on the gateway's loop)."""
    peer = Peer(uri)
    peer.attach()
    walk, lopen = peer.pipeline([p.Twalk(0, 1, (name,)), p.Tlopen(1, p.DOTL_RDWR)])
    assert isinstance(lopen, p.Rlopen), (walk, lopen)
    n, procs = int(count), int(owners)
    results: dict[int, int] = {}
    for first in range(0, n, 500):
        batch = [p.Tlock(1, p.LOCK_TYPE_WRLCK, 0, 2 * i, 1, 1 + i % procs, "attacker")
                 for i in range(first, min(n, first + 500))]  # fmt: skip
        for reply in peer.pipeline(batch):
            key = reply.status if isinstance(reply, p.Rlock) else -ecode(reply)
            results[key] = results.get(key, 0) + 1
    start = time.perf_counter()
    more = [p.Tlock(1, p.LOCK_TYPE_RDLCK, 0, 2 * n + 2 * i, 1, 1, "attacker") for i in range(200)]
    peer.pipeline(more)
    per_lock = (time.perf_counter() - start) / 200
    return [peer], {"results": results, "per_lock_us": per_lock * 1e6}


def dotdot(
    uri: str, depth: str, walks: str, seconds: str = "0"
) -> tuple[list[Peer], dict[str, Any]]:
    """Make a chain of directories ``depth`` deep (Tmkdir, then walk the fid into it, 250
    levels to a batch; what exists already is walked down), then time ``walks`` Twalks of
    16 ``..`` each from the bottom, each to a new fid; then go on walking up (and clunking)
    for ``seconds``."""
    peer = Peer(uri)
    peer.attach()
    (clone,) = peer.pipeline([p.Twalk(0, 1, ())])
    assert isinstance(clone, p.Rwalk), clone
    made = 0
    failed: list[p.Message] = []
    start = time.perf_counter()
    while made < int(depth):  # what a run before made: walked down, 16 levels a Twalk
        n = min(16, int(depth) - made)
        (reply,) = peer.pipeline([p.Twalk(1, 1, ("d",) * n)])
        if not isinstance(reply, p.Rwalk) or len(reply.qids) < n:  # a partial walk
            k = len(reply.qids) if isinstance(reply, p.Rwalk) else 0
            if k:
                peer.pipeline([p.Twalk(1, 1, ("d",) * k)])
            made += k
            break
        made += n
    while made < int(depth):
        batch: list[p.Message] = []
        for _ in range(min(250, int(depth) - made)):
            batch += [p.Tmkdir(1, "d", 0o755, p.NOFID), p.Twalk(1, 1, ("d",))]
        replies = peer.pipeline(batch)
        failed = [r for r in replies if ecode(r)]
        made += sum(isinstance(r, p.Rwalk) for r in replies)
        if failed:
            break
    built = time.perf_counter() - start
    times = []
    for i in range(int(walks)):
        t = time.perf_counter()
        (reply,) = peer.pipeline([p.Twalk(1, 2 + i, ("..",) * 16)])
        times.append(time.perf_counter() - t)
        assert isinstance(reply, p.Rwalk) and len(reply.qids) == 16, reply
    more = 0
    until = time.monotonic() + float(seconds)
    while time.monotonic() < until:
        peer.pipeline([p.Twalk(1, 100_000, ("..",) * 16), p.Tclunk(100_000)])
        more += 1
    return [peer], {"depth": made, "errors": sorted({ecode(r) for r in failed}),
                    "build_s": built, "walks_s": sum(times),
                    "max_walk_s": max(times, default=0.0), "more": more}  # fmt: skip


def flood(uri: str, sessions: str, seconds: str) -> tuple[list[Peer], dict[str, Any]]:
    """``sessions`` sessions, each with 64 Tgetattrs in flight, all sent at once, their
    replies read, again, for ``seconds``: every session ready on the gateway's loop at
    the same time."""
    peers = []
    for _ in range(int(sessions)):
        peer = Peer(uri)
        peer.attach()
        peer.pipeline([p.Twalk(0, 1, ())])
        peers.append(peer)
    batch = b"".join(p.encode(t, p.Tgetattr(1, p.GETATTR_BASIC)) for t in range(1, 65))
    rounds = 0
    end = time.monotonic() + float(seconds)
    while time.monotonic() < end:
        for peer in peers:
            peer.sock.sendall(batch)
        for peer in peers:
            got = 0
            while got < 64:
                data = peer.sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("the gateway closed the connection")
                peer.decoder.feed(data)
                got += sum(1 for _ in peer.decoder)
        rounds += 1
    return peers, {"rounds": rounds, "getattrs": rounds * 64 * len(peers)}


ATTACKS: dict[str, Callable[..., tuple[list[Peer], dict[str, Any]]]] = {
    "locks": locks,
    "unread": unread,
    "partial": partial,
    "fids": fids,
    "silent": silent,
    "dotdot": dotdot,
    "flood": flood,
}


def main(argv: list[str]) -> None:
    attack, uri, *args = argv
    # Below the gateway's priority: on a machine of two cores the attacker would otherwise
    # take the gateway's CPU away (a VM's vCPUs are not the gateway's), and what the other
    # tenant measures would be the scheduler, not the gateway.
    os.nice(19)
    print("ready", flush=True)
    sys.stdin.readline()
    peers, result = ATTACKS[attack](uri, *args)
    print(json.dumps(result), flush=True)
    sys.stdin.read()  # hold until told to go
    for peer in peers:
        peer.sock.close()


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except BrokenPipeError:
        sys.exit(errno.EPIPE)
