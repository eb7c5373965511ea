#!/usr/bin/env python3
"""Frame-logging TCP relay for 9P (plain Python stdlib; no vshare code).

    relay.py --listen 127.0.0.1:PORT_A --upstream 127.0.0.1:PORT_B --out FILE.json [--conns N]

For every accepted connection it connects to the upstream 9P server and
forwards bytes both ways unchanged.  Independently of the forwarding, each
direction's byte stream is cut into whole 9P frames on the size[4] prefix
(little-endian, counting itself), reassembled across TCP reads, and appended
to one list in arrival order:

    {"dir": "c2s" | "s2c", "hex": "<size[4] type[1] tag[2] ...>"}

--hold NAME:SECONDS (to provoke a real Tflush): the first time a c2s Twalk
names NAME, the relay stops forwarding server->client bytes for SECONDS
(client->server keeps flowing).  A client killed meanwhile sends Tflush; the
server's replies are then delivered late but unchanged and in their order.
s2c frames are logged when forwarded, c2s frames when received, so the log
order is the order the client saw.  Bytes are never altered.

When a connection ends (both directions closed) its frames are written to
FILE.json (the first connection) or FILE.N.json (connection N >= 2) as
{"frames": [...], "trailing": {"c2s": hex, "s2c": hex}} -- "trailing" holds
bytes that did not form a whole frame (normally empty).  With --conns N the
relay exits after N connections have ended.  SIGTERM/SIGINT flush whatever
is open and exit.
"""

import argparse
import json
import os
import signal
import socket
import struct
import sys
import threading
import time


def hostport(s):
    host, _, port = s.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise argparse.ArgumentTypeError("loopback addresses only")
    return host, int(port)


class Conn:
    def __init__(self, n, out, hold=None):
        self.n = n
        self.hold = hold  # (name bytes, seconds) or None; fires once
        self.hold_until = 0.0
        self.out = out
        self.lock = threading.Lock()
        self.frames = []
        self.bufs = {"c2s": bytearray(), "s2c": bytearray()}
        self.bad = None
        self.written = False

    def feed(self, direction, data):
        with self.lock:
            buf = self.bufs[direction]
            buf += data
            while self.bad is None and len(buf) >= 4:
                (size,) = struct.unpack_from("<I", buf, 0)
                if size < 7:
                    self.bad = f"{direction}: impossible frame size {size}"
                    break
                if len(buf) < size:
                    break
                frame = bytes(buf[:size])
                self.frames.append({"dir": direction, "hex": frame.hex()})
                if self.hold and direction == "c2s" and frame[4] == 110 and self._walks(frame):
                    self.hold_until = time.monotonic() + self.hold[1]
                    self.hold = None
                    secs = self.hold_until - time.monotonic()
                    print(
                        f"relay: conn {self.n}: holding s2c for {secs:.1f}s",
                        file=sys.stderr,
                        flush=True,
                    )
                del buf[:size]

    def _walks(self, frame):
        """Does this Twalk frame name self.hold[0]?"""
        (nw,) = struct.unpack_from("<H", frame, 15)
        o = 17
        for _ in range(nw):
            (n,) = struct.unpack_from("<H", frame, o)
            if frame[o + 2 : o + 2 + n] == self.hold[0]:
                return True
            o += 2 + n
        return False

    def path(self):
        if self.n == 1:
            return self.out
        base, ext = os.path.splitext(self.out)
        return f"{base}.{self.n}{ext}"

    def write(self):
        with self.lock:
            if self.written:
                return
            self.written = True
            doc = {
                "frames": self.frames,
                "trailing": {k: bytes(v).hex() for k, v in self.bufs.items()},
            }
            if self.bad:
                doc["error"] = self.bad
            tmp = self.path() + ".tmp"
            with open(tmp, "w") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
            os.replace(tmp, self.path())
            print(
                f"relay: conn {self.n}: {len(self.frames)} frames -> {self.path()}",
                file=sys.stderr,
                flush=True,
            )


def pump(src, dst, conn, direction, done):
    try:
        while True:
            data = src.recv(1 << 20)
            if not data:
                break
            if direction == "s2c":
                delay = conn.hold_until - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            conn.feed(direction, data)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        done.release()


def handle(csock, upstream, conn, finished):
    try:
        ssock = socket.create_connection(upstream)
    except OSError as e:
        print(f"relay: upstream connect failed: {e}", file=sys.stderr, flush=True)
        csock.close()
        finished.release()
        return
    for s in (csock, ssock):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    done = threading.Semaphore(0)
    threading.Thread(target=pump, args=(csock, ssock, conn, "c2s", done), daemon=True).start()
    threading.Thread(target=pump, args=(ssock, csock, conn, "s2c", done), daemon=True).start()
    done.acquire()
    done.acquire()
    csock.close()
    ssock.close()
    conn.write()
    finished.release()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", type=hostport, required=True)
    ap.add_argument("--upstream", type=hostport, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--conns", type=int, default=0, help="exit after N connections (0: never)")
    ap.add_argument("--hold", help="NAME:SECONDS, see above")
    ap.add_argument("--ready", help="file to create once listening")
    args = ap.parse_args()

    hold = None
    if args.hold:
        name, _, secs = args.hold.rpartition(":")
        hold = (name.encode(), float(secs))
    conns = []
    finished = threading.Semaphore(0)

    def stop(signum, frame):
        for c in conns:
            c.write()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(args.listen)
    ls.listen(8)
    print(f"relay: {args.listen} -> {args.upstream}", file=sys.stderr, flush=True)
    if args.ready:
        open(args.ready, "w").close()

    def acceptor():
        while True:
            csock, _ = ls.accept()
            conn = Conn(len(conns) + 1, args.out, hold)
            conns.append(conn)
            threading.Thread(
                target=handle, args=(csock, args.upstream, conn, finished), daemon=True
            ).start()
            if args.conns and len(conns) >= args.conns:
                return

    threading.Thread(target=acceptor, daemon=True).start()
    if args.conns:
        for _ in range(args.conns):
            finished.acquire()
        ls.close()
    else:
        signal.pause() if hasattr(signal, "pause") else threading.Event().wait()


if __name__ == "__main__":
    main()
