"""The endpoints under ``/v1``: parse, call the service, shape the answer; nothing else.

Handlers are plain ``def``: the service blocks (store and volume I/O), so FastAPI runs them
in its worker threads. Errors are the service's exceptions; ``_app.py`` turns them into
statuses and the JSON error body.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Query, Response, status

from vshare.api._deps import CallerDep, ServiceDep, no_unknown_query
from vshare.api._models import (
    GatewayList,
    Health,
    InstanceBody,
    InstanceCreate,
    InstanceList,
    InstanceOut,
    Quota,
    QuotaList,
    QuotaUpdate,
    Rule,
    RuleCreate,
    RuleList,
    RuleUpdate,
    ShareCreate,
    ShareList,
    ShareOut,
    ShareResize,
    ShareUpdate,
    TokenCreate,
    TokenCreated,
    TokenList,
    VolumeList,
    WhoAmI,
    gateway_out,
    instance_out,
    quota_out,
    rule_out,
    share_out,
    token_out,
    volume_out,
)
from vshare.control import Caller, ControlService
from vshare.store import InstanceRecord, ShareRecord

#: What a delete that answers nothing declares (204, no body).
_NO_CONTENT: Final[dict[str, Any]] = {
    "status_code": status.HTTP_204_NO_CONTENT,
    "response_class": Response,
}


def _no_content() -> Response:
    return Response(status_code=status.HTTP_204_NO_CONTENT)


TenantQuery = Annotated[str | None, Query(description="Only this tenant's (admin).")]


def _routes(tag: str) -> APIRouter:
    """The endpoints of one resource: under ``/v1``, grouped under ``tag`` in the OpenAPI
    document, refusing query parameters they do not know."""
    return APIRouter(prefix="/v1", tags=[tag], dependencies=[Depends(no_unknown_query)])


health_routes = _routes("health")
share_routes = _routes("shares")
access_routes = _routes("access")
instance_routes = _routes("instances")
quota_routes = _routes("quotas")
gateway_routes = _routes("gateways")
volume_routes = _routes("volumes")
token_routes = _routes("tokens")
#: What the app includes, in this order (the OpenAPI document lists them so).
ROUTERS: Final = (
    health_routes,
    share_routes,
    access_routes,
    instance_routes,
    quota_routes,
    gateway_routes,
    volume_routes,
    token_routes,
)


def _share(service: ControlService, share: ShareRecord) -> ShareOut:
    return share_out(share, service.volume_of(share), service.waiting_for(share))


@health_routes.get("/health", operation_id="health", summary="Is the API up and its store readable")
def health(service: ServiceDep) -> Health:
    return Health(status="ok", revision=service.store.revision())


@token_routes.get("/whoami", operation_id="whoami", summary="Who this token is")
def whoami(caller: CallerDep) -> WhoAmI:
    return WhoAmI(token=caller.name, admin=caller.admin, tenant=caller.tenant)


# --- shares -------------------------------------------------------------------------------


@share_routes.get("/shares", operation_id="list_shares")
def list_shares(service: ServiceDep, caller: CallerDep, tenant: TenantQuery = None) -> ShareList:
    """The shares this token may see: a tenant's own, or every share for the admin."""
    return ShareList(shares=[_share(service, s) for s in service.list_shares(caller, tenant)])


@share_routes.post("/shares", operation_id="create_share", status_code=status.HTTP_201_CREATED)
def create_share(service: ServiceDep, caller: CallerDep, body: ShareCreate) -> ShareOut:
    """Create a share and its directory on the volume; 409 if the name is taken."""
    share = service.create_share(
        caller,
        body.name,
        body.size_gib,
        tenant=body.tenant,
        volume=body.volume,
        cache=body.cache,
    )
    return _share(service, share)


@share_routes.get("/shares/{share}", operation_id="get_share")
def get_share(service: ServiceDep, caller: CallerDep, share: str) -> ShareOut:
    """One share, by name or id."""
    return _share(service, service.get_share(caller, share))


@share_routes.put("/shares/{share}", operation_id="update_share")
def update_share(service: ServiceDep, caller: CallerDep, share: str, body: ShareUpdate) -> ShareOut:
    """Change the share's settings: its cache mode (new mounts get it; existing ones keep
    theirs); 409 while the share is being created, resized or deleted."""
    return _share(service, service.set_share_cache(caller, share, body.cache))


@share_routes.delete("/shares/{share}", operation_id="delete_share", **_NO_CONTENT)
def delete_share(
    service: ServiceDep,
    caller: CallerDep,
    share: str,
    force: Annotated[bool, Query(description="Also when not empty: remove its files.")] = False,
) -> Response:
    """Delete a share, its rules and its directory; 409 if not empty, unless force."""
    service.delete_share(caller, share, force=force)
    return _no_content()


@share_routes.post("/shares/{share}/extend", operation_id="extend_share")
def extend_share(service: ServiceDep, caller: CallerDep, share: str, body: ShareResize) -> ShareOut:
    """Grow the share's quota to size_gib."""
    return _share(service, service.extend_share(caller, share, body.size_gib))


@share_routes.post("/shares/{share}/shrink", operation_id="shrink_share")
def shrink_share(service: ServiceDep, caller: CallerDep, share: str, body: ShareResize) -> ShareOut:
    """Shrink the share's quota to size_gib; 409 if it holds more than that."""
    return _share(service, service.shrink_share(caller, share, body.size_gib))


# --- access rules -------------------------------------------------------------------------


@access_routes.get("/shares/{share}/access", operation_id="list_access")
def list_access(
    service: ServiceDep,
    caller: CallerDep,
    share: str,
    include_deleted: Annotated[bool, Query(description="Also rules in state deleted.")] = False,
) -> RuleList:
    """The share's access rules, oldest first."""
    rules = service.list_rules(caller, share, include_deleted=include_deleted)
    return RuleList(access=[rule_out(r) for r in rules])


@access_routes.post(
    "/shares/{share}/access",
    operation_id="allow_access",
    status_code=status.HTTP_201_CREATED,
)
def allow_access(service: ServiceDep, caller: CallerDep, share: str, body: RuleCreate) -> Rule:
    """Add a rule (state queued_to_apply; gateways apply it); 409 for a duplicate."""
    rule = service.allow(caller, share, body.access_type, body.access_to, body.access_level)
    return rule_out(rule)


@access_routes.put("/shares/{share}/access/{rule_id}", operation_id="update_access")
def update_access(
    service: ServiceDep, caller: CallerDep, share: str, rule_id: str, body: RuleUpdate
) -> Rule:
    """Change a rule's access level (Manila's access-update); 409 while it is withdrawn."""
    return rule_out(service.update_level(caller, share, rule_id, body.access_level))


@access_routes.delete("/shares/{share}/access/{rule_id}", operation_id="deny_access")
def deny_access(service: ServiceDep, caller: CallerDep, share: str, rule_id: str) -> Rule:
    """Withdraw a rule: state deleted if it was never applied, else queued_to_deny."""
    return rule_out(service.deny(caller, share, rule_id))


# --- instances ----------------------------------------------------------------------------


@instance_routes.get("/instances", operation_id="list_instances")
def list_instances(
    service: ServiceDep, caller: CallerDep, tenant: TenantQuery = None
) -> InstanceList:
    """The instances this token may see: a tenant's own, or all for the admin."""
    records = service.list_instances(caller, tenant)
    return InstanceList(instances=[instance_out(r) for r in records])


@instance_routes.post(
    "/instances",
    operation_id="register_instance",
    status_code=status.HTTP_201_CREATED,
)
def register_instance(service: ServiceDep, caller: CallerDep, body: InstanceCreate) -> InstanceOut:
    """Register an instance and its identities (admin); 409 if the uuid or an identity
    is taken."""
    return instance_out(_register(service, caller, body.uuid, body, replace=False))


@instance_routes.get("/instances/{uuid}", operation_id="get_instance")
def get_instance(service: ServiceDep, caller: CallerDep, uuid: str) -> InstanceOut:
    return instance_out(service.get_instance(caller, uuid))


@instance_routes.put("/instances/{uuid}", operation_id="replace_instance")
def replace_instance(
    service: ServiceDep, caller: CallerDep, uuid: str, body: InstanceBody
) -> InstanceOut:
    """Register the instance, or replace its tenant, name and identities (admin)."""
    return instance_out(_register(service, caller, uuid, body, replace=True))


@instance_routes.delete("/instances/{uuid}", operation_id="remove_instance", **_NO_CONTENT)
def remove_instance(service: ServiceDep, caller: CallerDep, uuid: str) -> Response:
    """Forget an instance (admin). Rules naming it stay."""
    service.remove_instance(caller, uuid)
    return _no_content()


def _register(
    service: ControlService, caller: Caller, uuid: str, body: InstanceBody, *, replace: bool
) -> InstanceRecord:
    return service.register_instance(
        caller,
        uuid,
        tenant=body.tenant,
        name=body.name,
        cids=body.cids,
        sockets=body.sockets,
        ips=body.ips,
        certs=body.certs,
        replace=replace,
    )


# --- quotas -------------------------------------------------------------------------------


@quota_routes.get("/quotas", operation_id="list_quotas")
def list_quotas(service: ServiceDep, caller: CallerDep) -> QuotaList:
    """The defaults, and the limits and usage of every tenant with an override or a share
    (admin)."""
    defaults, tenants = service.list_quotas(caller)
    return QuotaList(defaults=quota_out(defaults), quotas=[quota_out(q) for q in tenants])


@quota_routes.get("/quota-defaults", operation_id="get_default_quota")
def get_default_quota(service: ServiceDep, caller: CallerDep) -> Quota:
    """The limits of every tenant without an override of its own."""
    return quota_out(service.default_quota(caller))


@quota_routes.put("/quota-defaults", operation_id="set_default_quota")
def set_default_quota(service: ServiceDep, caller: CallerDep, body: QuotaUpdate) -> Quota:
    """Change the defaults (admin), for every API server of a fleet (they are stored)."""
    return quota_out(service.set_quota(caller, None, body.model_dump(exclude_unset=True)))


@quota_routes.get("/quotas/{tenant}", operation_id="get_quota")
def get_quota(service: ServiceDep, caller: CallerDep, tenant: str) -> Quota:
    """A tenant's limits and usage (its own for a tenant token; any for the admin)."""
    return quota_out(service.get_quota(caller, tenant))


@quota_routes.put("/quotas/{tenant}", operation_id="set_quota")
def set_quota(service: ServiceDep, caller: CallerDep, tenant: str, body: QuotaUpdate) -> Quota:
    """Override a tenant's limits (admin); fields left out are kept, null ones fall back
    to the defaults. Lowering a limit below usage refuses only what would grow it."""
    return quota_out(service.set_quota(caller, tenant, body.model_dump(exclude_unset=True)))


@quota_routes.delete("/quotas/{tenant}", operation_id="reset_quota")
def reset_quota(service: ServiceDep, caller: CallerDep, tenant: str) -> Quota:
    """Remove a tenant's override (admin): the defaults apply; answers the quota now."""
    return quota_out(service.set_quota(caller, tenant, {"shares": None, "gigabytes": None}))


# --- gateways and tokens ------------------------------------------------------------------


@gateway_routes.get("/gateways", operation_id="list_gateways")
def list_gateways(service: ServiceDep, caller: CallerDep) -> GatewayList:
    """Every registered gateway and whether its heartbeat is current (admin)."""
    return GatewayList(gateways=[gateway_out(g) for g in service.list_gateways(caller)])


@volume_routes.get("/volumes", operation_id="list_volumes")
def list_volumes(service: ServiceDep, caller: CallerDep) -> VolumeList:
    """Every volume shares are made in, with its size and free space (admin)."""
    return VolumeList(volumes=[volume_out(v) for v in service.list_volumes(caller)])


@token_routes.get("/tokens", operation_id="list_tokens")
def list_tokens(service: ServiceDep, caller: CallerDep) -> TokenList:
    """Every API token (admin); secrets are never stored, so never shown."""
    return TokenList(tokens=[token_out(t) for t in service.list_tokens(caller)])


@token_routes.post("/tokens", operation_id="create_token", status_code=status.HTTP_201_CREATED)
def create_token(service: ServiceDep, caller: CallerDep, body: TokenCreate) -> TokenCreated:
    """Create a token (admin); the answer holds its secret, shown this once."""
    record, secret = service.create_token(caller, body.name, body.tenant)
    return TokenCreated(**token_out(record).model_dump(), secret=secret)


@token_routes.delete("/tokens/{name}", operation_id="revoke_token", **_NO_CONTENT)
def revoke_token(service: ServiceDep, caller: CallerDep, name: str) -> Response:
    """Revoke a token (admin); not the one this request uses (409)."""
    service.revoke_token(caller, name)
    return _no_content()
