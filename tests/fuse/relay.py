"""A Unix socket between a FUSE client and its gateway that notes which requests came
together in one write (one round trip for several)."""

from __future__ import annotations

import select
import socket
import threading
from pathlib import Path

from vshare import protocol as p


class Relay:
    """A Unix socket relaying a client's connection to the gateway, noting each receive of
    the client's bytes: which requests came together, in one write."""

    def __init__(self, listen: Path, target: Path) -> None:
        self.path = listen
        self._target = target
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(listen))
        self._server.listen()
        self.together: list[list[p.Message]] = []  # the requests decoded after each receive
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def uri(self) -> str:
        return f"unix://{self.path}"

    def _run(self) -> None:
        client, _ = self._server.accept()
        gateway = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        gateway.connect(str(self._target))
        decoder = p.FrameDecoder(accept="T")
        with client, gateway:
            while not self._stop.is_set():
                ready, _, _ = select.select([client, gateway], [], [], 0.1)
                for sock in ready:
                    data = sock.recv(1 << 20)
                    if not data:
                        return
                    if sock is client:
                        decoder.feed(data)
                        self.together.append([m for _, m in decoder])
                        gateway.sendall(data)
                    else:
                        client.sendall(data)

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(5)

    def reads_with_opens(self) -> list[p.Tread]:
        """The Treads that came in the same write as the Twalkopen of their fid."""
        out = []
        for group in self.together:
            opened = {m.newfid for m in group if isinstance(m, p.Twalkopen)}
            out += [m for m in group if isinstance(m, p.Tread) and m.fid in opened]
        return out

    def listings_at_once(self) -> list[list[p.Message]]:
        """The writes that carried a Twalkopen, a Treaddirplus and a Tclunk of one new fid:
        a directory listed whole in one round trip."""
        out = []
        for group in self.together:
            opened = {m.newfid for m in group if isinstance(m, p.Twalkopen)}
            listed = {m.fid for m in group if isinstance(m, p.Treaddirplus)}
            clunked = {m.fid for m in group if isinstance(m, p.Tclunk)}
            if opened & listed & clunked:
                out.append(group)
        return out
