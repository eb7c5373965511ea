"""The vshare FUSE client: mount a share through the reconnecting async client
(:mod:`vshare.client`), speaking the kernel's FUSE protocol itself (``device/``).

- :func:`mount_main` / :func:`unmount`: what ``vshare mount`` / ``vshare umount`` call.
- ``python -m vshare.fuse URI SHARE MOUNTPOINT [--gateway URI ...] [--cache MODE]
  [--readonly] [--reconnect-timeout S] [--msize N] [--foreground]``.
- ``_ops.py``: the file system (inodes, cache modes, what FUSE can and cannot carry);
  ``_files.py``: its open-file handlers; ``_dirs.py``: readdir; ``_base.py``: shared state.
"""

from vshare.fuse._mount import is_mounted, mount_main, unmount

__all__ = ["is_mounted", "mount_main", "unmount"]
