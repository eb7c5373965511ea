"""The API's request and response bodies (pydantic), and how records become responses.

Requests refuse unknown fields (``extra="forbid"``): a misspelt field is a 400, not a
silently ignored wish. Their numbers are strict (``StrictInt``): ``true`` or ``"10"`` where a
number is meant is a 400, not a size of 1 or 10. Responses never carry a token's hash or a
volume's backend URI (storage details stay on the server; a share names its volume).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from vshare.control import GIB, VolumeInfo
from vshare.store import (
    MAX_QUOTA,
    GatewayStatus,
    InstanceRecord,
    QuotaUsage,
    RuleRecord,
    ShareRecord,
    TokenRecord,
)
from vshare.terms import DEFAULT_CACHE_MODE, SHARE_NAME, CacheMode

#: The largest share size a request may ask for (the store's limit: 1 ZiB).
MAX_SIZE_GIB = 2**40

AccessType = Literal["instance", "ip", "cert", "user"]
AccessLevel = Literal["ro", "rw"]
_CACHE_HELP: Final = (
    "none: every request asks the storage (strict coherence across hosts); meta: attributes"
    " and name lookups are cached (changes seen within about a second); all: file data too."
    " A change applies to new mounts; existing ones keep their mode."
)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- errors -------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="bad_request, unauthorized, forbidden, not_found, conflict, ...")
    message: str = Field(description="One line, for people.")


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


# --- shares -------------------------------------------------------------------------------


class ShareCreate(_Request):
    name: str = Field(
        pattern=f"^{SHARE_NAME.pattern}$",
        description="Unique across the store; guests attach by it (aname=NAME).",
    )
    size_gib: StrictInt = Field(ge=1, le=MAX_SIZE_GIB, description="Quota, in GiB.")
    tenant: str | None = Field(
        default=None, description="Whose share (the admin must say; a tenant gets its own)."
    )
    volume: str | None = Field(default=None, description="Volume name (default: the first).")
    cache: CacheMode = Field(default=DEFAULT_CACHE_MODE, description=_CACHE_HELP)


class ShareResize(_Request):
    size_gib: StrictInt = Field(ge=1, le=MAX_SIZE_GIB, description="The new size, in GiB.")


class ShareUpdate(_Request):
    cache: CacheMode = Field(description=_CACHE_HELP)


class ShareOut(BaseModel):
    id: str
    name: str
    tenant: str
    volume: str | None = Field(description="Volume name; null if not served by this API.")
    path: str = Field(description="The share's directory in its volume.")
    size_gib: int
    status: str = Field(description="creating, available, extending, shrinking, deleting, error")
    cache: CacheMode = Field(description=_CACHE_HELP)
    created_at: datetime
    waiting_for: str | None = Field(
        default=None,
        description="In a transitional or error status: what the share waits for (a"
        " request to finish, a delete with force), in one line; null when available.",
    )


class ShareList(BaseModel):
    shares: list[ShareOut]


def share_out(share: ShareRecord, volume: str | None, waiting_for: str | None = None) -> ShareOut:
    return ShareOut(
        id=share.id,
        name=share.name,
        tenant=share.tenant,
        volume=volume,
        path=share.path,
        size_gib=share.size_gib,
        status=share.status.value,
        cache=share.cache,
        created_at=share.created_at,
        waiting_for=waiting_for,
    )


# --- access rules -------------------------------------------------------------------------


class RuleCreate(_Request):
    access_type: AccessType = Field(description="instance, ip, cert or user.")
    access_to: str = Field(
        description="An instance uuid, an IP address or CIDR, a certificate's SHA-256"
        " fingerprint or CN, or a numeric uid."
    )
    access_level: AccessLevel = "rw"


class RuleUpdate(_Request):
    access_level: AccessLevel


class Rule(BaseModel):
    id: str
    share_id: str
    access_type: str
    access_to: str
    access_level: str
    state: str = Field(
        description="queued_to_apply, applying, active, error, queued_to_deny, denying, deleted"
    )
    created_at: datetime
    cross_tenant: bool = Field(
        default=False,
        description="An instance rule an admin made for an instance of another tenant: it"
        " grants whatever tenant the instance is in. Other instance rules grant only while"
        " the instance belongs to the share's tenant.",
    )


class RuleList(BaseModel):
    access: list[Rule]


def rule_out(rule: RuleRecord) -> Rule:
    return Rule(
        id=rule.id,
        share_id=rule.share_id,
        access_type=rule.access_type,
        access_to=rule.access_to,
        access_level=rule.level.value,
        state=rule.state.value,
        created_at=rule.created_at,
        cross_tenant=rule.cross_tenant,
    )


# --- instances ----------------------------------------------------------------------------


class InstanceBody(_Request):
    tenant: str = Field(description="The project the instance belongs to.")
    name: str = ""
    cids: list[StrictInt] = Field(default_factory=list, description="vsock CIDs (3 and up).")
    sockets: list[str] = Field(default_factory=list, description="Hybrid-vsock socket paths.")
    ips: list[str] = Field(default_factory=list, description="IP addresses.")
    certs: list[str] = Field(default_factory=list, description="Certificate SHA-256s.")


class InstanceCreate(InstanceBody):
    uuid: str


class InstanceOut(BaseModel):
    uuid: str
    tenant: str
    name: str
    cids: list[int]
    sockets: list[str]
    ips: list[str]
    certs: list[str]
    created_at: datetime


class InstanceList(BaseModel):
    instances: list[InstanceOut]


def instance_out(record: InstanceRecord) -> InstanceOut:
    i = record.instance
    return InstanceOut(
        uuid=i.uuid,
        tenant=i.tenant,
        name=i.name,
        cids=sorted(i.cids),
        sockets=sorted(i.sockets),
        ips=sorted(i.ips),
        certs=sorted(i.certs),
        created_at=record.created_at,
    )


# --- quotas -------------------------------------------------------------------------------

QuotaValue = Annotated[StrictInt, Field(ge=-1, le=MAX_QUOTA)]
_LIMIT_HELP: Final = (
    "The limit; -1: none; null: back to the defaults' limit. A field left out is kept."
)


class QuotaUpdate(_Request):
    shares: QuotaValue | None = Field(default=None, description=f"How many shares. {_LIMIT_HELP}")
    gigabytes: QuotaValue | None = Field(
        default=None, description=f"GiB in all the tenant's shares together. {_LIMIT_HELP}"
    )


class QuotaLimit(BaseModel):
    limit: int = Field(description="-1: no limit.")
    in_use: int | None = Field(description="The tenant's shares in every status; null: defaults.")
    set_by: Literal["tenant", "defaults", "built-in"] = Field(
        description="Where the limit comes from: the tenant's override, the defaults an"
        " admin set, or vshare's built-in default (Manila's: 50 shares, 1000 GiB)."
    )


class Quota(BaseModel):
    tenant: str | None = Field(description="null: the defaults, for tenants without override.")
    shares: QuotaLimit
    gigabytes: QuotaLimit


class QuotaList(BaseModel):
    defaults: Quota
    quotas: list[Quota] = Field(description="Every tenant with an override or a share.")


def quota_out(usage: QuotaUsage) -> Quota:
    """``usage`` as the API shows it (``tenant`` empty: the defaults, without usage)."""

    def limit(name: Literal["shares", "gigabytes"], limit: int, in_use: int) -> QuotaLimit:
        set_by: Literal["tenant", "defaults", "built-in"] = "built-in"
        if usage.tenant and getattr(usage.override, name) is not None:
            set_by = "tenant"
        elif getattr(usage.defaults, name) is not None:
            set_by = "defaults"
        return QuotaLimit(limit=limit, in_use=in_use if usage.tenant else None, set_by=set_by)

    return Quota(
        tenant=usage.tenant or None,
        shares=limit("shares", usage.shares, usage.used_shares),
        gigabytes=limit("gigabytes", usage.gigabytes, usage.used_gigabytes),
    )


# --- gateways, tokens, health -------------------------------------------------------------


class Gateway(BaseModel):
    id: str
    addresses: list[str]
    version: str
    host: str
    healthy: bool
    last_seen: datetime
    ttl_seconds: float
    sessions: int = Field(default=0, description="Sessions connected at the last heartbeat.")
    requests_in_flight: int = Field(default=0, description="At the last heartbeat.")


class GatewayList(BaseModel):
    gateways: list[Gateway]


class Volume(BaseModel):
    name: str
    default: bool = Field(description="Where shares go when a create names no volume.")
    total_gib: float | None = Field(description="The file system's size (None: unreadable now).")
    free_gib: float | None = Field(
        description="What may still be written (statvfs f_bavail; None: unreadable now)."
    )
    problem: str | None = Field(default=None, description="Why the capacity is unknown.")


class VolumeList(BaseModel):
    volumes: list[Volume]


def volume_out(info: VolumeInfo) -> Volume:
    def gib(n: int | None) -> float | None:
        return None if n is None else round(n / GIB, 3)

    return Volume(
        name=info.name,
        default=info.default,
        total_gib=gib(info.total_bytes),
        free_gib=gib(info.free_bytes),
        problem=info.problem,
    )


def gateway_out(status: GatewayStatus) -> Gateway:
    g = status.gateway
    return Gateway(
        id=g.id,
        addresses=list(g.addresses),
        version=g.version,
        host=g.host,
        healthy=status.healthy,
        last_seen=status.last_seen,
        ttl_seconds=status.ttl_seconds,
        sessions=g.sessions,
        requests_in_flight=g.requests_in_flight,
    )


class TokenCreate(_Request):
    name: str
    tenant: str | None = Field(default=None, description="null: an admin token.")


class Token(BaseModel):
    name: str
    tenant: str | None
    admin: bool
    created_at: datetime


class TokenCreated(Token):
    secret: str = Field(description="The bearer secret. Shown once; only its hash is kept.")


class TokenList(BaseModel):
    tokens: list[Token]


def token_out(token: TokenRecord) -> Token:
    return Token(
        name=token.name, tenant=token.tenant, admin=token.is_admin, created_at=token.created_at
    )


class WhoAmI(BaseModel):
    token: str
    admin: bool
    tenant: str | None


class Health(BaseModel):
    status: Literal["ok"]
    revision: int = Field(description="The store's revision.")
