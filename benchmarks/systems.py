"""The systems `compare.py` puts side by side, each serving the same directory.

Every system is a context manager that takes the :class:`Rig` (one export directory on
this machine's disk, shared by all) and yields the directory where the workloads run: the
export itself for the local baseline, a FUSE mount point for the others. Each starts its
own processes in the rig's scratch directory, on loopback, and stops them by PID on exit,
also when a workload fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vshare.fuse import is_mounted
from vshare.testing.glusterd import GlusterVolume, fuse_mount
from vshare.testing.processes import free_port, stop, wait_for

VSHARE = str(Path(sys.executable).parent / "vshare")


@dataclass
class Rig:
    """Where everything lives: ``volume/export`` is the directory every system serves.

    The GlusterFS pair serves ``export`` of a volume instead (same layout, same data):
    ``gluster`` is that volume and ``gluster_staging`` a native mount of it that
    ``compare.py`` prepares the data through, both set when a gluster system runs.
    """

    root: Path
    gluster: GlusterVolume | None = None
    gluster_staging: Path | None = None

    @property
    def volume(self) -> Path:
        return self.root / "volume"

    @property
    def export(self) -> Path:
        return self.volume / "export"

    def scratch(self, name: str) -> Path:
        path = self.root / "run" / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@contextlib.contextmanager
def process(argv: list[str], log: Path, **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` for the duration of the block; SIGTERM (then SIGKILL) by PID after."""
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, **kwargs)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        stop(proc, grace=15)


@contextlib.contextmanager
def fuse_mounted(mountpoint: Path, argv: list[str], log: Path) -> Iterator[Path]:
    """Run a mount command that returns once the FUSE mount is up; unmount after."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        done = subprocess.run(argv, stdout=out, stderr=out, check=False, timeout=120)
    if done.returncode != 0 or not is_mounted(str(mountpoint)):
        said = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{Path(argv[0]).name} mount failed (exit {done.returncode}): "
                           + " / ".join(said))  # fmt: skip
    try:
        yield mountpoint
    finally:
        for _ in range(50):
            if not is_mounted(str(mountpoint)):
                break
            subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True, check=False)
            time.sleep(0.1)
        else:
            lazy = ["fusermount3", "-uz", str(mountpoint)]
            subprocess.run(lazy, capture_output=True, check=False)


@contextlib.contextmanager
def local(rig: Rig) -> Iterator[Path]:
    """The export directory itself: the limit every other system is measured against."""
    yield rig.export


@contextlib.contextmanager
def gateway(
    rig: Rig,
    run_name: str,
    backend: str = "",
    *,
    share_cache: str | None = None,
    cache_memory_mib: int | None = None,
    metrics_port: int | None = None,
    more_shares: Mapping[str, str | None] | None = None,
) -> Iterator[Path]:
    """A vshare gateway serving the share ``bench`` (``export`` of the volume) on a Unix
    socket, whose path it yields; POSIX backend on the rig's volume unless ``backend``.

    ``share_cache`` (none|meta|all) and ``cache_memory_mib`` are written to its config
    only when given (older gateways refuse keys they do not know); ``metrics_port`` serves
    its Prometheus metrics on 127.0.0.1; ``more_shares`` (name → cache mode or None) are
    more shares of the same directory."""
    run = rig.scratch(run_name)
    sock = run / "gw.sock"
    sock.unlink(missing_ok=True)
    config = run / "gateway.toml"
    shares = "".join(
        f'[[share]]\nname = "{name}"\npath = "export"\n'
        + (f'cache = "{mode}"\n' if mode is not None else "")
        + f'access = [{{ type = "user", to = "{os.getuid()}" }}]\n'
        for name, mode in {"bench": share_cache, **(more_shares or {})}.items()
    )
    config.write_text(
        f'listen = ["unix://{sock}"]\nbackend = "{backend or f"posix:{rig.volume}"}"\n'
        + (f'metrics = "127.0.0.1:{metrics_port}"\n' if metrics_port is not None else "")
        + (f"cache_memory_mib = {cache_memory_mib}\n" if cache_memory_mib is not None else "")
        + shares
    )
    argv = [VSHARE, "gateway", "run", "--config", str(config)]
    with process(argv, run / "gateway.log") as gw:
        wait_for(lambda: sock.exists() or gw.poll() is not None, 30, "vshare gateway")
        if gw.poll() is not None:
            raise RuntimeError(f"the gateway exited; see {run / 'gateway.log'}")
        yield sock


@contextlib.contextmanager
def vshare_gateway(rig: Rig, cache: str = "auto", backend: str = "", **gw: Any) -> Iterator[Path]:
    """The vshare FUSE client (its ``--cache`` mode: ``cache``) → the vshare gateway over a
    Unix socket, POSIX backend (or ``backend``); ``gw``: more arguments of :func:`gateway`."""
    name = "vshare-gateway" if not backend else "vshare-gateway-2"
    if cache != "auto":  # a system of its own (compare.py starts them all at once)
        name += f"-{cache}"
    with gateway(rig, name, backend, **gw) as sock:
        run = sock.parent
        mount = [VSHARE, "mount", f"unix://{sock}", "bench", str(run / "mnt"), "--cache", cache]
        with fuse_mounted(run / "mnt", mount, run / "mount.log") as mnt:
            yield mnt


@contextlib.contextmanager
def vshare_coherent(rig: Rig) -> Iterator[Path]:
    """The same with ``--cache coherent``: ``always``'s hour-long caching, kept right by
    the gateway's change feed (docs/changes-feed.md)."""
    with vshare_gateway(rig, "coherent") as mnt:
        yield mnt


@contextlib.contextmanager
def vshare_diod(rig: Rig) -> Iterator[Path]:
    """The same vshare FUSE client → diod (a 9P2000.L server in C) over loopback TCP."""
    run = rig.scratch("vshare-diod")
    port = free_port()
    argv = ["diod", "-f", "-n", "-l", f"127.0.0.1:{port}", "-e", str(rig.export),
            "-c", "/dev/null", "-L", str(run / "diod.log")]  # fmt: skip
    with process(argv, run / "diod.out") as diod:
        wait_for(lambda: _accepts(port) or diod.poll() is not None, 30, "diod")
        if diod.poll() is not None:
            raise RuntimeError(f"diod exited; see {run / 'diod.log'}")
        mount = [VSHARE, "mount", f"tcp://127.0.0.1:{port}", str(rig.export), str(run / "mnt")]
        with fuse_mounted(run / "mnt", mount, run / "mount.log") as mnt:
            yield mnt


@contextlib.contextmanager
def sshfs(rig: Rig) -> Iterator[Path]:
    """sshfs (FUSE, SFTP) → OpenSSH's sshd on loopback, with their default options."""
    run = rig.scratch("sshfs")
    key = run / "id_ed25519"
    host_key = run / "host_ed25519"
    for path in (key, host_key):
        if not path.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                           check=True)  # fmt: skip
    shutil.copy(f"{key}.pub", run / "authorized_keys")
    port = free_port()
    config = run / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1:{port}\nHostKey {host_key}\nPidFile {run / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {run / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nUsePAM no\nStrictModes no\n"
        "Subsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    with process(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], run / "sshd.log") as sshd:
        wait_for(lambda: _accepts(port) or sshd.poll() is not None, 30, "sshd")
        if sshd.poll() is not None:
            raise RuntimeError(f"sshd exited; see {run / 'sshd.log'}")
        mount = [
            "sshfs", f"root@127.0.0.1:{rig.export}", str(run / "mnt"), "-p", str(port), "-o",
            f"IdentityFile={key},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,"
            "BatchMode=yes,LogLevel=ERROR",
        ]  # fmt: skip
        with fuse_mounted(run / "mnt", mount, run / "mount.log") as mnt:
            yield mnt


@contextlib.contextmanager
def vshare_gluster(rig: Rig, cache: str = "auto", **gw: Any) -> Iterator[Path]:
    """The vshare FUSE client → the vshare gateway → GlusterFS through libgfapi (no FUSE
    mount on the gateway's side). Arguments as for :func:`vshare_gateway`."""
    assert rig.gluster is not None, "compare.py starts the volume first"
    with vshare_gateway(rig, cache, backend=rig.gluster.uri, **gw) as mnt:
        yield mnt


@contextlib.contextmanager
def gluster_native(rig: Rig) -> Iterator[Path]:
    """GlusterFS's own FUSE client (``mount -t glusterfs``), default volume options."""
    assert rig.gluster is not None, "compare.py starts the volume first"
    with fuse_mount(rig.gluster, rig.scratch("gluster-native") / "mnt") as mnt:
        yield mnt / "export"


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


#: name → (what it is, its context manager)
SYSTEMS: dict[str, tuple[str, Callable[[Rig], contextlib.AbstractContextManager[Path]]]] = {
    "local": ("the export directory itself (ext4, page cache)", local),
    "vshare": ("vshare FUSE client → vshare gateway, Unix socket", vshare_gateway),
    "vshare-coherent": ("the same, --cache coherent (the change feed)", vshare_coherent),
    "vshare-diod": ("vshare FUSE client → diod, loopback TCP", vshare_diod),
    "sshfs": ("sshfs → sshd, loopback", sshfs),
    "vshare-gluster": ("vshare FUSE client → vshare gateway → GlusterFS via libgfapi",
                       vshare_gluster),
    "gluster-native": ("GlusterFS native FUSE client (mount -t glusterfs)", gluster_native),
}  # fmt: skip
#: Systems that serve the GlusterFS volume rather than the local export.
GLUSTER_SYSTEMS = ("vshare-gluster", "gluster-native")
