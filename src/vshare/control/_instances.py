"""Instances: registered by the admin with the identities they connect with; seen by
their tenant."""

from __future__ import annotations

import logging
import re
import uuid as uuid_mod
from collections.abc import Iterable
from typing import Final

from vshare.control._base import ServiceBase
from vshare.control._caller import Caller
from vshare.policy import Instance
from vshare.store import Conflict, InstanceRecord, NotFound

log = logging.getLogger("vshare.control")

_OPAQUE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,254}")


def instance_uuid(text: str) -> str:
    """An instance id in its one spelling: a UUID in canonical lowercase form (so ``ABC…``
    and ``abc…`` name the same instance), or an opaque id of letters, digits and ``._:-``.

    Raises:
        ValueError: anything else (empty, spaces, ``/``, control characters, too long).
    """
    if not isinstance(text, str):
        raise ValueError(f"instance uuid must be a string, not {type(text).__name__}")
    try:
        return str(uuid_mod.UUID(text))
    except ValueError:
        pass
    if not _OPAQUE_ID.fullmatch(text):
        raise ValueError(
            f"instance uuid {text!r} is neither a UUID nor an id of letters, digits, '.', '_',"
            " ':' and '-'"
        )
    return text


class InstanceOps(ServiceBase):
    """The instance methods of :class:`~vshare.control.ControlService`."""

    def register_instance(
        self,
        caller: Caller,
        uuid: str,
        *,
        tenant: str,
        name: str = "",
        cids: Iterable[int] = (),
        sockets: Iterable[str] = (),
        ips: Iterable[str] = (),
        certs: Iterable[str] = (),
        replace: bool = False,
    ) -> InstanceRecord:
        """Register an instance (admin only): its tenant and the identities it connects
        with (at least one of a vsock CID, a hybrid-vsock socket, an IP, a certificate
        fingerprint). Without ``replace`` an existing uuid is a Conflict; with it, its
        identities are replaced.

        Raises:
            Forbidden: not the admin.
            ValueError: a malformed uuid, tenant or identity, or none at all.
            Conflict: the uuid exists (without replace), or an identity is another
                instance's.
        """
        self._admin_only(caller, "register instances")
        uuid = instance_uuid(uuid)
        if not isinstance(tenant, str) or not tenant.strip():
            raise ValueError(f"instance {uuid}: give the tenant it belongs to")
        record = InstanceRecord(
            instance=Instance(
                uuid=uuid,
                tenant=tenant,
                name=name,
                cids=frozenset(cids),
                sockets=frozenset(sockets),
                ips=frozenset(ips),
                certs=frozenset(certs),
            )
        )
        if not replace:
            # Not atomic with the put below: two registrations of one new uuid racing may
            # both pass, and the later one wins. Instances are registered by the operator,
            # one at a time; the identities themselves stay unique (the store checks them).
            try:
                self.store.get_instance(uuid)
            except NotFound:
                pass
            else:
                raise Conflict(f"instance {uuid} is registered; remove it first, or replace it")
        stored = self.store.put_instance(record)
        log.info("instance %s registered (tenant %s) by %s", stored.uuid, stored.tenant, caller)
        return stored

    def get_instance(self, caller: Caller, uuid: str) -> InstanceRecord:
        """The instance, if the caller may see it (admin, or its tenant).

        Raises:
            NotFound: no such instance, or another tenant's (the same answer).
        """
        try:
            record = self.store.get_instance(instance_uuid(uuid))
        except (NotFound, ValueError):
            record = None
        if record is None or not caller.owns(record.tenant):
            raise NotFound(f"no instance {uuid!r}")
        return record

    def remove_instance(self, caller: Caller, uuid: str) -> None:
        """Forget an instance (admin only); rules that name it stay.

        Raises:
            Forbidden, NotFound.
        """
        self._admin_only(caller, "remove instances")
        record = self.get_instance(caller, uuid)
        try:
            self.store.remove_instance(record.uuid)
        except NotFound:
            raise NotFound(f"no instance {uuid!r}") from None
        log.info("instance %s removed by %s", record.uuid, caller)

    def list_instances(self, caller: Caller, tenant: str | None = None) -> list[InstanceRecord]:
        """The instances the caller may see (of ``tenant`` if given), ordered by uuid.

        Raises:
            Forbidden: a tenant asking for another tenant's instances.
        """
        return self.store.list_instances(self._listed_tenant(caller, tenant, "instances"))
