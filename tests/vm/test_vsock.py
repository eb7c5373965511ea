"""Real AF_VSOCK end to end: gateway, kernel 9P client and FUSE client in one QEMU guest.

On the host, vsock tests replace the function that makes AF_VSOCK sockets (the host has no
vsock loopback, and CID 2 is this machine's own hypervisor, which nothing here may dial).
In the guest, ``vsock_loopback`` gives real vsock: the guest reaches itself at CID 1, and
the kernel stamps that CID on every connection. The host's root is shared read-only into
the guest, so the project's own ``.venv`` runs there (``init_vsock.sh``, chrooted):

- ``vshare gateway run --listen vsock://any:564`` on an embedded store (SQLite) that this
  test prepares before the boot with the control service, as an operator would: instance
  ``vm-a`` registered by CID 1 with share ``work`` allowed for it, share ``other`` of the
  same tenant without a rule for it, and share ``theirs`` of another tenant allowed for
  instance ``vm-b``, registered by CID 3;
- ``vshare mount --kernel vsock://1:564 work /mnt/k`` (the Linux 9P client, ``trans=fd``
  over the connected vsock socket) and a workload; the same mount of ``other`` and of
  ``theirs`` must fail;
- ``vshare mount vsock://1:564 work /mnt/f`` (the FUSE client) and the same workload.

The guest prints the gateway's JSON log at the end; this test asserts each check, and that
every attach audit line names the CID the kernel reported for the peer (1: the gateway
takes it from the accepted socket's peer address, nothing here passes it in), resolved to
``vm-a``, never to ``vm-b``. One liberty: the policy only takes guest CIDs from 3 up, and
the loopback CID is 1, so both this test and the guest's gateway lower that bound
(:func:`loopback_cid_admitted`).

One boot, about two minutes under TCG on two cores (most of it Python starting in the
guest: each ``vshare`` command takes 10 s or so there). Needs what test_kernel_client.py
needs, plus ``fuse3`` (fusermount3, which the FUSE client mounts with).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vshare.control import ADMIN, ControlService
from vshare.policy import _instances
from vshare.store import open_store

from .build_initramfs import VSOCK, BuildError, GuestImage, build
from .guest import GuestRun, boot, have_qemu

pytestmark = [pytest.mark.anyio, pytest.mark.qemu, pytest.mark.slow]

#: What vsock_loopback makes the guest's connections to itself come from (VMADDR_CID_LOCAL).
LOOPBACK_CID = 1
#: The CID of the other instance: registered, but no connection ever comes from it.
OTHER_CID = 3
VM_A = "6f1c8a8e-2b7e-4a57-9a8e-0f3c2a1d9b11"
VM_B = "0b7d2c4e-9f3a-4e1b-8c6d-5a4f3e2d1c0b"
SIZE_GIB = 1
WORKLOAD = ("write", "rename", "readdir", "chmod", "symlink", "df")
#: Every check init_vsock.sh makes, in order; each must be reported, and ok.
CHECKS = (
    "modules", "hostroot", "gateway", "kernel-mount", *(f"k-{w}" for w in WORKLOAD),
    "refused-share", "refused-instance", "fuse-mount", *(f"f-{w}" for w in WORKLOAD),
    "cross-check", "umount", "gateway-stop",
)  # fmt: skip
GUEST_TIMEOUT = 360.0  # about three times a normal run: a hang shows in minutes
#: The host's root, read-only, for the guest's chroot (ENVIRONMENT.md: "QEMU guest").
HOSTROOT = (
    "-virtfs",
    "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def image() -> GuestImage:
    if not have_qemu():
        pytest.skip("qemu-system-x86_64 is missing: `make test` installs qemu-system-x86")
    if shutil.which("fusermount3") is None:
        pytest.skip("fusermount3 is missing: install fuse3")
    try:
        return build(flavour=VSOCK)
    except BuildError as exc:
        pytest.skip(f"cannot build the guest: {exc}")


@dataclass(frozen=True)
class Prepared:
    state: Path  # state.db and volume/, copied into the guest at the same path
    work_path: str  # the "work" share's directory in the volume


@contextlib.contextmanager
def loopback_cid_admitted() -> Iterator[None]:
    """Let instances be registered by CID 1 meanwhile.

    The policy takes guest CIDs from 3 up (0-2 are the hypervisor, loopback and the host),
    but in the test guest every vsock connection comes from the loopback CID 1: the guest
    is its own hypervisor. The guest's gateway lowers the bound the same way (VSHARE_CID1
    in init_vsock.sh); nothing else about identities changes.
    """
    saved = _instances.MIN_GUEST_CID
    _instances.MIN_GUEST_CID = LOOPBACK_CID  # type: ignore[misc]
    try:
        yield
    finally:
        _instances.MIN_GUEST_CID = saved  # type: ignore[misc]


def prepare(state: Path) -> Prepared:
    """The store and volume the guest's gateway serves (see the module note)."""
    volume = state / "volume"
    volume.mkdir(parents=True)
    with loopback_cid_admitted(), open_store(f"sqlite://{state / 'state.db'}") as store:
        service = ControlService(store, {"default": f"posix:{volume}"})
        try:
            service.register_instance(ADMIN, VM_A, tenant="acme", name="vm-a",
                                      cids=[LOOPBACK_CID])  # fmt: skip
            service.register_instance(ADMIN, VM_B, tenant="globex", name="vm-b",
                                      cids=[OTHER_CID])  # fmt: skip
            work = service.create_share(ADMIN, "work", SIZE_GIB, tenant="acme")
            service.allow(ADMIN, "work", "instance", VM_A, "rw")
            service.create_share(ADMIN, "other", SIZE_GIB, tenant="acme")
            service.allow(ADMIN, "other", "ip", "192.0.2.1", "rw")
            service.create_share(ADMIN, "theirs", SIZE_GIB, tenant="globex")
            service.allow(ADMIN, "theirs", "instance", VM_B, "rw")
        finally:
            service.close()
    return Prepared(state, work.path)


def boot_params(prepared: Prepared) -> dict[str, object]:
    return {"state": prepared.state, "work": prepared.work_path,
            "size_kib": SIZE_GIB * 1024 * 1024, "watchdog": int(GUEST_TIMEOUT - 30)}  # fmt: skip


async def boot_vsock_guest(image: GuestImage, prepared: Prepared) -> GuestRun:
    return await boot(
        image, boot_params(prepared), timeout=GUEST_TIMEOUT, memory_mib=1024, network=False,
        extra=HOSTROOT,
    )  # fmt: skip


def gateway_log(run: GuestRun) -> list[dict[str, Any]]:
    """The guest gateway's JSON log lines (printed as ``GW {...}``)."""
    out: list[dict[str, Any]] = []
    for line in run.lines:
        if line.startswith("GW {"):
            try:
                out.append(json.loads(line.removeprefix("GW ")))
            except json.JSONDecodeError:
                pass  # a line cut by the console: the assertions below say what is missing
    return out


@pytest.mark.timeout(GUEST_TIMEOUT + 60)
async def test_vsock_end_to_end(image: GuestImage, tmp_path: Path) -> None:
    prepared = prepare(tmp_path / "vsock")
    run = await boot_vsock_guest(image, prepared)
    report(run)
    assert "WATCHDOG" not in " ".join(run.lines), f"the guest hung:\n{run.console(400)}"
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
        + [line for line in run.lines if line.startswith(("LOG ", "GW "))]
    )

    # The gateway listened on real vsock, knew both instances, and logged no error.
    log = gateway_log(run)
    assert any("listening on vsock://any:564" in e["msg"] for e in log), run.console()
    assert any("3 shares, 2 instances" in e["msg"] for e in log), run.console()
    errors = [e for e in log if e["level"] in ("error", "critical")]
    assert not errors, errors

    # Every attach came from the CID the kernel reported for the peer, resolved to vm-a.
    attaches = [e for e in log if e["logger"] == "vshare.audit" and e.get("event") == "attach"]
    decisions = sorted({(e["share"], e["decision"]) for e in attaches})
    assert decisions == [("other", "deny"), ("theirs", "deny"), ("work", "allow")], attaches
    for e in attaches:
        assert e["identity"] == f"vsock cid={LOOPBACK_CID}", e
        assert (e["instance"], e["tenant"]) == (VM_A, "acme"), e
    # Two sessions attached "work" (kernel and FUSE client; the writes show it was rw: the
    # JSON log's "level" is the log level, which hides the audit's access level).
    allowed = {e["session"] for e in attaches if e["decision"] == "allow"}
    assert len(allowed) == 2, attaches
    # vm-b's share: refused although a registered instance may use it (vm-b is CID 3).
    assert not any(e["instance"] == VM_B for e in attaches)


def report(run: GuestRun) -> None:
    """Print what the guest did (shown with pytest -s, and on failure)."""
    print(f"\nvsock guest: {len(run.results)} checks, {run.seconds:.1f} s from QEMU start to exit")
    for name, seconds in run.times.items():
        print(f"  TIME {name}: {seconds:.2f} s")
    for result in run.results.values():
        print(f"  {'ok  ' if result.ok else 'FAIL'} {result.name}: {result.detail}")
    sys.stdout.flush()
