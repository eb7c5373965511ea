"""libvirt lifecycle events against real libvirt (issue 20, item 11: CID reuse).

Two kinds of libvirt, both real code from Debian's libvirt 9.0 through libvirt-python:

- ``test:///default``: libvirt's test driver, run inside this process by the client
  library (no daemon). It emits lifecycle events for create and destroy through the
  default event loop, and keeps a domain's XML as given, so a domain can carry
  ``<cid auto='yes' address='5'/>`` as if libvirt had picked CID 5 when it started.
- ``libvirtd`` (Debian ``libvirt-daemon``) started by the test in the foreground, as an
  unprivileged session daemon (user nobody) whose sockets, config and state live in a
  temporary directory, serving the same test driver over its Unix socket
  (``test+unix:///default?socket=...``): events, connection loss and reconnection then go
  through libvirt's RPC layer as they would with ``qemu:///system``.

Not testable here: QEMU domains with a vsock device (no ``/dev/vhost-vsock`` on this host,
and the test driver does not pick CIDs itself: its ``address`` is what the test wrote).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from tests.transport.fakevsock import FakeVsockNet
from vshare.client import open_client
from vshare.gateway import libvirt
from vshare.gateway.config import Share
from vshare.gateway.instances import Change, InstanceTable
from vshare.policy import AccessRule, Instance
from vshare.transport import PeerIdentity, _vsock, connect

from .conftest import GatewayFactory
from .helpers import getattr_

lv: Any = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

LIBVIRTD = "/usr/sbin/libvirtd"
NOBODY = 65534
NOVA = "http://openstack.org/xmlns/libvirt/nova/1.1"


def domain_xml(name: str, uuid: str, tenant: str, cid: int) -> str:
    """A domain as libvirt shows a running Nova instance whose auto CID is ``cid``."""
    return f"""\
<domain type='test'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <metadata>
    <nova:instance xmlns:nova="{NOVA}">
      <nova:name>{name}</nova:name>
      <nova:owner><nova:project uuid="{tenant}">{tenant}</nova:project></nova:owner>
    </nova:instance>
  </metadata>
  <memory unit='KiB'>65536</memory>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <vsock model='virtio'><cid auto='yes' address='{cid}'/></vsock>
  </devices>
</domain>
"""


def vsock(cid: int) -> PeerIdentity:
    return PeerIdentity("vsock", cid=cid)


class Libvirtd:
    """libvirtd in the foreground as nobody, everything under one temporary directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lvd-", dir="/tmp"))
        for sub in ("home", "run"):
            (self.dir / sub).mkdir(mode=0o700)
        (self.dir / "libvirtd.conf").write_text('log_outputs = "3:stderr"\n')
        for path in (self.dir, self.dir / "home", self.dir / "run", self.dir / "libvirtd.conf"):
            os.chown(path, NOBODY, NOBODY)
        self.socket = self.dir / "run" / "libvirt" / "libvirt-sock"
        self.uri = f"test+unix:///default?socket={self.socket}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        home = self.dir / "home"
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(home),
            "XDG_RUNTIME_DIR": str(self.dir / "run"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
        }
        log = open(self.dir / "libvirtd.log", "ab")  # noqa: SIM115 (the daemon keeps it)
        self.proc = subprocess.Popen(
            [LIBVIRTD, "-f", str(self.dir / "libvirtd.conf")],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            user=NOBODY, group=NOBODY, extra_groups=[], cwd=self.dir,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"libvirtd exited: {self.log()[-2000:]}")
            if self.socket.exists():
                try:
                    lv.openReadOnly(self.uri).close()
                    return
                except lv.libvirtError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"libvirtd did not answer in 30 s: {self.log()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        path = self.dir / "libvirtd.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def libvirtd() -> Iterator[Libvirtd]:
    if os.geteuid() != 0 or not os.access(LIBVIRTD, os.X_OK):
        pytest.skip("needs root and libvirtd (Debian libvirt-daemon)")
    daemon = Libvirtd()
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(daemon.dir, ignore_errors=True)


class Domains:
    """Domains made and destroyed through a read-write connection, in worker threads."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.conn: Any = lv.open(uri)
        self.made: list[str] = []

    async def start(self, name: str, tenant: str, cid: int) -> str:
        uuid = str(uuidlib.uuid4())
        xml = domain_xml(name, uuid, tenant, cid)
        await anyio.to_thread.run_sync(self.conn.createXML, xml, 0)
        self.made.append(uuid)
        return uuid

    async def destroy(self, uuid: str) -> None:
        dom = self.conn.lookupByUUIDString(uuid)
        await anyio.to_thread.run_sync(dom.destroy)

    def close(self) -> None:
        for uuid in self.made:
            try:
                self.conn.lookupByUUIDString(uuid).destroy()
            except lv.libvirtError:
                pass
        try:
            self.conn.close()
        except lv.libvirtError:
            pass


class CidHistory:
    """Who the table says a CID is, after every change of the table, with the time."""

    def __init__(self, table: InstanceTable, cid: int) -> None:
        self.table = table
        self.cid = cid
        self.seen: list[tuple[float, str | None]] = []
        table.subscribe(self._changed)

    def _changed(self, _change: Change) -> None:
        inst = self.table.resolve(vsock(self.cid))
        self.seen.append((time.monotonic(), inst.uuid if inst else None))

    def now(self) -> str | None:
        inst = self.table.resolve(vsock(self.cid))
        return inst.uuid if inst else None

    async def wait(self, uuid: str | None, timeout: float = 5.0) -> float:
        """Wait until the CID resolves to ``uuid``; returns when it first did."""
        with anyio.fail_after(timeout):
            while self.now() != uuid:
                await anyio.sleep(0.001)
        return next(t for t, u in reversed(self.seen) if u == uuid) if self.seen else 0.0

    def after(self, t: float) -> list[str | None]:
        return [u for when, u in self.seen if when >= t]


async def follow_until_cancelled(
    tg: anyio.abc.TaskGroup,
    table: InstanceTable,
    uri: str,
    interval: float,
    **kw: Any,
) -> libvirt.FollowStatus:
    status = libvirt.FollowStatus()
    tg.start_soon(lambda: libvirt.follow(table, uri, interval, status=status, **kw))
    return status


# --- in-process test driver -----------------------------------------------------------


@pytest.mark.anyio
async def test_in_process_driver_events_forget_a_stopped_cid_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """test:///default: A (CID 5, tenant t1) runs; A is destroyed and B (t2) gets CID 5.
    The table forgets A within milliseconds of the destroy and never resolves CID 5 to A
    again; B is learned as soon as it starts."""
    caplog.set_level("INFO", logger="vshare.gateway")
    table = InstanceTable()
    history = CidHistory(table, 5)
    domains = Domains("test:///default")
    try:
        async with anyio.create_task_group() as tg:
            # a long poll interval: whatever happens within it came from events
            status = await follow_until_cancelled(tg, table, "test:///default", 30.0)
            with anyio.fail_after(5):
                while status.mode != "events":
                    await anyio.sleep(0.005)
            a = await domains.start("tenant-one-vm", "t1", 5)
            await history.wait(a)
            inst = table.resolve(vsock(5))
            assert inst is not None and inst.tenant == "t1"

            t0 = time.monotonic()
            await domains.destroy(a)
            forgotten = await history.wait(None, timeout=1.0)
            b = await domains.start("tenant-two-vm", "t2", 5)
            learned = await history.wait(b, timeout=1.0)
            tg.cancel_scope.cancel()
        assert a not in history.after(forgotten)
        assert forgotten - t0 < 0.2, f"forgot CID 5 {1000 * (forgotten - t0):.1f} ms after destroy"
        assert learned > forgotten
        assert status.last_forget_lag is not None and status.last_forget_lag < 0.1
        assert (status.learned, status.forgotten, status.connects) == (2, 1, 1)
        # a CID nobody runs with is nobody
        assert table.resolve(vsock(6)) is None
        print(f"\nin-process: destroy → CID forgotten {1000 * (forgotten - t0):.2f} ms "
              f"(callback → table {1000 * status.last_forget_lag:.2f} ms)")  # fmt: skip
        assert f"forgot CID 5 of domain {a} (tenant-one-vm, tenant t1): stopped (destroyed)" in (
            caplog.text
        )
        assert f"learned CID 5 of domain {b} (tenant-two-vm, tenant t2): started" in caplog.text
    finally:
        domains.close()


@pytest.mark.anyio
async def test_claim_refuses_config_cids_while_libvirt_is_followed() -> None:
    """While libvirt is followed, a CID only libvirt vouches for counts: a config instance's
    CID resolves to nobody; its other identities (a socket) still resolve. The claim ends
    with the follower."""
    config_inst = Instance("cfg-1", "t9", cids=frozenset({7}), sockets=frozenset({"/run/x.vsock"}))
    table = InstanceTable([config_inst])
    assert table.resolve(vsock(7)) == config_inst
    async with anyio.create_task_group() as tg:
        status = await follow_until_cancelled(tg, table, "test:///default", 30.0)
        with anyio.fail_after(5):
            while status.mode != "events":
                await anyio.sleep(0.005)
        assert table.claimed_by("cid") == libvirt.SOURCE
        assert table.resolve(vsock(7)) is None
        assert table.resolve(PeerIdentity("hvsock", socket_path="/run/x.vsock")) == config_inst
        tg.cancel_scope.cancel()
    assert table.claimed_by("cid") is None
    assert table.resolve(vsock(7)) == config_inst


def test_a_start_with_a_known_cid_replaces_the_stale_owner() -> None:
    """If a stop was missed, the domain that starts with the CID wins (the old one goes)."""
    table = InstanceTable()
    old = Instance("aaaa", "t1", name="old", cids=frozenset({5}))
    new = Instance("bbbb", "t2", name="new", cids=frozenset({5}))
    table.add(old, libvirt.SOURCE)
    assert libvirt._learn(table, new, "started")
    assert table.resolve(vsock(5)) == new and table.get("aaaa") is None
    # another source's instance with that CID is never displaced: the new one is left out
    table2 = InstanceTable([Instance("cfg", "t3", cids=frozenset({5}))])
    assert not libvirt._learn(table2, new, "started")
    assert table2.get("bbbb") is None


# --- a real libvirtd ------------------------------------------------------------------


@pytest.mark.anyio
async def test_gateway_serves_a_reused_cid_as_the_new_domain(
    start_gateway: GatewayFactory,
    libvirtd: Libvirtd,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The issue's case through the gateway and libvirtd: A (CID 5, tenant t1) attached; A
    destroyed, B (t2) started with CID 5. CID 5 never resolves to A again, A's session is
    cut, B reaches only its own share, and an unknown CID reaches nothing."""
    caplog.set_level("INFO", logger="vshare.gateway")
    domains = Domains(libvirtd.uri)
    net = FakeVsockNet(Path(tempfile.mkdtemp(prefix="vs-", dir="/tmp")))
    monkeypatch.setattr(_vsock, "_vsock_socket", net.socket)
    a = await domains.start("tenant-one-vm", "t1", 5)
    b_uuid = str(uuidlib.uuid4())
    shares = (
        Share("one", "shares/alpha", access=(AccessRule("instance", a),)),
        Share("two", "shares/beta", access=(AccessRule("instance", b_uuid),)),
    )
    try:
        async with start_gateway(libvirt=libvirtd.uri, libvirt_poll=30.0, shares=shares) as gw:
            table = gw.gateway.instances
            history = CidHistory(table, 5)
            await gw.gateway.add_listener("vsock://any:564")
            await history.wait(a)  # the first list, on connecting
            net.guest_cid = 5
            async with open_client(await connect("vsock://2:564")) as c1:
                fid, _ = await c1.attach("one")
                await getattr_(c1, fid)

                t0 = time.monotonic()
                await domains.destroy(a)
                forgotten = await history.wait(None, timeout=1.0)
                # A's session ended with A
                with anyio.fail_after(5), pytest.raises(OSError):
                    while True:
                        await getattr_(c1, fid)
                        await anyio.sleep(0.01)

            xml = domain_xml("tenant-two-vm", b_uuid, "t2", 5)
            await anyio.to_thread.run_sync(domains.conn.createXML, xml, 0)
            domains.made.append(b_uuid)
            learned = await history.wait(b_uuid, timeout=1.0)
            async with open_client(await connect("vsock://2:564")) as c2:
                with pytest.raises(OSError) as info:
                    await c2.attach("one")
                assert info.value.errno == errno.EACCES
                fid, _ = await c2.attach("two")
                await getattr_(c2, fid)

            net.guest_cid = 9  # a CID libvirt does not know
            async with open_client(await connect("vsock://2:564")) as c3:
                for name in ("one", "two"):
                    with pytest.raises(OSError) as info:
                        await c3.attach(name)
                    assert info.value.errno == errno.EACCES
        assert a not in history.after(forgotten)
        assert history.after(forgotten)[:2] == [None, b_uuid]
        assert forgotten - t0 < 0.25, f"forgot CID 5 {1000 * (forgotten - t0):.1f} ms after destroy"
        assert learned - forgotten > 0
        print(f"\nlibvirtd: destroy → CID forgotten {1000 * (forgotten - t0):.2f} ms")
        assert f"forgot CID 5 of domain {a}" in caplog.text
    finally:
        domains.close()
        shutil.rmtree(net.dir, ignore_errors=True)


@pytest.mark.anyio
async def test_reconnects_after_libvirtd_restarts(libvirtd: Libvirtd) -> None:
    """libvirtd goes away: the follower notices (connection closed), keeps the last known
    domains, polls, and reconnects with a backoff when libvirtd is back, reading the list
    again (here the restarted test driver has none of the old domains)."""
    table = InstanceTable()
    history = CidHistory(table, 5)
    domains = Domains(libvirtd.uri)
    a = await domains.start("vm-a", "t1", 5)
    async with anyio.create_task_group() as tg:
        status = await follow_until_cancelled(tg, table, libvirtd.uri, 0.5)
        await history.wait(a)
        assert status.mode == "events"

        await anyio.to_thread.run_sync(libvirtd.stop)
        domains.made.clear()
        with anyio.fail_after(5):
            while status.mode != "polling":
                await anyio.sleep(0.01)
        assert history.now() == a  # kept: nothing can start without libvirtd
        await anyio.sleep(1.0)  # a few reconnects fail meanwhile

        t0 = time.monotonic()
        await anyio.to_thread.run_sync(libvirtd.start)
        back = await history.wait(None, timeout=5.0)
        assert status.connects == 2 and status.mode == "events"
        assert back - t0 < 3.0  # the daemon's start, then at most one backoff (0.5 s)

        domains = Domains(libvirtd.uri)
        b = await domains.start("vm-b", "t2", 5)
        await history.wait(b, timeout=1.0)
        tg.cancel_scope.cancel()
    domains.close()


@pytest.mark.anyio
async def test_polling_fallback_without_the_binding(libvirtd: Libvirtd) -> None:
    """Without libvirt-python, ``virsh`` polls libvirtd every interval: slower, but the CID
    is still forgotten within one interval and attaches from it are then refused."""
    if shutil.which("virsh") is None:
        pytest.skip("needs virsh (Debian libvirt-clients)")
    table = InstanceTable()
    history = CidHistory(table, 5)
    domains = Domains(libvirtd.uri)
    try:
        async with anyio.create_task_group() as tg:
            status = await follow_until_cancelled(tg, table, libvirtd.uri, 0.3, binding=None)
            a = await domains.start("vm-a", "t1", 5)
            await history.wait(a, timeout=3.0)
            assert status.mode == "polling"
            t0 = time.monotonic()
            await domains.destroy(a)
            forgotten = await history.wait(None, timeout=3.0)
            tg.cancel_scope.cancel()
        assert forgotten - t0 < 1.5
    finally:
        domains.close()
