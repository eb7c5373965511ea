"""The FUSE client against NFS-Ganesha's 9P server, a real and looser 9P2000.L peer.

Ganesha answers some requests with 9P2000's ``Rerror`` (type 107, an errno and nothing
else) instead of Rlerror: our version probe ("9P2000.L.vshare") and every lookup of a
missing name among them. The client used to drop the whole connection on it, and the mount
then waited on reconnects for ever. Each operation here runs under a timeout that fails
the test on a hang.

Ganesha runs in the foreground as a subprocess of the fixture, on a free loopback port,
and is stopped by its PID (``make debs-test`` installs it: Debian ``nfs-ganesha
nfs-ganesha-vfs``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuse.conftest import MountFactory
from tests.processes import free_port, stop, wait_for

GANESHA = "/usr/bin/ganesha.nfsd"
#: Seconds any one file operation may take before the test calls it a hang.
HANG = 20.0


def _run(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """One command on the mount in a child process: a hung FUSE call blocks its caller in
    the kernel, where no Python timeout reaches, but a child can be given up on."""
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, timeout=HANG, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(argv)}: hung for {HANG:.0f} s")


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def ganesha(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A running ganesha.nfsd serving a fresh directory over 9P: (its URI, the directory,
    which is also the aname)."""
    binary = shutil.which("ganesha.nfsd") or GANESHA
    if not os.path.exists(binary):
        pytest.fail("ganesha.nfsd is missing: make debs-test (Debian nfs-ganesha nfs-ganesha-vfs)")
    export = tmp_path / "export"
    export.mkdir()
    (export / "hello.txt").write_text("hello from ganesha\n")
    (export / "sub").mkdir()
    port = free_port()
    conf = tmp_path / "ganesha.conf"
    conf.write_text(
        "NFS_CORE_PARAM { Protocols = 9P; Bind_addr = 127.0.0.1;"
        " Enable_NLM = false; Enable_RQUOTA = false; }\n"
        f"_9P {{ _9P_TCP_Port = {port}; }}\n"
        f"EXPORT {{ Export_Id = 1; Path = {export}; Pseudo = {export}; Protocols = 9P;"
        " Transports = TCP; Access_Type = RW; Squash = No_Root_Squash; FSAL { Name = VFS; } }\n"
    )
    log = tmp_path / "ganesha.log"
    proc = subprocess.Popen(
        [
            binary,
            "-F",
            "-f",
            str(conf),
            "-L",
            str(log),
            "-p",
            str(tmp_path / "ganesha.pid"),
            "-N",
            "NIV_WARN",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: _port_open(port) or proc.poll() is not None, 30, "ganesha's 9P port")
        if proc.poll() is not None:
            raise RuntimeError(f"ganesha.nfsd exited: {log.read_text()[-2000:]}")
        yield f"tcp://127.0.0.1:{port}", export
    finally:
        stop(proc)


def test_mount_ganesha_9p(ganesha: tuple[str, Path], mount: MountFactory) -> None:
    uri, export = ganesha
    m = mount(uri, str(export), "auto")
    mnt = m.path

    listed = _run("ls", "-la", str(mnt))
    assert listed.returncode == 0, listed.stderr
    assert b"hello.txt" in listed.stdout and b"sub" in listed.stdout

    st = _run("stat", "-c", "%s %F", str(mnt / "hello.txt"))
    assert st.stdout.split(b" ", 1) == [b"19", b"regular file\n"], st.stderr
    cat = _run("cat", str(mnt / "hello.txt"))
    assert cat.stdout == b"hello from ganesha\n", cat.stderr

    # A missing name: Ganesha says so with Rerror(ENOENT), which must come out as ENOENT.
    missing = _run("stat", str(mnt / "nope"))
    assert missing.returncode != 0 and b"No such file" in missing.stderr, missing.stderr

    data = os.urandom(300_000)  # several Twrite/Tread of a 64 KiB-ish msize and more
    wrote = _run("sh", "-c", f"cat > {mnt / 'sub' / 'new.bin'}", stdin=data)
    assert wrote.returncode == 0, wrote.stderr
    assert (export / "sub" / "new.bin").read_bytes() == data  # on Ganesha's disk
    back = _run("cat", str(mnt / "sub" / "new.bin"))
    assert back.stdout == data

    for argv in (
        ("mkdir", str(mnt / "d")),
        ("mv", str(mnt / "sub" / "new.bin"), str(mnt / "d" / "moved.bin")),
        ("rm", str(mnt / "d" / "moved.bin")),
        ("rmdir", str(mnt / "d")),
    ):
        done = _run(*argv)
        assert done.returncode == 0, (argv, done.stderr)
    assert sorted(os.listdir(export)) == ["hello.txt", "sub"]
    assert m.proc.poll() is None, m.stderr()
