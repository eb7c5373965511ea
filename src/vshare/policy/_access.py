"""Access rules in Manila's vocabulary, and the decision over them."""

from __future__ import annotations

import enum
import ipaddress
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final


class Level(enum.StrEnum):
    """Access level of a rule or of an attached session."""

    RO = "ro"
    RW = "rw"


#: ``instance``: an instance uuid (resolved from the hypervisor's facts);
#: ``ip``: an address or CIDR; ``cert``: a verified TLS client certificate, named by its
#: SHA-256 fingerprint (64 hex digits, colons optional) or, as in Manila, by its subject's
#: common name (anything else); ``user``: a local Unix uid (SO_PEERCRED), for host-local tools.
ACCESS_TYPES: Final = frozenset({"instance", "ip", "cert", "user"})
_FINGERPRINT: Final = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class AccessRule:
    """One rule of a share. ``tenant`` (instance rules only): the rule grants only while
    the instance belongs to that tenant, the share's (rules follow tenancy: an instance
    moved to another tenant loses what its old tenant gave it). None: no tenant condition
    (a rule an admin made across tenants on purpose, or a share of no tenant, as in a
    gateway's own config file)."""

    access_type: str
    access_to: str
    level: Level = Level.RW
    tenant: str | None = None

    def __post_init__(self) -> None:
        if self.access_type not in ACCESS_TYPES:
            raise ValueError(
                f"access type {self.access_type!r} is not one of {', '.join(sorted(ACCESS_TYPES))}"
            )
        if self.access_type == "ip":
            ipaddress.ip_network(self.access_to, strict=False)  # ValueError if malformed
        if not self.access_to.strip():
            raise ValueError(f"{self.access_type} rule needs a value to match")
        if self.access_type == "user" and not self.access_to.isdigit():
            raise ValueError(f"user rule needs a numeric uid, not {self.access_to!r}")
        if self.tenant is not None and self.access_type != "instance":
            raise ValueError(f"only an instance rule names a tenant, not a {self.access_type} rule")


@dataclass(frozen=True, slots=True)
class Requester:
    """What the hypervisor and the transport say about the peer; nothing the peer says.

    ``instance_id`` and ``tenant`` come from resolving the transport identity to a known
    instance (None: nobody); ``address`` is set only for tcp/tls peers, the certificate
    facts only for verified TLS client certificates, ``uid`` only for Unix-socket peers.
    """

    instance_id: str | None = None
    address: str | None = None
    cert_fingerprint: str | None = None
    uid: int | None = None
    tenant: str | None = None
    cert_cn: str | None = None


def _matches(rule: AccessRule, who: Requester) -> bool:
    if rule.access_type == "instance":
        if who.instance_id is None or rule.access_to != who.instance_id:
            return False
        return rule.tenant is None or (who.tenant is not None and who.tenant == rule.tenant)
    if rule.access_type == "ip":
        if who.address is None:
            return False
        try:
            return ipaddress.ip_address(who.address) in ipaddress.ip_network(
                rule.access_to, strict=False
            )
        except ValueError:
            return False
    if rule.access_type == "cert":
        wanted = rule.access_to.replace(":", "").lower()
        if _FINGERPRINT.fullmatch(wanted):
            return who.cert_fingerprint is not None and (
                wanted == who.cert_fingerprint.replace(":", "").lower()
            )
        return who.cert_cn is not None and rule.access_to == who.cert_cn
    if rule.access_type == "user":
        return who.uid is not None and rule.access_to == str(who.uid)
    return False


def decide(who: Requester, rules: Iterable[AccessRule]) -> Level | None:
    """The highest level any matching rule grants, or None (deny). An instance rule that
    names a tenant matches only a requester of that tenant (see :class:`AccessRule`)."""
    best: Level | None = None
    for rule in rules:
        if _matches(rule, who):
            if rule.level is Level.RW:
                return Level.RW
            best = Level.RO
    return best


_SQUASHED_BITS: Final = stat.S_ISUID | stat.S_ISGID


def squash_mode(mode: int) -> int:
    """Permission bits a guest may set: no setuid/setgid, nothing outside 0o7777."""
    return mode & 0o7777 & ~_SQUASHED_BITS
