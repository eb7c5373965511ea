"""Cache mode ``coherent``: changes pushed by the gateway's change feed (9P2000.L.vshare.3).

A real gateway process, real FUSE mounts and real inotify: a change made on the host, and
one made through a second mount, reach the first mount's ``stat`` (whose cache would
otherwise keep the old attributes for an hour) and an inotify watch in it within 1 s; a
reconnect in the middle leaves nothing stale, and the feed's resync is what did it.
"""

from __future__ import annotations

import os
import select
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import inotify, two_writers
from tests.fuse.conftest import GatewayFactory, GatewayProc, MountFactory, TunedGateway
from tests.metrics import scrape, value

LIMIT = 1.0  # seconds: the bound for the test (the goal is 100 ms at p99)


class Watch:
    """An inotify watch on a directory of the mount (the guest's view)."""

    MASK = (
        inotify.IN_MODIFY | inotify.IN_ATTRIB | inotify.IN_CREATE | inotify.IN_DELETE
        | inotify.IN_MOVED_FROM | inotify.IN_MOVED_TO
    )  # fmt: skip

    def __init__(self, path: Path) -> None:
        self.fd = inotify.init()
        inotify.add_watch(self.fd, os.fsencode(path), self.MASK)
        self.events: list[inotify.Event] = []  # read, not yet waited for

    def wait(self, name: bytes, mask: int, timeout: float) -> float | None:
        """Seconds until an event of ``mask`` on ``name`` (taken from those read), or None."""
        start = time.monotonic()
        return None if self.take(name, mask, timeout) is None else time.monotonic() - start

    def take(self, name: bytes, mask: int, timeout: float) -> inotify.Event | None:
        """The first event of ``mask`` on ``name`` within ``timeout`` (and those before it)."""
        end = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.name == name and ev.mask & mask:
                    del self.events[: i + 1]
                    return ev
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            self.events += inotify.parse(os.read(self.fd, 65536))

    def close(self) -> None:
        os.close(self.fd)


def _stat_until(path: Path, size: int, timeout: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if os.stat(path).st_size == size:
            return time.monotonic() - start
        time.sleep(0.005)
    return None


def test_host_change_reaches_stat_and_inotify(
    gateway_proc: GatewayProc, mount: MountFactory
) -> None:
    host = gateway_proc.share_dir("alpha") / "f.txt"
    host.write_bytes(b"one\n")
    m = mount(gateway_proc.uri, "alpha", "coherent").path
    assert os.stat(m / "f.txt").st_size == 4  # cached now, for an hour without the feed
    assert (m / "f.txt").read_bytes() == b"one\n"
    time.sleep(0.3)  # the feed's Twatch is waiting and the share is watched
    watch = Watch(m)
    try:
        with host.open("ab") as f:  # on the host, behind the gateway's back
            f.write(b"two two\n")
        latency = watch.wait(b"f.txt", inotify.IN_MODIFY, 5)
        assert latency is not None, "no IN_MODIFY in the mount"
        assert latency <= LIMIT, f"IN_MODIFY after {latency:.3f} s"
        assert _stat_until(m / "f.txt", 12, LIMIT) is not None
        assert (m / "f.txt").read_bytes() == b"one\ntwo two\n"  # no stale page either
        print(f"host change -> inotify in the mount: {latency * 1000:.1f} ms")
    finally:
        watch.close()


def test_change_through_a_second_mount(gateway_proc: GatewayProc, mount: MountFactory) -> None:
    (gateway_proc.share_dir("alpha") / "g.txt").write_bytes(b"a")
    first = mount(gateway_proc.uri, "alpha", "coherent").path
    second = mount(gateway_proc.uri, "alpha", "always").path
    assert os.stat(first / "g.txt").st_size == 1
    assert sorted(os.listdir(first)) == ["g.txt"]
    time.sleep(0.3)
    watch = Watch(first)
    try:
        t0 = time.monotonic()
        with (second / "g.txt").open("ab") as f:
            f.write(b"bcdef")
        latency = watch.wait(b"g.txt", inotify.IN_MODIFY, 5)
        assert latency is not None, "no IN_MODIFY in the first mount"
        assert time.monotonic() - t0 <= LIMIT + 0.5
        assert _stat_until(first / "g.txt", 6, LIMIT) is not None
        assert (first / "g.txt").read_bytes() == b"abcdef"
        (second / "new.txt").write_bytes(b"x")  # a name the first mount listed as absent
        start = time.monotonic()
        while "new.txt" not in os.listdir(first) and time.monotonic() - start < LIMIT:
            time.sleep(0.01)
        assert "new.txt" in os.listdir(first)
        print(f"second mount's write -> inotify in the first: {latency * 1000:.1f} ms")
    finally:
        watch.close()


def _reconnect_with_changes_made_meanwhile(gw: TunedGateway, m: Path) -> None:
    host = gw.share_dir("alpha") / "h.txt"
    assert (m / "h.txt").read_bytes() == b"before\n"
    assert os.stat(m / "h.txt").st_size == 7
    time.sleep(0.3)  # a coherent mount's Twatch is waiting: it has a seq
    gw.kill()  # the feed's stream is cut: changes now are announced to nobody
    host.write_bytes(b"changed while down\n")
    (gw.share_dir("alpha") / "born.txt").write_bytes(b"b")
    time.sleep(0.3)
    gw.start()
    # The client reconnects; its Twatch names the old session's seq: revalidate all.
    assert _stat_until(m / "h.txt", 19, 10) is not None, "stale size after the reconnect"
    assert (m / "h.txt").read_bytes() == b"changed while down\n"
    assert (m / "born.txt").read_bytes() == b"b"


def test_no_stale_data_after_a_reconnect(gateway_with: GatewayFactory, mount: MountFactory) -> None:
    """The mount sees what changed while the gateway was down, and it is the feed's doing:
    the new gateway answered the client's stale seq with CHANGE_ALL (a resync). A mount in
    ``always`` (no feed) fails the second part (:func:`test_the_reconnect_test_can_fail`)."""
    gw = gateway_with(metrics=True)
    (gw.share_dir("alpha") / "h.txt").write_bytes(b"before\n")
    m = mount(gw.uri, "alpha", "coherent", "--reconnect-timeout", "30").path
    _reconnect_with_changes_made_meanwhile(gw, m)
    assert _resyncs(gw) >= 1, "the reconnected client was not resynced by the feed"


def test_the_reconnect_test_can_fail(gateway_with: GatewayFactory, mount: MountFactory) -> None:
    """The same with ``--cache always`` (no feed) fails it: stale for the cache's hour
    where the kernel had the attributes when the gateway went (seen here), fresh by luck
    where the reconnect dropped them first; and never resynced, which is the check that
    does not depend on that luck."""
    gw = gateway_with(metrics=True)
    (gw.share_dir("alpha") / "h.txt").write_bytes(b"before\n")
    m = mount(gw.uri, "alpha", "always", "--reconnect-timeout", "30").path
    with pytest.raises(AssertionError):
        try:
            _reconnect_with_changes_made_meanwhile(gw, m)
        finally:
            os.listdir(m)  # reconnected, whatever it shows
        assert _resyncs(gw) >= 1


def _resyncs(gw: TunedGateway) -> float:
    """``vshare_feed_resyncs_total`` of the gateway (Twatch naming a stale seq)."""
    deadline = time.monotonic() + 5
    while (n := value(scrape(gw.metrics_port or 0), "vshare_feed_resyncs_total")) < 1:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return n


def test_names_made_and_removed_on_the_host_fire_create_and_delete(
    gateway_proc: GatewayProc, mount: MountFactory
) -> None:
    """What a build tool watching a directory needs: IN_CREATE for a file and a directory
    made elsewhere, IN_DELETE for a name removed elsewhere, and the listing to match."""
    share = gateway_proc.share_dir("alpha")
    (share / "old.txt").write_bytes(b"x")
    m = mount(gateway_proc.uri, "alpha", "coherent").path
    assert sorted(os.listdir(m)) == ["old.txt"]  # listed: cached for an hour
    time.sleep(0.3)  # the feed's Twatch is waiting and the share is watched
    watch = Watch(m)
    try:
        (share / "new.txt").write_bytes(b"made on the host")
        created = watch.wait(b"new.txt", inotify.IN_CREATE, 5)
        assert created is not None and created <= LIMIT, f"IN_CREATE of a file: {created}"
        (share / "newdir").mkdir()
        made_dir = watch.wait(b"newdir", inotify.IN_CREATE, 5)
        assert made_dir is not None and made_dir <= LIMIT, f"IN_CREATE of a dir: {made_dir}"
        (share / "old.txt").unlink()
        deleted = watch.wait(b"old.txt", inotify.IN_DELETE, 5)
        assert deleted is not None and deleted <= LIMIT, f"IN_DELETE: {deleted}"
        assert sorted(os.listdir(m)) == ["new.txt", "newdir"]
        assert (m / "new.txt").read_bytes() == b"made on the host"  # the host's file, kept
        assert (share / "new.txt").read_bytes() == b"made on the host"
        print(f"IN_CREATE {created * 1000:.1f} ms, dir {made_dir * 1000:.1f}, "
              f"IN_DELETE {deleted * 1000:.1f} ms")  # fmt: skip
    finally:
        watch.close()


def test_a_mounts_own_changes_do_not_come_back_to_it(
    gateway_with: GatewayFactory, mount: MountFactory
) -> None:
    """Files created, written, chmod'ed, renamed and removed through a coherent mount alone
    on its share: the feed sends it nothing (what it made, it knows; the host watch leaves
    out the gateway's own process); then a host change is sent, so the count can move, and
    the time it waited in the feed is measured."""
    gw = gateway_with(metrics=True)
    m = mount(gw.uri, "alpha", "coherent").path
    os.listdir(m)
    time.sleep(0.3)  # the feed's Twatch is waiting and the share is watched
    for i in range(50):
        f = m / f"f{i}"
        f.write_bytes(b"x" * i)
        f.chmod(0o600)
        f.rename(m / f"g{i}")
    (m / "d").mkdir()
    for i in range(0, 50, 2):
        (m / f"g{i}").unlink()
    time.sleep(0.5)  # what the host watch saw has been read by now
    assert value(scrape(gw.metrics_port or 0), "vshare_feed_changes_sent_total") == 0
    (gw.share_dir("alpha") / "g1").write_bytes(b"from the host")
    deadline = time.monotonic() + 5
    while value(scrape(gw.metrics_port or 0), "vshare_feed_changes_sent_total") == 0:
        assert time.monotonic() < deadline, "a host change was not sent"
        time.sleep(0.05)
    assert (m / "g1").read_bytes() == b"from the host"
    samples = scrape(gw.metrics_port or 0)  # how long it waited in the feed
    told = value(samples, "vshare_feed_delivery_seconds_count")
    assert told >= 1
    assert value(samples, "vshare_feed_delivery_seconds_sum") / told < LIMIT


def test_every_kind_of_change_through_a_second_mount_reaches_the_first(
    gateway_proc: GatewayProc, mount: MountFactory
) -> None:
    """The gateway tells its other sessions each change a session makes, from the request
    (the host watch leaves the gateway's own process out): contents, size, mode, times,
    an xattr (ctime), names made, linked, renamed and removed, each seen by a coherent
    mount that had it all cached for an hour, within the bound."""
    share = gateway_proc.share_dir("alpha")
    (share / "f").write_bytes(b"abc")
    (share / "gone").write_bytes(b"x")
    (share / "d").mkdir()
    (share / "e").mkdir()
    first = mount(gateway_proc.uri, "alpha", "coherent").path
    second = mount(gateway_proc.uri, "alpha", "always").path
    for name in ("f", "gone", "d", "e"):
        os.stat(first / name)
    os.listdir(first)
    os.listdir(first / "d")
    assert (first / "f").read_bytes() == b"abc"
    time.sleep(0.3)  # the feed's Twatch is waiting
    ctime = os.stat(first / "f").st_ctime_ns

    def append() -> None:
        with (second / "f").open("ab") as f:
            f.write(b"def")

    def setxattr() -> None:
        time.sleep(0.02)  # a later ctime than the utime's
        os.setxattr(second / "f", "user.k", b"v")

    steps: list[tuple[str, Callable[[], object], Callable[[], bool]]] = [
        ("write", append, lambda: (first / "f").read_bytes() == b"abcdef"),
        ("truncate", lambda: os.truncate(second / "f", 2),
         lambda: os.stat(first / "f").st_size == 2),
        ("chmod", lambda: os.chmod(second / "f", 0o640),
         lambda: stat.S_IMODE(os.stat(first / "f").st_mode) == 0o640),
        ("utime", lambda: os.utime(second / "f", (1e9, 1e9)),
         lambda: os.stat(first / "f").st_mtime == 1e9),
        ("setxattr", setxattr, lambda: os.stat(first / "f").st_ctime_ns > ctime),
        ("create", lambda: (second / "new").write_bytes(b"n"), lambda: "new" in os.listdir(first)),
        ("mkdir", (second / "d" / "sub").mkdir, lambda: "sub" in os.listdir(first / "d")),
        ("symlink", lambda: os.symlink("f", second / "ln"), lambda: "ln" in os.listdir(first)),
        ("link", lambda: os.link(second / "f", second / "hard"),
         lambda: os.stat(first / "f").st_nlink == 2),
        ("rename", lambda: os.rename(second / "new", second / "d" / "moved"),
         lambda: "new" not in os.listdir(first) and "moved" in os.listdir(first / "d")),
        ("unlink", lambda: os.unlink(second / "gone"), lambda: not (first / "gone").exists()),
        ("rmdir", lambda: os.rmdir(second / "e"), lambda: "e" not in os.listdir(first)),
    ]  # fmt: skip
    for what, change, seen in steps:
        ctime = os.stat(first / "f").st_ctime_ns
        change()
        deadline = time.monotonic() + LIMIT
        while not seen():
            assert time.monotonic() < deadline, f"{what} through the second mount not seen"
            time.sleep(0.01)


@pytest.mark.parametrize("cache", ["coherent", "always"])
def test_two_writers_read_what_the_other_wrote(
    gateway_proc: GatewayProc, mount: MountFactory, cache: str
) -> None:
    """tests/two_writers.py: two mounts take turns rewriting their own file and reading
    the other's when their inotify watch tells them. ``coherent``: no stale read in 40
    turns. ``always`` (no feed) is stale at once, so the checker can fail."""
    share = gateway_proc.share_dir("alpha")
    a = mount(gateway_proc.uri, "alpha", cache).path
    b = mount(gateway_proc.uri, "alpha", cache).path
    two_writers.prepare(share, [a, b])
    time.sleep(0.3)  # the feeds' Twatches are waiting
    turns = 20 if cache == "coherent" else 2
    tally = two_writers.check(a, b, turns, bound=LIMIT if cache == "coherent" else 0.3)
    print(f"{cache}: {tally.turns} turns, {tally.stale} stale, {tally.early} early")
    if cache == "coherent":
        assert tally.stale == 0, tally.failures
        assert tally.turns == 2 * turns
    else:
        assert tally.stale == tally.turns, tally.failures


def test_names_renamed_and_symlinks_made_on_the_host_fire_their_events(
    gateway_proc: GatewayProc, mount: MountFactory
) -> None:
    """A rename on the host of a name the mount knew: IN_MOVED_FROM and IN_MOVED_TO in the
    guest, with one cookie, in one directory and across two; an editor's save (a new file
    renamed over a known one): an event on the saved name; a symlink made: IN_CREATE.
    The listing and contents match after each."""
    share = gateway_proc.share_dir("alpha")
    (share / "a.txt").write_bytes(b"a")
    (share / "saved.txt").write_bytes(b"old")
    (share / "sub").mkdir()
    m = mount(gateway_proc.uri, "alpha", "coherent").path
    assert sorted(os.listdir(m)) == ["a.txt", "saved.txt", "sub"]
    assert os.listdir(m / "sub") == []
    assert (m / "saved.txt").read_bytes() == b"old"
    time.sleep(0.3)  # the feed's Twatch is waiting and the share is watched
    top, sub = Watch(m), Watch(m / "sub")
    try:
        os.rename(share / "a.txt", share / "b.txt")
        gone = top.take(b"a.txt", inotify.IN_MOVED_FROM, 5)
        came = top.take(b"b.txt", inotify.IN_MOVED_TO, 5)
        assert gone is not None and came is not None, f"no IN_MOVED_FROM/TO: {gone}, {came}"
        assert gone.cookie == came.cookie != 0, "not one rename"
        assert sorted(os.listdir(m)) == ["b.txt", "saved.txt", "sub"]
        os.rename(share / "b.txt", share / "sub" / "c.txt")
        moved_from = top.wait(b"b.txt", inotify.IN_MOVED_FROM, 5)
        assert moved_from is not None, "no IN_MOVED_FROM across directories"
        assert sub.wait(b"c.txt", inotify.IN_MOVED_TO, 5) is not None, "no IN_MOVED_TO there"
        assert (m / "sub" / "c.txt").read_bytes() == b"a"
        (share / ".saved.txt.swp").write_bytes(b"new")
        os.rename(share / ".saved.txt.swp", share / "saved.txt")
        saved = top.wait(b"saved.txt", inotify.IN_MOVED_TO | inotify.IN_CREATE, 5)
        assert saved is not None, "no event for the saved file"
        assert (m / "saved.txt").read_bytes() == b"new"
        os.symlink("saved.txt", share / "link")
        assert top.wait(b"link", inotify.IN_CREATE, 5) is not None, "no IN_CREATE of a symlink"
        assert os.readlink(m / "link") == "saved.txt"
        assert sorted(os.listdir(m)) == ["link", "saved.txt", "sub"]
    finally:
        top.close()
        sub.close()


def test_a_dropped_cache_leaves_working_directories_reachable(
    gateway_with: GatewayFactory, mount: MountFactory
) -> None:
    """When the feed's queue for a mount overflows (a host process made thousands of
    changes: a `git gc` packing a repository's loose objects), the mount drops everything
    it knows. A process whose working directory is in the mount must still find it:
    `git status` failed with "unable to get current working directory" (getcwd ENOENT),
    because every name was unhashed, its directory's too, though it still existed. Names
    are now only expired (FUSE_EXPIRE_ONLY): the kernel asks again before using one."""
    gw = gateway_with(metrics=True)
    (gw.share_dir("alpha") / "sub" / "deeper").mkdir(parents=True)
    mnt = mount(gw.uri, "alpha", "coherent")
    m = mnt.path
    child = subprocess.Popen(
        [sys.executable, "-c", "import os, sys; sys.stdin.readline(); print(os.getcwd())"],
        cwd=m / "sub" / "deeper", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert os.listdir(m / "sub") == ["deeper"]  # known whole, for coherent's hour
        time.sleep(0.3)  # the feed's Twatch is waiting and the share is watched
        # The mount is stopped while the host makes more changes than its queue holds.
        os.kill(mnt.proc.pid, signal.SIGSTOP)
        try:
            host = gw.share_dir("alpha") / "sub"
            for i in range(5000):
                (host / f"n{i}").touch()
            deadline = time.monotonic() + 10
            while value(scrape(gw.metrics_port or 0), "vshare_feed_overflows_total") < 1:
                assert time.monotonic() < deadline, "the feed's queue did not overflow"
                time.sleep(0.05)
        finally:
            os.kill(mnt.proc.pid, signal.SIGCONT)
        # The drop applied (the listing known whole is no more), and its invalidations
        # made (a thread of the mount's, a moment after).
        deadline = time.monotonic() + 10
        while len(os.listdir(m / "sub")) < 5001:
            assert time.monotonic() < deadline, "the mount did not drop its listing"
            time.sleep(0.05)
        time.sleep(0.5)
        out, _ = child.communicate(b"\n", timeout=10)
        assert child.returncode == 0, "getcwd failed in the mount after the drop"
        assert out.decode().strip() == str(m / "sub" / "deeper")
        assert (m / "sub" / "deeper").is_dir()
    finally:
        child.kill()
        child.wait()
