"""What every resource of the control service shares: the store and volumes it works on,
who may do what (:meth:`ServiceBase._admin_only`, :meth:`ServiceBase._tenant_for`), and
the one lookup of a share as a caller may see it (:meth:`ServiceBase.get_share`)."""

from __future__ import annotations

from vshare.control._caller import Caller
from vshare.control._errors import Forbidden
from vshare.control._volumes import Volumes
from vshare.store import NotFound, ShareRecord, Store


class ServiceBase:
    """The state and the tenancy checks the resource classes of :class:`ControlService`
    (``_shares``, ``_rules``, ``_instances``, ``_tokens``, ``_gateways``, ``_quotas``)
    build on."""

    store: Store
    volumes: Volumes

    def get_share(self, caller: Caller, name_or_id: str) -> ShareRecord:
        """The share named ``name_or_id`` (its name or id), if the caller may see it.

        Raises:
            NotFound: no such share, or one of another tenant (the same answer).
        """
        share = self.store.find_share(name_or_id) if isinstance(name_or_id, str) else None
        if share is None or not caller.owns(share.tenant):
            raise NotFound(f"no share {name_or_id!r}")
        return share

    @staticmethod
    def _admin_only(caller: Caller, what: str) -> None:
        if not caller.admin:
            raise Forbidden(f"only the admin may {what}")

    @staticmethod
    def _listed_tenant(caller: Caller, tenant: str | None, what: str) -> str | None:
        """Whose ``what`` a listing shows: a tenant its own only, the admin ``tenant``'s
        (None: everyone's)."""
        if caller.admin:
            return tenant
        if tenant is not None and tenant != caller.tenant:
            raise Forbidden(f"a token of tenant {caller.tenant} lists only its own {what}")
        return caller.tenant

    @staticmethod
    def _tenant_for(caller: Caller, tenant: str | None, what: str) -> str:
        if caller.admin:
            if tenant is None:
                raise ValueError(f"an admin must say which tenant to {what} for (tenant)")
            return tenant
        assert caller.tenant is not None  # Caller's invariant
        if tenant is not None and tenant != caller.tenant:
            raise Forbidden(f"a token of tenant {caller.tenant} cannot {what} for {tenant}")
        return caller.tenant
