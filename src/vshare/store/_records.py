"""The records a store holds: frozen, validated, in Manila's vocabulary where it fits.

Every record validates itself in ``__post_init__`` and raises ``ValueError`` with a one-line
message; values that have one canonical spelling are normalized there (an IP network, a
certificate fingerprint, an enum given as its string), so two records that mean the same
thing compare equal and collide in the store's uniqueness checks.

Fields the store owns:

- ``id`` (shares, rules): empty means "the store assigns a uuid4 string on create".
- ``created_at``: UTC; defaults to the moment the record is built, and a store keeps what it
  is given (so an import or a migration between stores keeps the original times).
- ``revision`` (shares, rules): the store revision of the record's last write; 0 until it is
  stored. It is what ``expect_revision`` compares against.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import re
import uuid as uuid_mod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Final, Literal, NamedTuple, TypeVar

from vshare.policy import ACCESS_TYPES, AccessRule, Instance, Level, normalize_fingerprint
from vshare.terms import CACHE_MODES, DEFAULT_CACHE_MODE, CacheMode

#: The longest name, tenant or id a store accepts, in UTF-8 bytes (Manila's limit).
MAX_NAME: Final = 255
#: The longest share path or backend reference, in UTF-8 bytes (PATH_MAX).
MAX_PATH: Final = 4096
#: The largest share size (1 ZiB): bounds what an API client can make us store and report.
MAX_SIZE_GIB: Final = 2**40
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_E = TypeVar("_E", bound=enum.StrEnum)

#: The store's older names for :mod:`vshare.terms`' cache modes (what a share's requests may
#: be answered from without asking the storage: ``none``, ``meta``, ``all``), kept for
#: callers outside the store (the CLI, the gateway config).
ShareCache = CacheMode
SHARE_CACHE_MODES: Final = CACHE_MODES
DEFAULT_SHARE_CACHE: Final = DEFAULT_CACHE_MODE

Kind = Literal["share", "rule", "instance", "gateway", "token", "quota"]
Op = Literal["put", "delete"]
KINDS: Final[tuple[Kind, ...]] = ("share", "rule", "instance", "gateway", "token", "quota")
#: A quota limit meaning "no limit" (Manila's -1).
UNLIMITED: Final = -1
#: The largest quota limit: 2**53 - 1, the largest integer every JSON reader keeps exact.
MAX_QUOTA: Final = 2**53 - 1


class ShareStatus(enum.StrEnum):
    """A share's life cycle, as Manila names it."""

    CREATING = "creating"
    AVAILABLE = "available"
    EXTENDING = "extending"
    SHRINKING = "shrinking"
    DELETING = "deleting"
    ERROR = "error"


class RuleState(enum.StrEnum):
    """An access rule's life cycle, as Manila names it. A rule in state ``deleted`` is a
    tombstone: it no longer counts for the uniqueness of (share, access_type, access_to)."""

    QUEUED_TO_APPLY = "queued_to_apply"
    APPLYING = "applying"
    ACTIVE = "active"
    ERROR = "error"
    QUEUED_TO_DENY = "queued_to_deny"
    DENYING = "denying"
    DELETED = "deleted"


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def new_id() -> str:
    """A fresh record id: a uuid4 string."""
    return str(uuid_mod.uuid4())


def hash_token(secret: str) -> str:
    """The SHA-256 hex digest under which an API token is stored and looked up.

    A plain hash is enough: tokens are long random strings (not passwords), so there is
    nothing to brute-force; a slow KDF would only slow every API request.

    Raises:
        ValueError: an empty secret.
    """
    if not secret:
        raise ValueError("a token secret must not be empty")
    return hashlib.sha256(secret.encode()).hexdigest()


# --- validation helpers (each raises ValueError with a one-line message) ---------------------


def _text(value: object, what: str, *, limit: int = MAX_NAME, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, not {type(value).__name__}")
    if not empty and not value.strip():
        raise ValueError(f"{what} must not be empty")
    if _CONTROL.search(value):
        raise ValueError(f"{what} {value!r} must not contain control characters")
    if len(value.encode()) > limit:
        raise ValueError(f"{what} is longer than {limit} bytes")
    return value


def _key(value: object, what: str) -> str:
    """An id or name used as a key: text without '/' (a path separator in etcd keys)."""
    text = _text(value, what)
    if "/" in text:
        raise ValueError(f"{what} {text!r} must not contain '/'")
    return text


def _int(value: object, what: str, low: int, high: int | None = None) -> int:
    # bool is an int subclass; True as a size is a bug, not 1 GiB.
    if type(value) is not int:
        raise ValueError(f"{what} must be an integer, not {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{what} must be {bound}, not {value}")
    return value


def _time(value: object, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise ValueError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")
    return value.astimezone(UTC)


def _enum(cls: type[_E], value: object, what: str) -> _E:
    try:
        if not isinstance(value, str):
            raise ValueError
        return cls(value)
    except ValueError:
        choices = ", ".join(m.value for m in cls)
        raise ValueError(f"{what} {value!r} is not one of {choices}") from None


def _set(obj: object, name: str, value: object) -> None:
    # Normalizing a frozen dataclass's field in __post_init__ is the documented idiom.
    object.__setattr__(obj, name, value)


# --- records ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareRecord:
    """A share: a subdirectory of a backend volume, owned by a tenant.

    ``name`` is unique across the store, and names and ids share one namespace (no share's
    name is another share's id): a 9P attach names a share by either, and must not be
    ambiguous. ``backend`` names the backend volume as the gateways know it (for example
    ``posix:/srv/vol`` or ``gluster://host/vol``); ``path`` is the share's directory in it,
    relative and canonical (``shares/a``: no leading or trailing ``/``, no empty, ``.`` or
    ``..`` components). ``uid``/``gid`` are what guests see as owner in squash mode.
    ``cache`` is the share's cache mode (:data:`vshare.terms.CacheMode`); a gateway applies
    it to each new attachment, so a change reaches new mounts, not existing ones.

    Raises:
        ValueError: a field is malformed (the message names it).
    """

    id: str = ""
    name: str
    tenant: str
    backend: str
    path: str
    size_gib: int
    status: ShareStatus = ShareStatus.CREATING
    uid: int = 0
    gid: int = 0
    cache: CacheMode = DEFAULT_CACHE_MODE
    created_at: datetime = field(default_factory=utcnow)
    revision: int = 0

    def __post_init__(self) -> None:
        if self.id:
            _key(self.id, "share id")
        name = _key(self.name, "share name")
        if ";" in name:
            raise ValueError(f"share name {name!r} must not contain ';'")
        _text(self.tenant, f"share {name!r}: tenant")
        _text(self.backend, f"share {name!r}: backend", limit=MAX_PATH)
        _text(self.path, f"share {name!r}: path", limit=MAX_PATH)
        parts = self.path.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ValueError(
                f"share {name!r}: path {self.path!r} must be a subdirectory of the volume"
                " (relative, no empty, '.' or '..' components)"
            )
        _int(self.size_gib, f"share {name!r}: size_gib", 1, MAX_SIZE_GIB)
        _set(self, "status", _enum(ShareStatus, self.status, f"share {name!r}: status"))
        _int(self.uid, f"share {name!r}: uid", 0, 0xFFFFFFFE)
        _int(self.gid, f"share {name!r}: gid", 0, 0xFFFFFFFE)
        if not isinstance(self.cache, str) or self.cache not in CACHE_MODES:
            raise ValueError(
                f"share {name!r}: cache {self.cache!r} is not one of {', '.join(CACHE_MODES)}"
            )
        _set(self, "created_at", _time(self.created_at, f"share {name!r}: created_at"))
        _int(self.revision, f"share {name!r}: revision", 0)


def _normalize_access_to(access_type: str, access_to: str) -> str:
    if access_type == "ip":
        net = ipaddress.ip_network(access_to.strip(), strict=False)
        # One address is written as an address; a network as its network address/prefix.
        if net.prefixlen == net.max_prefixlen:
            return str(net.network_address)
        return str(net)
    if access_type == "cert":
        try:
            return normalize_fingerprint(access_to)
        except ValueError:
            return access_to  # a certificate's common name, matched verbatim
    return access_to


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleRecord:
    """An access rule of a share (Manila's access_type/access_to/access_level/state).

    ``access_type`` is one of ``vshare.policy.ACCESS_TYPES``: ``instance`` (a uuid), ``ip``
    (an address or CIDR), ``cert`` (a SHA-256 fingerprint or a certificate CN), ``user`` (a
    local uid, for host-local tools). ``access_to`` is normalized: an IP network in canonical
    form (``10.0.0.7/8`` → ``10.0.0.0/8``, ``10.0.0.7/32`` → ``10.0.0.7``), a fingerprint as
    64 lowercase hex digits.

    Raises:
        ValueError: a field is malformed (the message names it).
    """

    id: str = ""
    share_id: str
    access_type: str
    access_to: str
    level: Level = Level.RW
    state: RuleState = RuleState.QUEUED_TO_APPLY
    created_at: datetime = field(default_factory=utcnow)
    revision: int = 0
    #: An instance rule an admin made for an instance of another tenant than the share's,
    #: on purpose: it grants whatever tenant the instance is in. Every other instance rule
    #: grants only while the instance belongs to the share's tenant (rules follow tenancy).
    cross_tenant: bool = False

    def __post_init__(self) -> None:
        if self.id:
            _key(self.id, "rule id")
        _key(self.share_id, "rule share_id")
        _text(self.access_type, "rule access_type")
        if self.access_type not in ACCESS_TYPES:
            raise ValueError(
                f"access type {self.access_type!r} is not one of {', '.join(sorted(ACCESS_TYPES))}"
            )
        what = f"{self.access_type} rule"
        _text(self.access_to, f"{what}: access_to")
        try:
            access_to = _normalize_access_to(self.access_type, self.access_to)
            level = _enum(Level, self.level, f"{what}: level")
            AccessRule(self.access_type, access_to, level)  # policy's own checks
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
        _set(self, "access_to", access_to)
        _set(self, "level", level)
        _set(self, "state", _enum(RuleState, self.state, f"{what}: state"))
        _set(self, "created_at", _time(self.created_at, f"{what}: created_at"))
        _int(self.revision, f"{what}: revision", 0)
        if type(self.cross_tenant) is not bool:
            raise ValueError(f"{what}: cross_tenant must be true or false")
        if self.cross_tenant and self.access_type != "instance":
            raise ValueError(f"{what}: only an instance rule can be cross_tenant")

    def to_policy(self, share_tenant: str | None = None) -> AccessRule:
        """The rule as ``vshare.policy`` decides with it (state is the caller's concern:
        which states grant access is the control plane's rule, not the store's).

        ``share_tenant``: the tenant of the rule's share; an instance rule then grants only
        while the instance belongs to it, unless the rule is :attr:`cross_tenant`."""
        tenant = None
        if self.access_type == "instance" and not self.cross_tenant and share_tenant:
            tenant = share_tenant
        return AccessRule(self.access_type, self.access_to, self.level, tenant)


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceRecord:
    """A known VM or machine: a ``vshare.policy.Instance`` (uuid, tenant, name, identities,
    validated and normalized there) and when it was first stored.

    Each identity belongs to at most one instance in a store.

    Raises:
        ValueError: not an Instance, or a uuid that cannot be a key.
    """

    instance: Instance
    created_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        if not isinstance(self.instance, Instance):
            raise ValueError(f"instance must be a policy Instance, not {type(self.instance)}")
        _key(self.instance.uuid, "instance uuid")
        _text(self.instance.tenant, f"instance {self.instance.uuid}: tenant", empty=True)
        _text(self.instance.name, f"instance {self.instance.uuid}: name", empty=True)
        _set(self, "created_at", _time(self.created_at, "instance created_at"))

    @property
    def uuid(self) -> str:
        return self.instance.uuid

    @property
    def tenant(self) -> str:
        return self.instance.tenant


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRecord:
    """An API bearer token: a name, the SHA-256 of its secret (see :func:`hash_token`), and
    the tenant it acts for (None: an admin token). The secret itself is never stored.

    Raises:
        ValueError: a field is malformed.
    """

    name: str
    hash: str
    tenant: str | None = None
    created_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        name = _key(self.name, "token name")
        if not isinstance(self.hash, str) or not _HEX64.fullmatch(self.hash.lower()):
            raise ValueError(f"token {name!r}: hash must be a SHA-256 hex digest (64 hex digits)")
        _set(self, "hash", self.hash.lower())
        if self.tenant is not None:
            _text(self.tenant, f"token {name!r}: tenant")
        _set(self, "created_at", _time(self.created_at, f"token {name!r}: created_at"))

    @property
    def is_admin(self) -> bool:
        return self.tenant is None


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayRecord:
    """What a gateway says about itself when it heartbeats: its id (stable across
    restarts, e.g. the host name), the URIs it listens on, its version and host, and its
    load at that moment: ``sessions`` connected and ``requests_in_flight``.

    The load is not part of the registration: stores keep it with the heartbeat's time,
    so a heartbeat whose load moved is still only a renewal (no new revision, nothing in
    the change feed to wake the fleet's followers). :meth:`registration` is the rest.

    Raises:
        ValueError: a field is malformed.
    """

    id: str
    addresses: tuple[str, ...] = ()
    version: str = ""
    host: str = ""
    sessions: int = 0
    requests_in_flight: int = 0

    def __post_init__(self) -> None:
        gid = _key(self.id, "gateway id")
        if not isinstance(self.addresses, tuple | list):
            raise ValueError(f"gateway {gid}: addresses must be a list of URIs")
        for address in self.addresses:
            _text(address, f"gateway {gid}: address", limit=MAX_PATH)
        _set(self, "addresses", tuple(self.addresses))
        _text(self.version, f"gateway {gid}: version", empty=True)
        _text(self.host, f"gateway {gid}: host", empty=True)
        _int(self.sessions, f"gateway {gid}: sessions", 0)
        _int(self.requests_in_flight, f"gateway {gid}: requests_in_flight", 0)

    def registration(self) -> GatewayRecord:
        """The record without its load: what changes only when the gateway does."""
        return replace(self, sessions=0, requests_in_flight=0)

    def with_load(self, sessions: int, requests_in_flight: int) -> GatewayRecord:
        return replace(self, sessions=sessions, requests_in_flight=requests_in_flight)


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayStatus:
    """A registered gateway as ``list_gateways`` reports it: ``healthy`` while its last
    heartbeat (``last_seen``, UTC) is younger than the ``ttl_seconds`` it asked for."""

    gateway: GatewayRecord
    last_seen: datetime
    ttl_seconds: float
    healthy: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaRecord:
    """A tenant's quota override, or (``tenant`` empty) the defaults of every tenant, in
    Manila's vocabulary: ``shares`` (how many) and ``gigabytes`` (the sum of their
    ``size_gib``). A limit is a number, :data:`UNLIMITED` (-1), or None: not set here, so
    the defaults' limit applies (for the defaults record: the built-in default,
    ``vshare.store.DEFAULT_QUOTA``). A record that sets nothing is not stored.

    Raises:
        ValueError: a field is malformed.
    """

    tenant: str = ""
    shares: int | None = None
    gigabytes: int | None = None

    def __post_init__(self) -> None:
        what = f"quota of tenant {self.tenant!r}" if self.tenant else "default quota"
        if self.tenant:
            _text(self.tenant, "quota tenant")
        elif not isinstance(self.tenant, str):
            raise ValueError(f"quota tenant must be a string, not {type(self.tenant).__name__}")
        for name in ("shares", "gigabytes"):
            value = getattr(self, name)
            if value is not None:
                _int(value, f"{what}: {name}", UNLIMITED, MAX_QUOTA)

    @property
    def is_default(self) -> bool:
        """Whether this is the defaults record (no tenant)."""
        return not self.tenant

    @property
    def is_empty(self) -> bool:
        """Whether it sets no limit (storing it means removing the override)."""
        return self.shares is None and self.gigabytes is None


Record = ShareRecord | RuleRecord | InstanceRecord | TokenRecord | GatewayRecord | QuotaRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One entry of the change feed.

    ``key`` is the record's key (share and rule id, instance uuid, token name, gateway id,
    a quota's tenant: empty for the defaults);
    ``record`` is the record as written for ``put`` and None for ``delete``. Changes made by
    one write share that write's ``revision``.
    """

    revision: int
    kind: Kind
    key: str
    op: Op
    record: Record | None


class Snapshot(NamedTuple):
    """Everything a gateway needs, read in one transaction, and the revision it is at: a
    follower applies :meth:`Store.changes_since` ``(snapshot.revision)`` on top of it."""

    revision: int
    shares: tuple[ShareRecord, ...]
    rules: tuple[RuleRecord, ...]
    instances: tuple[InstanceRecord, ...]


def apply_changes(snapshot: Snapshot, changes: Sequence[Change]) -> Snapshot:
    """The state of ``snapshot`` with ``changes`` (from ``Store.changes_since(snapshot.
    revision)``) applied on top, in the order ``Store.snapshot`` returns records: what a
    follower keeps instead of reading the whole store at every change. Tokens, gateways
    and quotas are not part of a snapshot (gateways need none of them) and are passed
    over. Both stores' conformance suite checks that this equals a fresh ``snapshot()``.

    Raises:
        ValueError: the changes go back in revision, or a change is malformed.
    """
    shares = {s.id: s for s in snapshot.shares}
    rules = {r.id: r for r in snapshot.rules}
    instances = {i.uuid: i for i in snapshot.instances}
    revision = snapshot.revision
    for change in changes:
        if change.revision < revision:
            raise ValueError(f"change at revision {change.revision} after {revision}")
        revision = change.revision
        record = change.record
        if (record is None) != (change.op == "delete"):
            raise ValueError(f"malformed change {change}")
        if change.kind == "share":
            shares.pop(change.key, None)
            if isinstance(record, ShareRecord):
                shares[change.key] = record
        elif change.kind == "rule":
            rules.pop(change.key, None)
            if isinstance(record, RuleRecord):
                rules[change.key] = record
        elif change.kind == "instance":
            instances.pop(change.key, None)
            if isinstance(record, InstanceRecord):
                instances[change.key] = record
    return Snapshot(
        revision=revision,
        shares=tuple(sorted(shares.values(), key=lambda s: s.name)),
        rules=tuple(sorted(rules.values(), key=lambda r: (r.share_id, r.created_at, r.id))),
        instances=tuple(sorted(instances.values(), key=lambda i: i.uuid)),
    )
