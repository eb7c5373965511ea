"""A fleet on one machine: one real etcd (:class:`EtcdServer`), one POSIX volume, one share
with one rule, and several ``vshare gateway run --store etcd://...`` processes, each on its
own Unix socket (or loopback TCP port) with its own metrics endpoint, as gateways on
several hypervisors would be. Every process is started in a temporary directory and
stopped by its PID in ``finally``."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.processes import VSHARE, free_port, kill, stop, wait_for
from vshare.store import RuleRecord, ShareRecord, ShareStatus
from vshare.store.etcd import EtcdStore
from vshare.testing.etcd import EtcdServer, etcd_binary
from vshare.testing.store_conformance import make_rule, make_share

pytestmark = pytest.mark.etcd
if etcd_binary() is None:
    pytest.skip("needs etcd (Debian etcd-server)", allow_module_level=True)


@dataclass
class GatewayProc:
    """One ``vshare gateway run`` process of the fleet."""

    name: str
    listen: str  # unix:///.../gwN.sock or tcp://127.0.0.x:port
    backend: str
    store: str
    metrics_port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return self.listen

    @property
    def sock(self) -> Path | None:
        return Path(self.listen[len("unix://") :]) if self.listen.startswith("unix://") else None

    def start(self) -> None:
        if self.sock is not None and self.sock.exists():
            self.sock.unlink()  # left by a SIGKILLed gateway
        self.proc = subprocess.Popen(
            [VSHARE, "gateway", "run", "--listen", self.listen, "--backend", self.backend,
             "--store", self.store, "--metrics", f"127.0.0.1:{self.metrics_port}"],
            stdout=subprocess.DEVNULL, stderr=self.log.open("ab"),
            env={**os.environ, "VSHARE_GATEWAY_ID": self.name},
        )  # fmt: skip
        proc = self.proc
        wait_for(lambda: self.listening() or proc.poll() is not None, 30, "start")
        if proc.poll() is not None:
            raise RuntimeError(f"gateway {self.name} exited: {self.log.read_text()[-2000:]}")

    def listening(self) -> bool:
        """Both the 9P listener and the metrics endpoint answer."""
        if self.metrics() is None:
            return False
        if self.sock is not None:
            return self.sock.exists()
        host, _, port = self.listen[len("tcp://") :].rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except OSError:
            return False
        return True

    def metrics(self) -> dict[str, float] | None:
        """The gateway's Prometheus samples (unlabelled ones), or None if it does not
        answer."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=1).text
        except httpx.HTTPError:
            return None
        out = {}
        for m in re.finditer(r"^([a-z_]+) ([0-9.e+-]+)$", text, re.M):
            out[m.group(1)] = float(m.group(2))
        return out

    def sessions(self) -> int:
        samples = self.metrics()
        return -1 if samples is None else int(samples.get("vshare_sessions", 0))

    def kill(self) -> None:
        """SIGKILL by PID: nothing is flushed, closed or deregistered."""
        kill(self.proc)
        self.proc = None

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None


@dataclass
class Fleet:
    etcd: EtcdServer
    store_uri: str
    control: EtcdStore  # the control plane's view (as the API would hold it)
    volume: Path
    workdir: Path
    share: ShareRecord
    rule: RuleRecord
    gateways: list[GatewayProc] = field(default_factory=list)

    @property
    def share_dir(self) -> Path:
        return self.volume / "shares" / self.share.name

    @property
    def uris(self) -> list[str]:
        return [g.uri for g in self.gateways]

    def add_gateway(self, listen: str | None = None) -> GatewayProc:
        n = len(self.gateways)
        gw = GatewayProc(
            name=f"gw-{n}", listen=listen or f"unix://{self.workdir}/gw{n}.sock",
            backend=f"posix:{self.volume}", store=self.store_uri, metrics_port=free_port(),
            log=self.workdir / f"gw{n}.log",
        )  # fmt: skip
        self.gateways.append(gw)
        gw.start()
        return gw

    def serving(self) -> list[GatewayProc]:
        """The gateways with at least one session."""
        return [g for g in self.gateways if g.sessions() > 0]


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    with EtcdServer() as server:
        yield server


@pytest.fixture
def fleet(etcd: EtcdServer) -> Iterator[Fleet]:
    """Etcd, a volume with share ``docs`` (rw for this uid by a ``user`` rule), no gateway
    yet: tests add them with :meth:`Fleet.add_gateway`."""
    workdir = Path(tempfile.mkdtemp(prefix="vs-fleet-", dir="/tmp"))  # short socket paths
    prefix = f"fleet-{uuid.uuid4().hex[:8]}"
    control = EtcdStore([etcd.endpoint], prefix=f"/{prefix}/")
    volume = workdir / "vol"
    (volume / "shares" / "docs").mkdir(parents=True)
    share = control.create_share(
        make_share("docs", status=ShareStatus.AVAILABLE, backend=f"posix:{volume}",
                   path="shares/docs")
    )  # fmt: skip
    rule = control.add_rule(make_rule(share.id, str(os.getuid()), access_type="user"))
    f = Fleet(etcd, f"etcd://{etcd.endpoint}/{prefix}", control, volume, workdir, share, rule)
    try:
        yield f
    finally:
        for g in f.gateways:
            g.stop()
        control.close()
        shutil.rmtree(workdir, ignore_errors=True)
