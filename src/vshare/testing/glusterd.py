"""A real glusterd for tests and benchmarks: a private daemon, single-brick volumes, FUSE mounts.

Everything here runs the Debian ``glusterfs-server`` programs (``glusterd``, ``gluster``,
``mount -t glusterfs``) as they are, the recipe of ``ENVIRONMENT.md``:

- :func:`glusterd` starts ``glusterd -N`` in a temporary working directory of its own (copied
  ``glusterd.vol`` with ``working-directory``, ``transport.socket.bind-address`` on a loopback
  address, its own CLI socket; ``groups``/``hooks`` copied from ``/var/lib/glusterd``), waits
  until its CLI answers, and on exit SIGTERMs it *by its PID* (SIGKILL after a grace period).
- :meth:`Glusterd.volume` creates and starts a single-brick volume, waits until the brick is
  online, and on exit stops and deletes it; a brick process that survives ``volume stop`` is
  killed by the PID glusterd reported for it.
- :func:`gluster_volume` is the two together: the one call most users want.
- :func:`fuse_mount` mounts a volume with the native FUSE client (the peer to benchmark
  against) and unmounts it on exit, killing that mount's client process by PID if it lingers.

Teardown runs in the documented order (unmount clients, ``volume stop``, ``volume delete``,
SIGTERM glusterd) on every exit, a failing test or a KeyboardInterrupt included. Nothing is
found or killed by name.

Example (what the benchmark harness needs)::

    from vshare.testing.glusterd import fuse_mount, gluster_volume

    with gluster_volume("bench") as vol:          # GlusterVolume
        backend = open_backend(vol.uri)            # gluster://127.0.1.1:24007/bench
        with fuse_mount(vol, "/tmp/mnt") as mnt:   # the native client, for comparison
            ...
        backend.close()                            # glfs_fini (~10 s): before the volume goes

Limits: root only (glusterd and FUSE need it). Gluster still writes to ``/var/run/gluster``
and ``/var/log/glusterfs`` (brick pid files and logs, named after the volume and brick; the
volume's are removed at teardown; gfapi clients log there too unless given a log file), so
two daemons
on one machine need different volume names, and different loopback addresses (chosen
automatically: see :func:`glusterd`). A brick directory cannot be reused once a volume used it; each
volume gets a fresh one under the daemon's working directory, removed with it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = [
    "DEFAULT_HOST",
    "GlusterError",
    "GlusterVolume",
    "Glusterd",
    "available",
    "fuse_mount",
    "gluster_volume",
    "glusterd",
]

#: The loopback address glusterd and the bricks bind to by default. The gluster CLI refuses
#: ``localhost`` and ``127.0.0.1`` as a brick host; 127.0.1.1 (loopback: all of 127/8 is) works.
DEFAULT_HOST: Final = "127.0.1.1"
DEFAULT_PORT: Final = 24007
_GLUSTERD_VOL: Final = Path("/etc/glusterfs/glusterd.vol")
_GLUSTERD_STATE: Final = Path("/var/lib/glusterd")
_BRICK_RUN_DIR: Final = Path("/var/run/gluster/vols")
_LOG_DIR: Final = Path("/var/log/glusterfs")
_BRICK_LOG_DIR: Final = _LOG_DIR / "bricks"


class GlusterError(RuntimeError):
    """A gluster command failed or a daemon did not come up; the message says which."""


def available() -> str | None:
    """None if this machine can run :func:`glusterd`, else why not (for ``pytest.skip``)."""
    missing = [p for p in ("glusterd", "gluster", "glusterfsd") if shutil.which(p) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (Debian glusterfs-server)"
    if os.geteuid() != 0:
        return "glusterd needs root"
    if not _GLUSTERD_VOL.exists():
        return f"{_GLUSTERD_VOL} is missing"
    return None


@dataclass(frozen=True)
class GlusterVolume:
    """A started volume: where to reach it, and its brick on this machine.

    Attributes:
        host: the address clients use (glusterd's bind address).
        port: glusterd's port, where clients fetch the volume file.
        name: the volume name.
        brick: the brick directory. The backing store itself: writing here bypasses
            gluster (tests use it only to read what the volume holds).
        daemon: the glusterd serving it.
    """

    host: str
    port: int
    name: str
    brick: Path
    daemon: Glusterd = field(repr=False, compare=False)

    @property
    def uri(self) -> str:
        """The vshare backend URI: ``gluster://HOST:PORT/VOLUME``."""
        return f"gluster://{self.host}:{self.port}/{self.name}"

    @property
    def brick_pids(self) -> list[int]:
        """PIDs of this volume's brick processes (``glusterfsd``), as glusterd reports them."""
        return self.daemon.brick_pids(self.name)


class Glusterd:
    """A running glusterd started by :func:`glusterd`. Use :meth:`cli` and :meth:`volume`."""

    def __init__(self, workdir: Path, host: str, port: int, base_port: int) -> None:
        self.workdir = workdir
        self.host = host
        self.port = port
        self.base_port = base_port
        self.sockfile = workdir / "glusterd.socket"
        self.log = workdir / "glusterd.log"
        self.pidfile = workdir / "glusterd.pid"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """glusterd's PID while it runs."""
        return None if self.process is None else self.process.pid

    def cli(self, *args: str, timeout: float = 120.0, check: bool = True) -> str:
        """Run ``gluster --mode=script ARGS`` against this daemon; its stdout.

        Raises:
            GlusterError: a non-zero exit (with ``check``), or a timeout.
        """
        cmd = ["gluster", "--mode=script", f"--glusterd-sock={self.sockfile}", *args]
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise GlusterError(f"{' '.join(args)}: no answer in {timeout:.0f} s") from exc
        out = done.stdout.decode(errors="replace")
        if check and done.returncode != 0:
            err = (done.stderr.decode(errors="replace") + out).strip()
            raise GlusterError(f"gluster {' '.join(args)}: {err or f'exit {done.returncode}'}")
        return out

    def brick_pids(self, volume: str) -> list[int]:
        """The brick PIDs of ``volume`` from ``volume status --xml`` (empty if it is not
        started or glusterd does not answer)."""
        try:
            xml = self.cli("volume", "status", volume, "--xml", timeout=30, check=False)
            root = ET.fromstring(xml)
        except (GlusterError, ET.ParseError):
            return []
        pids = []
        for node in root.iter("node"):
            text = node.findtext("pid") or ""
            if text.isdigit() and int(text) > 0:
                pids.append(int(text))
        return pids

    def _brick_online(self, volume: str) -> bool:
        try:
            root = ET.fromstring(self.cli("volume", "status", volume, "--xml", check=False))
        except (GlusterError, ET.ParseError):
            return False
        nodes = list(root.iter("node"))
        return bool(nodes) and all(n.findtext("status") == "1" for n in nodes)

    @contextlib.contextmanager
    def volume(
        self, name: str = "vshare", *, options: Mapping[str, str] | None = None
    ) -> Iterator[GlusterVolume]:
        """Create and start a single-brick volume; stop and delete it on exit.

        Args:
            name: the volume name (also names its pid files under ``/var/run/gluster``).
            options: ``gluster volume set`` options applied before the start.

        Raises:
            GlusterError: creating or starting it failed, or its brick did not come online
                within 60 s.
        """
        brick = self.workdir / "bricks" / name
        brick.mkdir(parents=True)
        self.cli("volume", "create", name, f"{self.host}:{brick}", "force")
        pids: list[int] = []
        try:
            for key, value in (options or {}).items():
                self.cli("volume", "set", name, key, value)
            self.cli("volume", "start", name)
            deadline = time.monotonic() + 60
            while not self._brick_online(name):
                if time.monotonic() > deadline:
                    raise GlusterError(f"volume {name}: the brick is not online after 60 s")
                time.sleep(0.2)
            pids = self.brick_pids(name)
            yield GlusterVolume(self.host, self.port, name, brick, self)
        finally:
            pids = pids or self.brick_pids(name)
            with contextlib.suppress(GlusterError):
                self.cli("volume", "stop", name, "force", timeout=120)
            for pid in pids:  # a brick that outlived "volume stop"
                _kill_pid(pid)
            with contextlib.suppress(GlusterError):
                self.cli("volume", "delete", name, timeout=120)
            # what glusterd leaves behind for this brick outside its working directory
            shutil.rmtree(_BRICK_RUN_DIR / name, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.unlink(_BRICK_LOG_DIR / (str(brick).strip("/").replace("/", "-") + ".log"))

    def stop(self) -> None:
        """SIGTERM glusterd by PID, SIGKILL after 15 s. Idempotent."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)


def _kill_pid(pid: int, grace: float = 10.0) -> None:
    """SIGTERM ``pid`` if it is alive, SIGKILL after ``grace`` seconds."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _free_host() -> str:
    """The first of 127.0.1.1, 127.0.1.2, ... whose port 24007 is free."""
    for last in range(1, 255):
        host = f"127.0.1.{last}"
        if not _port_in_use(host, DEFAULT_PORT):
            return host
    raise GlusterError("127.0.1.1 to 127.0.1.254: port 24007 is taken on every one")


def _glusterd_vol(workdir: Path, host: str, port: int, base_port: int, sockfile: Path) -> str:
    ours = {
        "working-directory": str(workdir),
        "transport.socket.bind-address": host,
        "transport.socket.listen-port": str(port),
        "glusterd-sockfile": str(sockfile),
        "base-port": str(base_port),
    }
    lines = []
    for line in _GLUSTERD_VOL.read_text().splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "option" and words[1] in ours:
            continue
        if words == ["end-volume"]:
            lines += [f"    option {key} {value}" for key, value in ours.items()]
        lines.append(line)
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def glusterd(
    base_dir: str | os.PathLike[str] | None = None,
    *,
    host: str | None = None,
    base_port: int = 49152,
    keep_workdir: bool = False,
) -> Iterator[Glusterd]:
    """Start a private glusterd; stop it by PID on exit.

    Args:
        base_dir: where its temporary working directory goes (default: the system temp dir).
            Bricks are made inside that working directory.
        host: the loopback address it and its bricks bind to. None: 127.0.1.1 when its port
            24007 is free, else the first of 127.0.1.2, 127.0.1.3, ... that is (so that two
            daemons, e.g. a test session and a benchmark, can run at once). The port is
            always 24007: brick processes fetch their volume file from port 24007 of the
            brick's host, whatever glusterd listens on.
        base_port: the first port bricks may take.
        keep_workdir: leave the working directory (logs, bricks) for a post-mortem.

    Raises:
        GlusterError: glusterd is not installed, ``host``:24007 is taken (another
            glusterd?), or it did not answer within 30 s (its log is quoted).
    """
    why = available()
    if why is not None:
        raise GlusterError(why)
    port = DEFAULT_PORT
    if host is None:
        host = _free_host()
    elif _port_in_use(host, port):
        raise GlusterError(f"{host}:{port} is in use: another glusterd?")
    workdir = Path(tempfile.mkdtemp(prefix="vshare-glusterd-", dir=base_dir))
    daemon = Glusterd(workdir, host, port, base_port)
    try:
        for sub in ("groups", "hooks"):
            if (_GLUSTERD_STATE / sub).is_dir():
                shutil.copytree(_GLUSTERD_STATE / sub, workdir / sub, symlinks=True)
        volfile = workdir / "glusterd.vol"
        volfile.write_text(_glusterd_vol(workdir, host, port, base_port, daemon.sockfile))
        with open(workdir / "glusterd.out", "wb") as out:
            daemon.process = subprocess.Popen(
                [
                    "glusterd",
                    "-N",
                    "-f",
                    str(volfile),
                    "-l",
                    str(daemon.log),
                    "-p",
                    str(daemon.pidfile),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while True:
            if daemon.process.poll() is not None:
                raise GlusterError(
                    f"glusterd exited ({daemon.process.returncode}): {_tail(daemon)}"
                )
            with contextlib.suppress(GlusterError):
                daemon.cli("volume", "list", timeout=10)
                break
            if time.monotonic() > deadline:
                raise GlusterError(f"glusterd did not answer within 30 s: {_tail(daemon)}")
            time.sleep(0.2)
        yield daemon
    finally:
        daemon.stop()
        if not keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def _tail(daemon: Glusterd, lines: int = 5) -> str:
    try:
        text = daemon.log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:])


@contextlib.contextmanager
def gluster_volume(
    name: str = "vshare",
    base_dir: str | os.PathLike[str] | None = None,
    *,
    options: Mapping[str, str] | None = None,
    host: str | None = None,
) -> Iterator[GlusterVolume]:
    """:func:`glusterd` plus one started :meth:`Glusterd.volume`; both torn down on exit.
    Arguments as for those two."""
    with (
        glusterd(base_dir, host=host) as daemon,
        daemon.volume(name, options=options) as vol,
    ):
        yield vol


def _mount_client_pids(mountpoint: Path) -> list[int]:
    """PIDs of processes whose command line holds ``mountpoint`` as one argument (the FUSE
    client of that mount: ``glusterfs ... MOUNTPOINT``)."""
    want = os.fsencode(mountpoint)
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if want in args and args[0].endswith(b"glusterfs"):
            pids.append(int(entry))
    return pids


@contextlib.contextmanager
def fuse_mount(
    volume: GlusterVolume, mountpoint: str | os.PathLike[str], *, options: str = ""
) -> Iterator[Path]:
    """Mount ``volume`` with the native client (``mount -t glusterfs``) at ``mountpoint``
    (made if missing); unmount on exit, kill that mount's client process by PID if it is
    still there after the unmount, and remove its log (``/var/log/glusterfs/<mount>.log``).

    Args:
        options: extra ``-o`` options for mount.glusterfs (comma-separated).

    Raises:
        GlusterError: the mount failed (mount's message is quoted).
    """
    point = Path(mountpoint).absolute()
    point.mkdir(parents=True, exist_ok=True)
    cmd = ["mount", "-t", "glusterfs", *(["-o", options] if options else [])]
    cmd += [f"{volume.host}:/{volume.name}", str(point)]
    done = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    if done.returncode != 0 or not os.path.ismount(point):
        pids = _mount_client_pids(point)
        for pid in pids:
            _kill_pid(pid)
        msg = (done.stderr + done.stdout).decode(errors="replace").strip()
        raise GlusterError(f"mount -t glusterfs {volume.name} at {point}: {msg or 'not mounted'}")
    pids = _mount_client_pids(point)
    try:
        yield point
    finally:
        done = subprocess.run(["umount", str(point)], capture_output=True, timeout=60, check=False)
        if done.returncode != 0 and os.path.ismount(point):
            subprocess.run(
                ["umount", "-l", str(point)], capture_output=True, timeout=60, check=False
            )
        for pid in pids:
            _kill_pid(pid)
        with contextlib.suppress(OSError):  # the client's log, named after the mount point
            os.unlink(_LOG_DIR / (str(point).strip("/").replace("/", "-") + ".log"))
