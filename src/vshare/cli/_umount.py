"""``vshare umount MOUNTPOINT``: the counterpart of ``vshare mount``, for either client."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import click

from vshare.node.mounts import find_mount


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


@click.command()
@click.argument("mountpoint")
@click.option(
    "-l", "--lazy", is_flag=True, help="Detach now and clean up when the mount is no longer busy."
)
def umount(mountpoint: str, lazy: bool) -> None:
    """Unmount a share mounted with `vshare mount` (FUSE or --kernel).

    Exit status: 0 unmounted, 1 not mounted, busy or refused (one line on stderr).
    """
    try:
        unmount_any(mountpoint, lazy=lazy)
    except OSError as exc:
        click.echo(f"vshare: {mountpoint}: {exc.strerror or exc}", err=True)
        sys.exit(1)
