"""Real processes for the FUSE tests: a gateway (``vshare gateway run``) and a mount
(``python -m vshare.fuse``), each a subprocess stopped by PID, the mount unmounted in
``finally`` whatever the test did. Needs root and /dev/fuse."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fuse.relay import Relay
from tests.processes import kill, stop, wait_for
from vshare.fuse import is_mounted
from vshare.testing.processes import free_port

VENV_BIN = Path(sys.executable).parent

if not os.path.exists("/dev/fuse") or os.geteuid() != 0 or shutil.which("fusermount3") is None:
    pytest.skip("FUSE tests need root, /dev/fuse and fusermount3", allow_module_level=True)


@dataclass
class GatewayProc:
    sock: Path
    volume: Path
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"unix://{self.sock}"

    def share_dir(self, name: str) -> Path:
        return self.volume / "shares" / name

    def start(self) -> None:
        if self.sock.exists():
            self.sock.unlink()  # left by a SIGKILLed gateway
        self.proc = subprocess.Popen(
            self.argv(),
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
            umask=self.process_umask(),
        )
        proc = self.proc
        wait_for(lambda: self.sock.exists() or proc.poll() is not None, 20, "gateway start")
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited: {self.log.read_text()[-2000:]}")

    def argv(self) -> list[str]:
        return [
            str(VENV_BIN / "vshare"),
            "gateway",
            "run",
            "--listen",
            self.uri,
            "--backend",
            f"posix:{self.volume}",
            "--config",
            str(self.config),
        ]

    def process_umask(self) -> int:
        """The gateway process's umask: -1 keeps ours."""
        return -1

    def kill(self) -> None:
        kill(self.proc)
        self.proc = None

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None


@pytest.fixture
def gateway_proc(tmp_path: Path) -> Iterator[GatewayProc]:
    vol = tmp_path / "vol"
    for name in ("alpha", "beta"):
        (vol / "shares" / name).mkdir(parents=True)
    (vol / "shares" / "beta" / "readme.txt").write_text("read only\n")
    uid = os.getuid()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""
[[share]]
name = "alpha"
path = "shares/alpha"
access = [{{ type = "user", to = "{uid}" }}]

[[share]]
name = "beta"
path = "shares/beta"
access = [{{ type = "user", to = "{uid}", level = "ro" }}]
"""
    )
    gw = GatewayProc(tmp_path / "gw.sock", vol, config, tmp_path / "gateway.log")
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


@dataclass
class Mount:
    path: Path
    proc: subprocess.Popen[bytes]
    log: Path
    extra: list[str] = field(default_factory=list)

    def stderr(self) -> str:
        return self.log.read_text()


def force_unmount(path: Path) -> None:
    if is_mounted(str(path)):
        subprocess.run(["fusermount3", "-u", str(path)], capture_output=True, check=False)
    if is_mounted(str(path)):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


MountFactory = Callable[..., Mount]


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[MountFactory]:
    """``mount(uri, share, cache="auto", *extra_args) -> Mount``: mounted, or raises."""
    made: list[Mount] = []

    def make(
        uri: str, share: str = "alpha", cache: str = "auto", *extra: str, expect_fail: bool = False
    ) -> Mount:
        mnt = tmp_path / f"mnt{len(made)}"
        mnt.mkdir()
        log = tmp_path / f"mount{len(made)}.log"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vshare.fuse",
                uri,
                share,
                str(mnt),
                "--cache",
                cache,
                "--foreground",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        m = Mount(mnt, proc, log, list(extra))
        made.append(m)
        if expect_fail:
            proc.wait(30)
            return m
        wait_for(lambda: is_mounted(str(mnt)) or proc.poll() is not None, 30, "mount")
        if proc.poll() is not None:
            raise RuntimeError(f"mount failed: {log.read_text()}")
        return m

    try:
        yield make
    finally:
        for m in made:
            force_unmount(m.path)
            try:
                m.proc.wait(10)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait()


@dataclass
class TunedGateway(GatewayProc):
    """A gateway started with its own settings: a Prometheus endpoint on ``metrics_port``
    (when set) and the process umask ``umask`` (when set)."""

    metrics_port: int | None = None
    umask: int | None = None

    def start(self) -> None:
        super().start()
        if self.metrics_port is not None:
            wait_for(lambda: _port_open(self.metrics_port or 0), 20, "gateway metrics endpoint")

    def argv(self) -> list[str]:
        if self.metrics_port is None:
            return super().argv()
        return [*super().argv(), "--metrics", f"127.0.0.1:{self.metrics_port}"]

    def process_umask(self) -> int:
        return -1 if self.umask is None else self.umask


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


GatewayFactory = Callable[..., TunedGateway]


@pytest.fixture
def gateway_with(tmp_path: Path) -> Iterator[GatewayFactory]:
    """``gateway_with(ownership="squash", metrics=False, umask=None, size_gib=None,
    settings="") -> TunedGateway``: a started gateway serving share ``alpha`` (rw to this
    uid) from its own volume; ``settings``: more top-level TOML lines."""
    made: list[TunedGateway] = []

    def make(
        ownership: str = "squash",
        metrics: bool = False,
        umask: int | None = None,
        size_gib: int | None = None,
        settings: str = "",
    ) -> TunedGateway:
        base = tmp_path / f"gw{len(made)}"
        vol = base / "vol"
        (vol / "shares" / "alpha").mkdir(parents=True)
        config = base / "gateway.toml"
        config.write_text(
            f'ownership = "{ownership}"\n{settings}\n'
            "[[share]]\n"
            'name = "alpha"\n'
            'path = "shares/alpha"\n'
            f'access = [{{ type = "user", to = "{os.getuid()}" }}]\n'
            + (f"size_gib = {size_gib}\n" if size_gib is not None else "")
        )
        gw = TunedGateway(
            base / "gw.sock",
            vol,
            config,
            base / "gateway.log",
            metrics_port=free_port() if metrics else None,
            umask=umask,
        )
        made.append(gw)
        gw.start()
        return gw

    try:
        yield make
    finally:
        for gw in made:
            gw.stop()


@pytest.fixture
def relay(gateway_proc: GatewayProc, tmp_path: Path) -> Iterator[Relay]:
    """Ask for it before ``mount``: it then ends after the mounts through it."""
    r = Relay(tmp_path / "relay.sock", gateway_proc.sock)
    yield r
    r.close()
