"""Build the test guests: the Debian kernel as an ELF ``vmlinux`` and an initramfs.

The initramfs holds static busybox, some of the Debian kernel's modules, ``vmtool``
(``vmtool.c``, compiled here with ``gcc -static``) and a shell script as ``/init``. Two
flavours (:class:`Flavour`):

- ``KERNEL_CLIENT``: ``init.sh``, virtio-net and 9P. Nothing of vshare runs in the guest:
  it mounts a gateway on the host through the kernel's own 9P client.
- ``VSOCK``: ``init_vsock.sh``, 9P over virtio (the host's root, shared read-only, where
  the project's ``.venv`` runs), vsock with ``vsock_loopback`` (the guest reaches itself at
  CID 1) and FUSE. Gateway and clients all run in the guest, over real AF_VSOCK.

Both are cached under ``$VSHARE_VM_CACHE`` (default ``~/.cache/vshare-vm``):
``vmlinux-<kernel version>`` (extracted once from ``/boot/vmlinuz-*``: QEMU boots the ELF
through its PVH entry, about twice as fast as the bzImage) and
``initramfs-<flavour>-<kernel version>-<hash>.cpio``, where the hash covers this script,
the flavour's ``/init``, ``vmtool.c``, busybox and the modules; a change to any of them
builds a new one. The archive is not compressed: under TCG, decompressing it would cost
more than reading it.

Needs the Debian packages ``linux-image-amd64 busybox-static gcc libc6-dev`` (``make test``
installs them). Run by hand::

    python tests/vm/build_initramfs.py        # prints the kernel and initramfs paths
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: insmod order, dependencies first (modules.dep of Debian's 6.1). 9pnet_fd is trans=tcp/fd.
MODULES = (
    "virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
    "failover", "net_failover", "virtio_net", "netfs", "fscache", "9pnet", "9pnet_fd", "9p",
)  # fmt: skip
#: The vsock guest: no network; 9pnet_virtio for the host's root, vsock_loopback, FUSE.
VSOCK_MODULES = (
    "virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
    "netfs", "fscache", "9pnet", "9pnet_fd", "9pnet_virtio", "9p",
    "vsock", "vmw_vsock_virtio_transport_common", "vsock_loopback", "fuse",
)  # fmt: skip
BUSYBOX = Path("/bin/busybox")


@dataclass(frozen=True)
class Flavour:
    """One kind of guest: its ``/init`` (a file next to this one) and modules, in order."""

    name: str
    init: str
    modules: tuple[str, ...]


KERNEL_CLIENT = Flavour("kernel-client", "init.sh", MODULES)
VSOCK = Flavour("vsock", "init_vsock.sh", VSOCK_MODULES)


class BuildError(RuntimeError):
    """Something the guest needs is missing on this machine (the message says what)."""


@dataclass(frozen=True)
class GuestImage:
    kernel_version: str
    kernel: Path  # the ELF vmlinux
    initramfs: Path
    built: bool  # False: both came from the cache
    flavour: str = "kernel-client"


def cache_root() -> Path:
    return Path(os.environ.get("VSHARE_VM_CACHE", Path.home() / ".cache" / "vshare-vm"))


def kernel_version() -> str:
    """The newest kernel in /boot that has its modules installed."""
    versions = [p.name.removeprefix("vmlinuz-") for p in Path("/boot").glob("vmlinuz-*")]
    versions = [v for v in versions if Path("/lib/modules", v, "modules.dep").exists()]
    if not versions:
        raise BuildError("no /boot/vmlinuz-* with modules: install linux-image-amd64")

    def key(v: str) -> list[int]:
        return [int(n) for n in re.findall(r"\d+", v)]

    return max(versions, key=key)


def extract_vmlinux(bzimage: Path, out: Path) -> None:
    """The ELF kernel inside a bzImage (xz or gzip payload)."""
    data = bzimage.read_bytes()
    decoders: tuple[tuple[bytes, Callable[[bytes], bytes]], ...] = (
        (b"\xfd7zXZ\x00", lambda b: lzma.LZMADecompressor().decompress(b)),
        (b"\x1f\x8b\x08", lambda b: zlib.decompressobj(31).decompress(b)),
    )
    for magic, decode in decoders:
        at = data.find(magic)
        while at >= 0:
            try:
                elf = decode(data[at:])
            except (lzma.LZMAError, zlib.error, EOFError):
                elf = b""
            if elf[:4] == b"\x7fELF":
                tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
                tmp.write_bytes(elf)
                tmp.replace(out)
                return
            at = data.find(magic, at + 1)
    raise BuildError(f"{bzimage}: no xz or gzip ELF payload (zstd/lz4 kernels: unsupported)")


def module_files(version: str, wanted: tuple[str, ...] = MODULES) -> dict[str, Path]:
    """Each wanted module's file, by name (from modules.dep)."""
    moddir = Path("/lib/modules", version)
    found: dict[str, Path] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path = line.split(":", 1)[0]
        name = re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", "", path.rsplit("/", 1)[-1])
        if name in wanted:
            found[name] = moddir / path
    missing = [m for m in wanted if m not in found]
    if missing:
        raise BuildError(f"kernel {version}: modules not found: {', '.join(missing)}")
    return found


def module_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(raw)
    if path.suffix == ".gz":
        return gzip.decompress(raw)
    if path.suffix == ".zst":
        return subprocess.run(["zstd", "-dc", str(path)], check=True, capture_output=True).stdout
    return raw


class Cpio:
    """A ``newc`` cpio archive, written in order (what the kernel unpacks as initramfs)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.ino = 1

    def add(self, name: str, mode: int, data: bytes = b"") -> None:
        encoded = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.ino += 1
        self.parts += [header, encoded, b"\0" * (-(110 + len(encoded)) % 4)]
        self.parts += [data, b"\0" * (-len(data) % 4)]

    def dir(self, name: str) -> None:
        self.add(name, 0o040755)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self.add(name, 0o100000 | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self.add(name, 0o120777, target.encode())

    def getvalue(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return b"".join(self.parts)


def compile_vmtool(out: Path) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BuildError("gcc not found: install gcc libc6-dev")
    try:
        subprocess.run([gcc, "-static", "-O2", "-Wall", "-o", str(out), str(HERE / "vmtool.c")],
                       check=True, capture_output=True, text=True)  # fmt: skip
    except subprocess.CalledProcessError as exc:
        raise BuildError(f"gcc -static vmtool.c failed (libc6-dev?):\n{exc.stderr}") from None


def inputs_hash(version: str, modules: dict[str, Path], flavour: Flavour = KERNEL_CLIENT) -> str:
    h = hashlib.sha256(version.encode())
    for path in (Path(__file__).resolve(), HERE / flavour.init, HERE / "vmtool.c", BUSYBOX):
        h.update(path.read_bytes())
    for name in flavour.modules:
        st = modules[name].stat()
        h.update(f"{name} {st.st_size} {st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def build(root: Path | None = None, flavour: Flavour = KERNEL_CLIENT) -> GuestImage:
    """The guest's kernel and initramfs, from the cache or built now.

    Raises:
        BuildError: a kernel, busybox, gcc or a module is missing.
    """
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    version = kernel_version()
    if not BUSYBOX.exists():
        raise BuildError(f"{BUSYBOX} not found: install busybox-static")
    modules = module_files(version, flavour.modules)
    vmlinux = root / f"vmlinux-{version}"
    prefix = f"initramfs-{flavour.name}-{version}"
    initramfs = root / f"{prefix}-{inputs_hash(version, modules, flavour)}.cpio"
    built = False
    if not vmlinux.exists():
        extract_vmlinux(Path("/boot", f"vmlinuz-{version}"), vmlinux)
        built = True
    if not initramfs.exists():
        archive = Cpio()
        for d in ("bin", "sbin", "proc", "sys", "dev", "tmp", "mnt", "lib", "lib/modules"):
            archive.dir(d)
        archive.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
        archive.symlink("bin/sh", "busybox")
        archive.file("init", (HERE / flavour.init).read_bytes(), 0o755)
        with tempfile.TemporaryDirectory() as tmp:
            tool = Path(tmp, "vmtool")
            compile_vmtool(tool)
            archive.file("vmtool", tool.read_bytes(), 0o755)
        for name in flavour.modules:
            archive.file(f"lib/modules/{name}.ko", module_bytes(modules[name]))
        order = "".join(m + "\n" for m in flavour.modules)
        archive.file("lib/modules/load.order", order.encode())
        for old in root.glob(f"{prefix}-*.cpio"):
            old.unlink()  # earlier builds of this flavour and kernel: superseded
        tmp_out = initramfs.with_name(f"{initramfs.name}.{os.getpid()}.tmp")
        tmp_out.write_bytes(archive.getvalue())
        tmp_out.replace(initramfs)
        built = True
    return GuestImage(version, vmlinux, initramfs, built, flavour.name)


def main() -> int:
    for flavour in (KERNEL_CLIENT, VSOCK):
        try:
            image = build(flavour=flavour)
        except BuildError as exc:
            print(f"build_initramfs: {exc}", file=sys.stderr)
            return 1
        print(f"kernel {image.kernel_version}: {image.kernel}")
        print(f"{flavour.name} initramfs: {image.initramfs} "
              f"({'built' if image.built else 'cached'})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
