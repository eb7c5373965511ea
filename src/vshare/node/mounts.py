"""What is mounted where: the one reader of ``/proc/self/mountinfo``, and the unmount of
a vshare mount by either client (``vshare umount``)."""

from __future__ import annotations

import errno
import os
import subprocess
from typing import NamedTuple


class MountEntry(NamedTuple):
    device: str  # MAJ:MIN, as /sys/class/bdi names it
    fstype: str  # fuse.vshare.SHARE, 9p, ...
    options: str  # the per-mount options (rw,nosuid,...)


def find_mount(target: str) -> MountEntry | None:
    """The topmost mount at ``target``, an already resolved path (``os.path.realpath``),
    or None. Reads only mountinfo: nothing here touches the mount itself (a stat of a FUSE
    mount whose server is not serving yet would hang)."""
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            # ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - TYPE SOURCE SUPEROPTIONS
            fields = line.split()
            if len(fields) > 4 and fields[4].replace("\\040", " ") == target:
                rest = fields[fields.index("-") + 1 :] if "-" in fields else []
                found = MountEntry(fields[2], rest[0] if rest else "?", fields[5])
    return found


def mounted_type(mountpoint: str) -> str | None:
    """The file system type mounted at ``mountpoint`` (``fuse.vshare.SHARE``, ``9p``, ...),
    the topmost when several are stacked; None when nothing is mounted there."""
    mount = find_mount(os.path.realpath(mountpoint))
    return None if mount is None else mount.fstype


def unmount_any(mountpoint: str, *, lazy: bool = False) -> None:
    """Unmount a vshare mount made by the FUSE client or the kernel client.

    Raises:
        OSError: EINVAL when nothing is mounted there, EBUSY when it is in use (nothing
            changed), or the failure of the unmount command.
    """
    fstype = mounted_type(mountpoint)
    if fstype is None:
        raise OSError(errno.EINVAL, "not mounted", mountpoint)
    if fstype.startswith("fuse") and not lazy:
        from vshare.fuse import unmount

        unmount(mountpoint)
        return
    # The kernel 9P client, or a lazy detach of either: the mount(8) family does it.
    argv = ["umount", *(["-l"] if lazy else []), mountpoint]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise OSError(errno.ENOENT, "no `umount` command on PATH", mountpoint) from None
    if done.returncode != 0:
        msg = done.stderr.strip() or f"umount failed (exit {done.returncode})"
        code = errno.EBUSY if "busy" in msg.lower() else errno.EIO
        raise OSError(code, msg.splitlines()[-1], mountpoint)
