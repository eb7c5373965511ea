"""Boot a test guest under QEMU (TCG) and read its console as it runs.

QEMU runs with ``-accel tcg`` (this host's /dev/kvm cannot boot a stock kernel; see
ENVIRONMENT.md), one vCPU, user networking unless ``network=False`` (the guest's 10.0.2.2
is the host's 127.0.0.1), any ``extra`` devices (the vsock guest: the host's root through
``-virtfs``), the serial console on stdout, no reboot: ``/init`` ends with ``poweroff -f``
and QEMU exits.
The caller gets each console line as it arrives (to act on ``WAIT`` lines), and the run's
lines, parsed ``RESULT``/``TIME`` lines and exit status at the end.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import anyio
import anyio.abc

from .build_initramfs import GuestImage

QEMU = "qemu-system-x86_64"


@dataclass(frozen=True)
class Result:
    name: str
    ok: bool
    detail: str


@dataclass
class GuestRun:
    lines: list[str] = field(default_factory=list)
    results: dict[str, Result] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    returncode: int | None = None
    timed_out: bool = False
    seconds: float = 0.0  # QEMU start to exit, on the host

    @property
    def done(self) -> bool:
        return "DONE" in self.lines

    def console(self, last: int = 200) -> str:
        return "\n".join(self.lines[-last:])

    def parse(self, line: str) -> None:
        self.lines.append(line)
        words = line.split(" ", 3)
        if words[0] == "RESULT" and len(words) >= 3:
            name, status = words[1], words[2]
            self.results[name] = Result(name, status == "ok", words[3] if len(words) > 3 else "")
        elif words[0] == "TIME" and len(words) == 3:
            try:
                self.times[words[1]] = float(words[2])
            except ValueError:
                pass


def qemu_command(
    image: GuestImage,
    params: Mapping[str, object],
    memory_mib: int = 512,
    *,
    network: bool = True,
    extra: Sequence[str] = (),
) -> list[str]:
    """The QEMU command line; ``params`` become ``vshare.KEY=VALUE`` kernel arguments;
    ``network`` adds the user-mode NIC, ``extra`` is appended (devices)."""
    append = " ".join(
        ["console=ttyS0", "quiet", "loglevel=4", "panic=-1", "rdinit=/init"]
        + [f"vshare.{key}={value}" for key, value in params.items()]
    )
    return [
        QEMU, "-accel", "tcg", "-cpu", "max", "-m", str(memory_mib), "-smp", "1",
        "-nodefaults", "-no-user-config", "-no-reboot",
        "-display", "none", "-monitor", "none", "-serial", "stdio",
        "-kernel", str(image.kernel), "-initrd", str(image.initramfs), "-append", append,
        *(["-nic", "user,model=virtio-net-pci"] if network else ["-nic", "none"]), *extra,
    ]  # fmt: skip


#: Every boot of this test session, for the "QEMU guests" section of pytest's summary
#: (``conftest.py``): which guest, and its times.
BOOTS: list[tuple[str, GuestRun]] = []


def have_qemu() -> bool:
    return shutil.which(QEMU) is not None


async def boot(
    image: GuestImage,
    params: Mapping[str, object],
    on_line: Callable[[str], Awaitable[None]] | None = None,
    timeout: float = 240.0,
    *,
    memory_mib: int = 512,
    network: bool = True,
    extra: Sequence[str] = (),
) -> GuestRun:
    """Run the guest to its end (or ``timeout``: QEMU is killed, ``timed_out`` is set)."""
    run = GuestRun()
    start = time.monotonic()
    command = qemu_command(image, params, memory_mib, network=network, extra=extra)
    process = await anyio.open_process(command, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        with anyio.move_on_after(timeout) as scope:
            assert process.stdout is not None
            await _read_lines(process.stdout, run, on_line)
            run.returncode = await process.wait()
        run.timed_out = scope.cancelled_caught
    finally:
        if process.returncode is None:
            process.kill()  # our own child, by its handle
            with anyio.CancelScope(shield=True):
                await process.wait()
        await process.aclose()
        run.seconds = time.monotonic() - start
        BOOTS.append((image.flavour, run))
    return run


async def _read_lines(
    stream: anyio.abc.ByteReceiveStream,
    run: GuestRun,
    on_line: Callable[[str], Awaitable[None]] | None,
) -> None:
    pending = b""
    while True:
        try:
            chunk = await stream.receive()
        except anyio.EndOfStream:
            break
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            line = raw.decode(errors="replace").rstrip("\r")
            run.parse(line)
            if on_line is not None:
                await on_line(line)
    if pending:
        run.parse(pending.decode(errors="replace").rstrip("\r"))
