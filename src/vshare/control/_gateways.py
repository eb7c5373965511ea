"""Gateways: listed with their health, for the admin (infrastructure)."""

from __future__ import annotations

from vshare.control._base import ServiceBase
from vshare.control._caller import Caller
from vshare.store import GatewayStatus


class GatewayOps(ServiceBase):
    """The gateway methods of :class:`~vshare.control.ControlService`."""

    def list_gateways(self, caller: Caller) -> list[GatewayStatus]:
        """Every registered gateway with its health (admin only: infrastructure)."""
        self._admin_only(caller, "list gateways")
        return self.store.list_gateways()
