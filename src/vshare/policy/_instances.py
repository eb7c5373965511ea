"""Instances, and how transport facts name one.

An :class:`Instance` is a VM (or a client machine) the operator knows: a uuid, the tenant
(project) it belongs to, a display name, and the identities under which it connects.
Each identity listed is enough on its own to be that instance:

=========  ===============================================================  =============
identity   matches                                                          transport
=========  ===============================================================  =============
``cid``    the vsock CID the hypervisor assigned                            vsock
``socket`` the VM's hybrid-vsock ``uds_path`` (the connection came in on     hvsock
           ``<uds_path>_<port>``)
``ip``     the peer address (one address, not a network)                    tcp, tls
``cert``   the SHA-256 fingerprint of the verified TLS client certificate   tls
=========  ===============================================================  =============

Unix-socket peers (host-local tools) are never instances: ``user`` access rules cover them.
The 9P ``uname``/``n_uname`` and attach options are not facts here, so they never name an
instance.

This module is pure: :func:`identity_keys` turns a connection's facts (anything shaped like
``transport.PeerIdentity``, see :class:`IdentityFacts`) into lookup keys, and
:attr:`Instance.keys` gives an instance's; a registry matches the two.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol

#: vsock CIDs 0-2 are the hypervisor, local loopback and the host; 2**32-1 is "any".
MIN_GUEST_CID: Final = 3
MAX_GUEST_CID: Final = 0xFFFFFFFE
_FINGERPRINT: Final = re.compile(r"[0-9a-f]{64}")

#: A lookup key: (identity type, normalized value).
Key = tuple[str, str]


class IdentityFacts(Protocol):
    """The transport facts an instance is resolved from (``transport.PeerIdentity`` has
    them all; policy may not import transport)."""

    @property
    def kind(self) -> str: ...
    @property
    def cid(self) -> int | None: ...
    @property
    def socket_path(self) -> str | None: ...
    @property
    def address(self) -> str | None: ...
    @property
    def cert_fingerprint(self) -> str | None: ...


def normalize_fingerprint(text: str) -> str:
    """``AB:CD:...`` or ``abcd...`` → 64 lowercase hex digits.

    Raises:
        ValueError: not a SHA-256 fingerprint.
    """
    value = text.replace(":", "").strip().lower()
    if not _FINGERPRINT.fullmatch(value):
        raise ValueError(f"{text!r} is not a SHA-256 fingerprint (64 hex digits)")
    return value


def normalize_ip(text: str) -> str:
    """One IP address in canonical form; an IPv4-mapped IPv6 address becomes IPv4 (what a
    dual-stack socket reports for an IPv4 peer).

    Raises:
        ValueError: not one IP address.
    """
    addr = ipaddress.ip_address(text.strip())
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.compressed


def normalize_socket(path: str) -> str:
    """An absolute hybrid-vsock socket path, normalized (no ``//``, ``.`` or trailing ``/``).

    Raises:
        ValueError: not an absolute path.
    """
    if not path.startswith("/") or "\0" in path:
        raise ValueError(f"socket {path!r} must be an absolute path")
    return posixpath.normpath(path)


@dataclass(frozen=True, slots=True)
class Instance:
    """A known VM or machine: uuid, tenant, name, and its identities (normalized here).

    ``tenant`` is the project (Manila/Nova) that owns it; empty when unknown (a libvirt
    domain without Nova metadata).

    Raises:
        ValueError: an empty uuid, no identity, or a malformed one.
    """

    uuid: str
    tenant: str = ""
    name: str = ""
    cids: frozenset[int] = field(default_factory=frozenset)
    sockets: frozenset[str] = field(default_factory=frozenset)
    ips: frozenset[str] = field(default_factory=frozenset)
    certs: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not self.uuid or not self.uuid.strip():
            raise ValueError("an instance needs a uuid")
        for cid in self.cids:
            if type(cid) is not int or not MIN_GUEST_CID <= cid <= MAX_GUEST_CID:
                raise ValueError(
                    f"instance {self.uuid}: cid {cid!r} is not a guest CID "
                    f"({MIN_GUEST_CID} to {MAX_GUEST_CID})"
                )
        try:
            sockets = frozenset(normalize_socket(s) for s in self.sockets)
            ips = frozenset(normalize_ip(a) for a in self.ips)
            certs = frozenset(normalize_fingerprint(c) for c in self.certs)
        except ValueError as exc:
            raise ValueError(f"instance {self.uuid}: {exc}") from None
        object.__setattr__(self, "cids", frozenset(self.cids))
        object.__setattr__(self, "sockets", sockets)
        object.__setattr__(self, "ips", ips)
        object.__setattr__(self, "certs", certs)
        if not self.keys:
            raise ValueError(f"instance {self.uuid}: needs at least one of cid, socket, ip, cert")

    @property
    def keys(self) -> frozenset[Key]:
        """Every identity of this instance as a lookup key."""
        return frozenset(
            [("cid", str(c)) for c in self.cids]
            + [("socket", s) for s in self.sockets]
            + [("ip", a) for a in self.ips]
            + [("cert", c) for c in self.certs]
        )

    def __str__(self) -> str:
        label = f" ({self.name})" if self.name else ""
        return f"{self.uuid}{label} tenant={self.tenant or '-'}"


def identity_keys(facts: IdentityFacts) -> list[Key]:
    """The keys a connection's facts may match, strongest first. Only the facts its
    transport vouches for count: a CID only over vsock, an address only over tcp/tls."""
    kind = facts.kind
    keys: list[Key] = []
    if kind == "vsock" and facts.cid is not None:
        keys.append(("cid", str(facts.cid)))
    elif kind == "hvsock" and facts.socket_path:
        try:
            keys.append(("socket", normalize_socket(facts.socket_path)))
        except ValueError:
            pass
    elif kind in ("tcp", "tls"):
        if kind == "tls" and facts.cert_fingerprint:
            keys.append(("cert", facts.cert_fingerprint.lower()))
        if facts.address:
            try:
                keys.append(("ip", normalize_ip(facts.address)))
            except ValueError:
                pass
    return keys


class InstanceRegistry(Protocol):
    """Who an identity is. Implemented in memory by ``gateway.instances.InstanceTable``
    (from config and libvirt); the control-plane store implements it later."""

    def resolve(self, facts: IdentityFacts) -> Instance | None:
        """The instance these transport facts identify, or None (nobody)."""
        ...


def check_unique(instances: Iterable[Instance]) -> None:
    """Raise ValueError if two instances share a uuid or an identity."""
    uuids: set[str] = set()
    owner: dict[Key, str] = {}
    for inst in instances:
        if inst.uuid in uuids:
            raise ValueError(f"two instances have the uuid {inst.uuid}")
        uuids.add(inst.uuid)
        for key in inst.keys:
            if key in owner:
                raise ValueError(
                    f"instances {owner[key]} and {inst.uuid} both claim {key[0]} {key[1]}"
                )
            owner[key] = inst.uuid
