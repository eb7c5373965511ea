"""``vshare mount --kernel``, without QEMU: the option string, the dry run, usage mistakes,
and the hand-over itself — a real gateway, a real connection, and a stand-in ``mount`` on
PATH that speaks 9P over the descriptor it inherited (this host's kernel has no 9P client;
the guest in test_kernel_client.py mounts with ``trans=fd`` for real, through vmtool).

vsock is dialed through ``transport._vsock._vsock_socket`` replaced by a socket that
records the ``(cid, port)`` it was asked for and connects to the gateway's Unix socket:
no AF_VSOCK socket is ever opened here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

from tests.processes import VSHARE
from vshare.backend.posix import PosixBackend
from vshare.cli._main import cli
from vshare.cli._mount import kernel_options, mount_kernel
from vshare.gateway.config import GatewayConfig, Share
from vshare.gateway.server import Gateway
from vshare.policy import AccessRule
from vshare.transport import _vsock

GUEST = AccessRule("ip", "127.0.0.1/32")

#: A stand-in for mount(8): parses ``-o``, then Tversion + Tattach over ``rfdno``.
FAKE_MOUNT = """#!{python}
import json, socket, sys
from vshare import protocol as p

argv = sys.argv[1:]
opts = dict(o.partition("=")[::2] for o in argv[argv.index("-o") + 1].split(","))
sock = socket.socket(fileno=int(opts["rfdno"]))
sock.setblocking(True)

def rpc(tag, msg):
    sock.sendall(p.encode(tag, msg))
    head = sock.recv(4, socket.MSG_WAITALL)
    size = int.from_bytes(head, "little")
    frame = head + sock.recv(size - 4, socket.MSG_WAITALL)
    return p.decode_frame(frame)[1]

version = rpc(0xFFFF, p.Tversion(int(opts["msize"]), "9P2000.L"))
attach = rpc(1, p.Tattach(0, p.NOFID, "root", opts["aname"], 0))
print("fake-mount", json.dumps({{"argv": argv, "version": type(version).__name__,
      "msize": getattr(version, "msize", 0), "attach": type(attach).__name__,
      "same_fd": opts["rfdno"] == opts["wfdno"]}}))
sys.exit(0 if type(attach).__name__ == "Rattach" else 32)
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake_mount(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "mount"
    script.write_text(FAKE_MOUNT.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return script


@dataclass
class Served:
    sock: Path
    port: int


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    volume = tmp_path / "vol"
    for name in ("mine", "theirs"):
        (volume / "shares" / name).mkdir(parents=True)
    me = str(os.getuid())
    config = GatewayConfig(
        shares=(
            Share("mine", "shares/mine", access=(AccessRule("user", me), GUEST)),
            Share("theirs", "shares/theirs", access=(AccessRule("ip", "192.0.2.1"),)),
        )
    )
    backend = PosixBackend(str(volume))
    gateway = Gateway(config, backend)
    sock = tmp_path / "gw.sock"
    async with anyio.create_task_group() as tg:
        bound = await tg.start(gateway.serve, [f"unix://{sock}", "tcp://127.0.0.1:0"])
        try:
            yield Served(sock, bound[1].port)
        finally:
            gateway.shutdown()
    backend.close()


def fake_result(output: str) -> dict[str, object]:
    line = next(line for line in output.splitlines() if line.startswith("fake-mount "))
    result: dict[str, object] = json.loads(line.removeprefix("fake-mount "))
    return result


# --- the option string ------------------------------------------------------------------


def test_kernel_options_defaults() -> None:
    assert kernel_options(7, "demo") == (
        "trans=fd,rfdno=7,wfdno=7,version=9p2000.L,msize=524288,aname=demo,cache=none"
    )


@pytest.mark.parametrize("cache", ["none", "loose", "fscache", "mmap"])
def test_kernel_options_cache_msize_ro(cache: str) -> None:
    options = kernel_options(3, "id-123", msize=65536, cache=cache, readonly=True).split(",")
    assert options[:3] == ["trans=fd", "rfdno=3", "wfdno=3"]
    assert {"msize=65536", "aname=id-123", f"cache={cache}", "ro"} <= set(options)


@pytest.mark.parametrize(
    ("share", "msize", "cache"),
    [("a,b", 65536, "none"), ("", 65536, "none"), ("a b", 65536, "none"),
     ("ok", 4095, "none"), ("ok", 1024 * 1024 + 1, "none"), ("ok", 65536, "always")],
)  # fmt: skip
def test_kernel_options_refuses(share: str, msize: int, cache: str) -> None:
    with pytest.raises(ValueError):
        kernel_options(3, share, msize=msize, cache=cache)


# --- the command --------------------------------------------------------------------------


def test_dry_run_prints_the_mount_line_and_dials_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dial(uri: str) -> socket.socket:
        raise AssertionError("--dry-run dialed")

    monkeypatch.setattr("vshare.cli._mount.dial", no_dial)
    args = ["mount", "--kernel", "--dry-run", "--msize", "65536", "--cache", "loose", "--ro",
            "vsock://2:564", "demo", "/mnt/my share"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.output == (
        "mount -t 9p -o trans=fd,rfdno=FD,wfdno=FD,version=9p2000.L,msize=65536,aname=demo,"
        "cache=loose,ro vshare '/mnt/my share'\n"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--kernel", "--gateway", "tcp://h:1", "tcp://h:2", "s", "/m"],
        ["--kernel", "--foreground", "tcp://h:2", "s", "/m"],
        ["--dry-run", "tcp://h:2", "s", "/m"],
        ["--kernel", "tls://h:2", "s", "/m"],
        ["--kernel", "hvsock:///run/vm.vsock", "s", "/m"],
        ["--kernel", "--cache", "auto", "tcp://h:2", "s", "/m"],
        ["--kernel", "--msize", "2000000", "tcp://h:2", "s", "/m"],
        ["--cache", "loose", "tcp://h:2", "s", "/m"],
        ["--kernel", "nonsense", "s", "/m"],
    ],
)
def test_usage_mistakes_exit_2(args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["mount", *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_without_kernel_the_fuse_client_mounts(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], str, str, dict[str, object]]] = []

    def mount_main(gateways: list[str], share: str, mountpoint: str, **kw: object) -> int:
        calls.append((gateways, share, mountpoint, kw))
        return 0

    monkeypatch.setattr("vshare.fuse.mount_main", mount_main)
    args = ["mount", "vsock://2:564", "demo", "/mnt/d", "--gateway", "vsock://2:565", "--ro",
            "--cache", "none"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    [(gateways, share, mountpoint, kw)] = calls
    assert (gateways, share, mountpoint) == (["vsock://2:564", "vsock://2:565"], "demo", "/mnt/d")
    assert kw["readonly"] is True and kw["cache"] == "none"


# --- the hand-over: a real gateway, a stand-in mount -------------------------------------


@pytest.mark.anyio
async def test_kernel_mount_hands_a_tcp_connection_to_mount(
    served: Served, fake_mount: Path
) -> None:
    uri = f"tcp://127.0.0.1:{served.port}"
    done = await anyio.run_process(
        [VSHARE, "mount", "--kernel", "--msize", "65536", uri, "mine", "/mnt/x"], check=False
    )
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    first = out.splitlines()[0]
    assert first.startswith("mount -t 9p -o trans=fd,rfdno=") and first.endswith(" vshare /mnt/x")
    result = fake_result(out)
    assert result == {
        "argv": ["-t", "9p", "-o", first.split()[4], "vshare", "/mnt/x"],
        "version": "Rversion", "msize": 65536, "attach": "Rattach", "same_fd": True,
    }  # fmt: skip

    # A share this address has no rule for: the attach is refused, mount fails, exit 1.
    done = await anyio.run_process(
        [VSHARE, "mount", "--kernel", uri, "theirs", "/mnt/x"], check=False
    )
    assert done.returncode == 1
    assert fake_result(done.stdout.decode())["attach"] == "Rlerror"
    assert "vshare: mount failed" in done.stderr.decode()


@pytest.mark.anyio
async def test_kernel_mount_over_vsock_dials_the_cid_and_port(
    served: Served, fake_mount: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dialed: list[object] = []

    class Redirect(socket.socket):
        """Stands in for AF_VSOCK: records the (cid, port), connects to the gateway."""

        def connect(self, address: object) -> None:
            dialed.append(address)
            super().connect(str(served.sock))

    monkeypatch.setattr(_vsock, "_vsock_socket", lambda: Redirect(socket.AF_UNIX))
    runs: list[subprocess.CompletedProcess[bytes]] = []

    def runner(
        argv: list[str], *, pass_fds: tuple[int, ...], check: bool
    ) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run(argv, pass_fds=pass_fds, check=check, capture_output=True)
        runs.append(done)
        return done

    status = await anyio.to_thread.run_sync(
        lambda: mount_kernel("vsock://2:564", "mine", "/mnt/v", runner=runner)
    )
    assert dialed == [(2, 564)]
    assert status == 0, runs
    result = fake_result(runs[0].stdout.decode())
    assert result["attach"] == "Rattach" and result["msize"] == 512 * 1024


def test_unreachable_gateway_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["mount", "--kernel", f"unix://{tmp_path}/none", "s", "/m"])
    assert result.exit_code == 1
    assert "cannot reach the gateway" in result.output
