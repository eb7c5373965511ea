"""The Linux 9P client (v9fs) against a real gateway: one QEMU guest, many checks.

The guest (``init.sh`` in a busybox initramfs around the Debian kernel's own 9P modules;
no vshare code in it) mounts shares of the gateway this test runs in-process, over
``trans=tcp`` to 10.0.2.2 (QEMU user networking: the host's 127.0.0.1, so the gateway sees
every connection from 127.0.0.1 and an ``ip`` rule is what admits it) and once over
``trans=fd``. It prints one ``RESULT`` line per check; this test asserts each of them, that
none is missing, and then looks at the shares on the host's disk.

While the guest runs, the test reads its console: at ``WAIT revoke`` it takes the
``revoked`` share's rule away (``Gateway.set_shares``) and drops a flag file into the main
share, which the guest polls; the guest then checks that its mount of that share fails.

Needs ``qemu-system-x86 linux-image-amd64 busybox-static gcc libc6-dev`` (``make test``
installs them); skipped without them. Takes about a minute under TCG on two cores.
"""

from __future__ import annotations

import array
import logging
import os
import stat
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import anyio
import pytest

from vshare.backend.posix import PosixBackend
from vshare.gateway.config import MSIZE_CEILING, GatewayConfig, Share
from vshare.gateway.server import Gateway
from vshare.policy import AccessRule, Level

from .build_initramfs import BuildError, GuestImage, build
from .guest import GuestRun, boot, have_qemu

pytestmark = [pytest.mark.anyio, pytest.mark.qemu, pytest.mark.slow]

#: Every check init.sh makes, in order; each must be reported, and ok.
CHECKS = (
    "modules", "network", "mount-64k", "mount-512k", "mount-1m", "msize-cap", "io-64k", "io-512k",
    "io-1m", "create", "append", "truncate", "rename", "hardlink", "symlink", "mkdir-rmdir",
    "bytes-names", "readdir-1000", "chmod", "touch-d", "stat", "mkfifo", "xattr", "locks",
    "fsync", "long-names", "parallel", "open-unlinked", "exec", "nonroot", "cache-modes",
    "unlink", "tar", "big-file", "df", "quota", "trans-fd", "ro-share", "denied-share",
    "revoke-mounted", "offsets-64bit", "revoke-enforced", "umount",
)  # fmt: skip
SIZE_GIB = 1
BIG_MIB = 100
GUEST_TIMEOUT = 240.0
GOLDEN = 0x9E3779B97F4A7C15
#: QEMU's user network: the guest's connections reach the host from the loopback address.
GUEST_RULE = AccessRule("ip", "127.0.0.1/32")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def image() -> GuestImage:
    if not have_qemu():
        pytest.skip("qemu-system-x86_64 is missing: `make test` installs qemu-system-x86")
    try:
        return build()
    except BuildError as exc:
        pytest.skip(f"cannot build the guest: {exc}")


def shares(*, revoked_rule: bool = True) -> tuple[Share, ...]:
    return (
        Share("main", "shares/main", access=(GUEST_RULE,), size_gib=SIZE_GIB),
        Share("ro", "shares/ro", access=(replace(GUEST_RULE, level=Level.RO),)),
        Share("denied", "shares/denied", access=(AccessRule("ip", "192.0.2.1"),)),
        Share("revoked", "shares/revoked", access=(GUEST_RULE,) if revoked_rule else ()),
    )


@dataclass
class Served:
    gateway: Gateway
    port: int
    volume: Path

    def share(self, name: str) -> Path:
        return self.volume / "shares" / name


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    volume = tmp_path / "vol"
    for name in ("main", "ro", "denied", "revoked"):
        (volume / "shares" / name).mkdir(parents=True)
    (volume / "shares" / "ro" / "readme.txt").write_text("read only\n")
    (volume / "shares" / "denied" / "private.txt").write_text("not for this guest\n")
    config = GatewayConfig(shares=shares(), msize=MSIZE_CEILING)
    backend = PosixBackend(str(volume))
    gateway = Gateway(config, backend)
    async with anyio.create_task_group() as tg:
        bound = await tg.start(gateway.serve, ["tcp://127.0.0.1:0"])
        try:
            yield Served(gateway, bound[0].port, volume)
        finally:
            gateway.shutdown()
    backend.close()


def pattern(first_word: int, words: int) -> bytes:
    mask = (1 << 64) - 1
    out = array.array("Q", ((i * GOLDEN) & mask for i in range(first_word, first_word + words)))
    if sys.byteorder != "little":
        out.byteswap()
    return out.tobytes()


async def test_kernel_client_workload(
    image: GuestImage, served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vshare")
    gateway = served.gateway
    events: dict[str, float] = {}
    sessions_after_umount: list[int] = []

    async def on_line(line: str) -> None:
        if line == "WAIT revoke":
            gateway.set_shares(shares(revoked_rule=False))
            (served.share("main") / ".revoked").touch()
            events["revoked"] = anyio.current_time()
        elif line.startswith("RESULT umount "):
            with anyio.move_on_after(5):  # the guest waits a second before powering off
                while gateway.sessions:
                    await anyio.sleep(0.05)
            sessions_after_umount.append(len(gateway.sessions))

    params = {"port": served.port, "size_kib": SIZE_GIB * 1024 * 1024, "big_mib": BIG_MIB,
              "watchdog": int(GUEST_TIMEOUT - 30)}  # fmt: skip
    run = await boot(image, params, on_line, timeout=GUEST_TIMEOUT)
    report(run, gateway)
    assert "WATCHDOG" not in " ".join(run.lines[-400:]), f"the guest hung:\n{run.console(400)}"

    assert not run.timed_out, f"the guest did not finish in {GUEST_TIMEOUT:g} s:\n{run.console()}"
    assert run.done, f"the guest stopped before DONE (exit {run.returncode}):\n{run.console()}"
    assert run.returncode == 0, run.console()
    missing = [name for name in CHECKS if name not in run.results]
    assert not missing, f"checks never reported: {missing}\n{run.console()}"
    unexpected = sorted(set(run.results) - set(CHECKS))
    assert not unexpected, f"checks this test does not know: {unexpected}"
    failed = [r for r in run.results.values() if not r.ok]
    assert not failed, "failed in the guest:\n" + "\n".join(
        [f"  {r.name}: {r.detail}" for r in failed]
        + [line for line in run.lines if line.startswith("LOG ")]
    )
    assert "revoked" in events, "the guest never asked for the revocation"
    assert sessions_after_umount == [0], "sessions left open after the guest unmounted"

    # The gateway: no internal error, no protocol error, nothing logged as an error.
    registry = gateway.ctx.metrics.registry
    assert registry.get_sample_value("vshare_internal_errors_total") == 0
    assert registry.get_sample_value("vshare_protocol_errors_total") == 0
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not problems, [r.getMessage() for r in problems]

    # And the host's disk has what the guest wrote.
    main = served.share("main")
    big = main / "big.bin"
    assert big.stat().st_size == BIG_MIB << 20
    with big.open("rb") as f:
        for mib in (0, 1, BIG_MIB // 2, BIG_MIB - 1):
            f.seek(mib << 20)
            assert f.read(1 << 20) == pattern(mib << 17, 1 << 17), f"big.bin differs at {mib} MiB"
    for name in ("m64", "m512", "m1m"):
        assert (main / f"{name}.bin").read_bytes() == pattern(0, 3 << 17)
    assert not (main / "many").exists()
    assert (main / "ops" / "pub" / "by-1000").read_text() == "mine\n"
    for mode in ("loose", "mmap", "fscache"):
        assert (main / "ops" / f"cache-{mode}.map").read_bytes() == pattern(0, 2 << 17)
    hello = (main / "ops" / "hello").stat()
    assert (hello.st_size, stat.S_IMODE(hello.st_mode)) == (21, 0o644)
    assert hello.st_mtime == 1683356889
    assert (main / "ops" / "d1" / "victim").read_bytes() == b"r1"
    assert os.readlink(main / "ops" / "sym") == "hello"
    assert stat.S_ISFIFO((main / "ops" / "fifo").lstat().st_mode)
    assert "user.vshare" not in os.listxattr(main / "ops" / "xa")
    assert (main / "tree" / "d1" / "f300001").stat().st_size == 300001
    assert (main / "via-fd").read_text() == "via fd\n"
    assert os.listdir(served.share("ro")) == ["readme.txt"]
    assert (served.share("ro") / "readme.txt").read_text() == "read only\n"
    assert os.listdir(served.share("revoked")) == ["before"]


def report(run: GuestRun, gateway: Gateway) -> None:
    """Print what the guest did (shown with pytest -s, and on failure)."""
    print(f"\nguest: {len(run.results)} checks, {run.seconds:.1f} s from QEMU start to exit")
    for name, seconds in run.times.items():
        print(f"  TIME {name}: {seconds:.2f} s")
    for result in run.results.values():
        print(f"  {'ok  ' if result.ok else 'FAIL'} {result.name}: {result.detail}")
    errors = sorted(
        (f"{op}:{result}", count)
        for (op, result), count in gateway.ctx.metrics._requests.counts.items()
        if result != "ok"
    )
    print(f"  gateway error replies: {errors}")
    stats = gateway.ctx.metrics._requests
    per_op: dict[str, int] = {}
    for (op, _), count in stats.counts.items():
        per_op[op] = per_op.get(op, 0) + count
    busy = ", ".join(f"{op} {n}/{stats.timings[op].total:.2f}s" for op, n in sorted(per_op.items()))
    print(f"  gateway requests (count/time answering): {busy}")
    for session in gateway.sessions:
        print(f"  session {session.id} of {session.conn.identity} still open: "
              f"{session.inflight} requests in flight, revoked={session.revoked!r}")  # fmt: skip
