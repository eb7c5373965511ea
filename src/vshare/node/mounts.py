"""What is mounted where: the one reader of ``/proc/self/mountinfo``."""

from __future__ import annotations

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
