"""The kernel's side of a FUSE mount, spoken by us: ``/dev/fuse`` read and written on
the client's event loop (``session.py``), its bytes encoded and decoded without I/O
(``wire.py``), and what handlers take and return (``types.py``)."""

from vshare.fuse.device.session import DeviceSession, MountError, mount_device, unmount_device
from vshare.fuse.device.types import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    ROOT_INODE,
    EntryAttributes,
    FileInfo,
    FUSEError,
    RequestContext,
    SetattrFields,
    StatvfsData,
)
from vshare.fuse.device.wire import ReaddirToken

__all__ = [
    "RENAME_EXCHANGE",
    "RENAME_NOREPLACE",
    "ROOT_INODE",
    "DeviceSession",
    "EntryAttributes",
    "FUSEError",
    "FileInfo",
    "MountError",
    "ReaddirToken",
    "RequestContext",
    "SetattrFields",
    "StatvfsData",
    "mount_device",
    "unmount_device",
]
