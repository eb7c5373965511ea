"""The change feed's GlusterFS source: upcalls of other clients' changes.

A real glusterd volume (``features.cache-invalidation on``) and GlusterFS's native FUSE
client as the other client: its change reaches the watchers of the share that holds the
object and no other share's (the backend, in process), and a ``--cache coherent`` mount
through a gateway process (its ``stat`` and its inotify) within 1 s.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import inotify
from tests.fuse import conftest as fuse_conftest
from tests.fuse.conftest import GatewayProc, MountFactory
from tests.fuse.test_coherent import LIMIT, Watch, _stat_until
from tests.gluster.conftest import Session
from vshare.backend.gluster import GlusterBackend
from vshare.testing import glusterd as gd

mount = fuse_conftest.mount  # the FUSE tests' mount factory (a fixture)


@pytest.fixture(scope="module")
def other(gluster_session: Session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The volume mounted by GlusterFS's native client: another client."""
    with gd.fuse_mount(gluster_session.volume, tmp_path_factory.mktemp("native") / "m") as m:
        yield m


class Told:
    """What a watch_changes callback was told (called on gfapi's threads)."""

    def __init__(self) -> None:
        self.qids: list[int] = []
        self.changed = threading.Condition()

    def __call__(self, qids: list[int]) -> None:
        with self.changed:
            self.qids += qids
            self.changed.notify_all()

    def wait_for(self, qid: int, timeout: float) -> float | None:
        start = time.monotonic()
        with self.changed:
            if self.changed.wait_for(lambda: qid in self.qids, timeout):
                return time.monotonic() - start
        return None


def test_upcalls_are_told_only_to_the_share_that_holds_the_object(
    gluster_session: Session, other: Path
) -> None:
    rel = gluster_session.fresh_root("feed")
    host = gluster_session.host(rel)
    for path in ("shares/alpha/f", "shares/beta/g", "shares/alpha/unseen"):
        host.host_write(path, b"1")
    backend = GlusterBackend(f"{gluster_session.uri}/{rel}")
    alpha, beta = backend.open_root("shares/alpha"), backend.open_root("shares/beta")
    to_alpha, to_beta = Told(), Told()
    stops = [backend.watch_changes(alpha, to_alpha), backend.watch_changes(beta, to_beta)]
    try:
        assert all(stops), "the volume has cache-invalidation on: upcalls are told"
        f, g = backend.lookup(alpha, "f"), backend.lookup(beta, "g")
        backend.getattr(f), backend.getattr(g)
        (other / rel / "shares/alpha/f").write_bytes(b"22")
        latency = to_alpha.wait_for(f.qid_path, 5)
        assert latency is not None and latency <= LIMIT, latency
        (other / rel / "shares/beta/g").write_bytes(b"22")
        assert to_beta.wait_for(g.qid_path, 5) is not None
        time.sleep(0.3)
        assert f.qid_path not in to_beta.qids, "alpha's object told to beta"
        assert g.qid_path not in to_alpha.qids, "beta's object told to alpha"
        print(f"native client's write -> upcall told to the share: {latency * 1000:.1f} ms")
        f.close()
        g.close()
    finally:
        for stop in stops:
            if stop is not None:
                stop()
        alpha.close()
        beta.close()
        backend.close()


class GlusterGateway(GatewayProc):
    """``vshare gateway run`` over a directory of the GlusterFS volume."""

    backend_uri = ""

    def argv(self) -> list[str]:
        argv = super().argv()
        argv[argv.index("--backend") + 1] = self.backend_uri
        return argv


def _gluster_gateway(session: Session, rel: str, where: Path) -> GlusterGateway:
    """A gateway process serving share ``alpha`` (``rel``/shares/alpha of the volume)."""
    where.mkdir(exist_ok=True)
    config = where / "gateway.toml"
    config.write_text(
        '[[share]]\nname = "alpha"\npath = "shares/alpha"\n'
        f'access = [{{ type = "user", to = "{os.getuid()}" }}]\n'
    )
    gw = GlusterGateway(where / "gw.sock", where / "unused", config, where / "gw.log")
    gw.backend_uri = f"{session.uri}/{rel}"
    gw.start()
    return gw


@pytest.fixture
def gluster_gateway(
    gluster_session: Session, tmp_path: Path
) -> Iterator[tuple[GlusterGateway, str]]:
    rel = gluster_session.fresh_root("feedgw")
    gluster_session.host(rel).host_mkdir("shares")
    gluster_session.host(rel).host_mkdir("shares/alpha")
    gw = _gluster_gateway(gluster_session, rel, tmp_path)
    try:
        yield gw, rel
    finally:
        gw.kill()  # glfs_fini would take ~10 s; the volume does not mind


def _appended_and_seen(writer: Path, coherent: Path, watch: Watch) -> float:
    """Append to f.txt ("one\\n") through ``writer``: the coherent mount's inotify says
    IN_MODIFY within the bound, and its stat and read show the new contents. Seconds."""
    with (writer / "f.txt").open("ab") as fh:
        fh.write(b"two two\n")
    latency = watch.wait(b"f.txt", inotify.IN_MODIFY, 5)
    assert latency is not None, "no IN_MODIFY in the coherent mount"
    assert latency <= LIMIT, f"IN_MODIFY after {latency:.3f} s"
    assert _stat_until(coherent / "f.txt", 12, LIMIT) is not None
    assert (coherent / "f.txt").read_bytes() == b"one\ntwo two\n"
    return latency


def test_a_native_clients_change_reaches_a_coherent_mount(
    gluster_session: Session,
    other: Path,
    gluster_gateway: tuple[GlusterGateway, str],
    mount: MountFactory,
) -> None:
    gw, rel = gluster_gateway
    there = other / rel / "shares" / "alpha"
    (there / "f.txt").write_bytes(b"one\n")
    m = mount(gw.uri, "alpha", "coherent").path
    assert os.stat(m / "f.txt").st_size == 4  # cached now, for an hour without the feed
    assert sorted(os.listdir(m)) == ["f.txt"]
    time.sleep(0.3)  # the feed's Twatch is waiting and the volume's watcher registered
    watch = Watch(m)
    try:
        latency = _appended_and_seen(there, m, watch)
        print(f"native client's write -> inotify in the mount: {latency * 1000:.1f} ms")
        (there / "new.txt").write_bytes(b"x")  # a name the mount listed as absent
        start = time.monotonic()
        while "new.txt" not in os.listdir(m) and time.monotonic() - start < LIMIT:
            time.sleep(0.01)
        assert "new.txt" in os.listdir(m), "a name added by the other client is not seen"
    finally:
        watch.close()


def test_a_change_through_a_second_gateway_reaches_a_coherent_mount(
    gluster_session: Session,
    gluster_gateway: tuple[GlusterGateway, str],
    mount: MountFactory,
    tmp_path: Path,
) -> None:
    """Two gateways on one volume (two hypervisors): a write and a new name through a
    mount of the second reach a coherent mount of the first (its upcalls) within 1 s: its
    stat, its listing and its inotify (IN_MODIFY; IN_CREATE, the upcall naming only the
    directory: the mount lists it again and tells the names it did not have)."""
    gw, rel = gluster_gateway
    second = _gluster_gateway(gluster_session, rel, tmp_path / "second")
    try:
        a = mount(gw.uri, "alpha", "coherent").path
        b = mount(second.uri, "alpha", "always").path
        (b / "f.txt").write_bytes(b"one\n")
        assert _stat_until(a / "f.txt", 4, LIMIT) is not None  # cached now, for an hour
        assert os.listdir(a) == ["f.txt"]  # as a watcher lists what it watches
        time.sleep(0.3)  # the feed's Twatch is waiting and the volume's watcher registered
        watch = Watch(a)
        try:
            latency = _appended_and_seen(b, a, watch)
            (b / "new.txt").write_bytes(b"x")
            assert watch.wait(b"new.txt", inotify.IN_CREATE, 5) is not None, "no IN_CREATE"
            assert sorted(os.listdir(a)) == ["f.txt", "new.txt"]
            (b / "f.txt").unlink()
            assert watch.wait(b"f.txt", inotify.IN_DELETE, 5) is not None, "no IN_DELETE"
            assert os.listdir(a) == ["new.txt"]
            print(
                f"second gateway's write -> inotify in the first's mount: {latency * 1000:.1f} ms"
            )
        finally:
            watch.close()
    finally:
        second.kill()
