"""``vshare umount MOUNTPOINT``: the counterpart of ``vshare mount``, for either client
(:func:`vshare.node.mounts.unmount_any` does it)."""

from __future__ import annotations

import click

from vshare.cli._fail import EXIT_REFUSED, fail
from vshare.node.mounts import unmount_any


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
        fail(f"{mountpoint}: {exc.strerror or exc}", EXIT_REFUSED)
