"""Moved to :mod:`vshare.node.mounts`; this name stays for callers not yet moved."""

from vshare.node.mounts import MountEntry, find_mount

__all__ = ["MountEntry", "find_mount"]
