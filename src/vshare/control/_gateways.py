"""Infrastructure, for the admin: gateways with their health, volumes with their
capacity."""

from __future__ import annotations

from typing import NamedTuple

from vshare.control._base import ServiceBase
from vshare.control._caller import Caller
from vshare.control._errors import VolumeUnavailable
from vshare.store import GatewayStatus


class VolumeInfo(NamedTuple):
    """A volume shares are made in, and its capacity as the file system under it says
    (None, with ``problem``, when it cannot be read now)."""

    name: str
    default: bool
    total_bytes: int | None
    free_bytes: int | None
    problem: str | None = None


class GatewayOps(ServiceBase):
    """The infrastructure methods of :class:`~vshare.control.ControlService`."""

    def list_gateways(self, caller: Caller) -> list[GatewayStatus]:
        """Every registered gateway with its health (admin only: infrastructure)."""
        self._admin_only(caller, "list gateways")
        return self.store.list_gateways()

    def list_volumes(self, caller: Caller) -> list[VolumeInfo]:
        """Every volume with its size and free space (admin only: infrastructure). Free
        is what an unprivileged writer may still use (statvfs's f_bavail)."""
        self._admin_only(caller, "list volumes")
        default = self.volumes.default
        out = []
        for name, uri in self.volumes.items():
            try:
                backend = self.volumes.backend(uri)
                root = backend.open_root("")
                try:
                    fs = backend.statfs(root)
                finally:
                    root.close()
            except VolumeUnavailable as exc:
                out.append(VolumeInfo(name, name == default, None, None, str(exc)))
                continue
            except OSError as exc:
                why = f"volume {name}: {exc.strerror or exc}"
                out.append(VolumeInfo(name, name == default, None, None, why))
                continue
            total, free = fs.blocks * fs.bsize, fs.bavail * fs.bsize
            out.append(VolumeInfo(name, name == default, total, free))
        return out
