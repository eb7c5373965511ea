"""The two-writer stale-read checker of the change feed (``--cache coherent``).

Two writers, each on its own mount of one share (or one of them on the host), take turns:
writer A rewrites its file with version ``i`` (``open(O_TRUNC)``, write, close; the length
changes from one version to the next, up and down); writer B, whose mount has A's file
cached (pages and attributes, for ``coherent``'s hour), waits for its inotify watch to tell
it of a change to that file, then reads it and stats it. Then B writes its own file and A
does the same. This is what a program that watches files does (an editor reloading, a
build tool in watch mode): it reads when told.

A read is **stale** when, after the events of a turn have stopped coming (none for
``settle`` seconds) or the turn's bound has passed, what the reader reads or stats is not
the version the other writer had written and closed before the turn began; a read before
the last event of a turn that still shows the old version is counted apart (**early**):
the reader was told of a part of the change first (the truncation at open, say). A turn
whose events never come is stale too. ``coherent`` must have no stale read; ``always``
(no feed) has them at once, which shows the checker can fail.
"""

from __future__ import annotations

import os
import select
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests import inotify

_EVENTS = inotify.IN_MODIFY | inotify.IN_ATTRIB | inotify.IN_CLOSE_WRITE | inotify.IN_CREATE


def content(writer: str, version: int) -> bytes:
    """What ``writer`` writes as ``version``: its length changes from one to the next."""
    return f"{writer} {version}\n".encode() * (1 + version % 5)


@dataclass
class Tally:
    turns: int = 0
    stale: int = 0
    early: int = 0
    latencies: list[float] = field(default_factory=list)  # s from close to a right read
    failures: list[str] = field(default_factory=list)  # the first stale reads, said


class _Side:
    """One writer: its own file in its own view of the share, and a watch on that view."""

    def __init__(self, name: str, view: Path) -> None:
        self.name = name
        self.view = view
        self.fd = inotify.init()
        inotify.add_watch(self.fd, os.fsencode(view), _EVENTS)

    def write(self, version: int) -> float:
        with (self.view / self.name).open("wb") as f:
            f.write(content(self.name, version))
        return time.perf_counter()

    def drain(self) -> None:
        while select.select([self.fd], [], [], 0)[0]:
            os.read(self.fd, 65536)

    def told(self, name: bytes, timeout: float) -> bool:
        """Whether an event about ``name`` came within ``timeout``."""
        end = time.perf_counter() + timeout
        while (left := end - time.perf_counter()) > 0:
            ready = select.select([self.fd], [], [], left)[0]
            if ready and any(ev.name == name for ev in inotify.parse(os.read(self.fd, 65536))):
                return True
        return False

    def close(self) -> None:
        os.close(self.fd)


def _read(path: Path) -> tuple[bytes, int]:
    with path.open("rb") as f:
        return f.read(), os.fstat(f.fileno()).st_size


def _turn(
    writer: _Side, reader: _Side, version: int, tally: Tally, bound: float, settle: float
) -> None:
    want = content(writer.name, version)
    reader.drain()
    closed = writer.write(version)
    path = reader.view / writer.name
    end = closed + bound
    got, size, events = b"", -1, 0
    while time.perf_counter() < end:
        if not reader.told(writer.name.encode(), min(settle, end - time.perf_counter())):
            if events:
                break  # the events stopped: what is read now is what the reader keeps
            continue
        events += 1
        got, size = _read(path)
        if got == want and size == len(want):
            tally.latencies.append(time.perf_counter() - closed)
            reader.told(writer.name.encode(), settle)  # the turn's last events
            got, size = _read(path)
            break
        tally.early += 1
    if got != want or size != len(want) or os.stat(path).st_size != len(want):
        tally.stale += 1
        if len(tally.failures) < 5:
            tally.failures.append(
                f"turn {version}: {reader.name} read {got[:24]!r} (size {size}) after "
                f"{events} events, not {writer.name}'s version {version} ({len(want)} bytes)"
            )
    tally.turns += 1


def check(a: Path, b: Path, turns: int, bound: float = 1.0, settle: float = 0.05) -> Tally:
    """``turns`` turns each way between a writer in view ``a`` and one in view ``b`` of
    one share; each view must already show both files (see :func:`prepare`)."""
    tally = Tally()
    one, two = _Side("a.txt", a), _Side("b.txt", b)
    try:
        for version in range(1, turns + 1):
            _turn(one, two, version, tally, bound, settle)
            _turn(two, one, version, tally, bound, settle)
    finally:
        one.close()
        two.close()
    return tally


def prepare(share: Path, views: list[Path], timeout: float = 2.0) -> None:
    """Both files, version 0, read through every view (cached there from now on), once
    each view shows them (a view's feed tells it of the new names)."""
    for name in ("a.txt", "b.txt"):
        (share / name).write_bytes(content(name, 0))
    end = time.monotonic() + timeout
    for view in views:
        for name in ("a.txt", "b.txt"):
            while True:
                try:
                    if (view / name).read_bytes() == content(name, 0):
                        break
                except FileNotFoundError:
                    pass
                assert time.monotonic() < end, f"{view / name} does not show version 0"
                time.sleep(0.01)
