"""Manila's access rules in vshare's terms, and the plan that brings a share's vshare rules
to what Manila wants.

Manila's access types, and what each becomes (docs/manila.md has the table for operators):

- ``user`` whose ``access_to`` is a Nova instance UUID → an ``instance`` rule: the gateway
  on the instance's compute host knows the VM by its vsock CID (from libvirt or the
  instance registry) and grants it the share. This is the rule vshare exists for: the
  hypervisor vouches for the identity, nothing the guest sends does.
- ``ip`` (an address or CIDR) → an ``ip`` rule: matches TCP/TLS connections from that
  address (a gateway listening on a network; never vsock).
- ``cert`` (a certificate's CN, or a SHA-256 fingerprint) → a ``cert`` rule: TLS
  connections with a client certificate the gateway's CA verified.

Anything else cannot be enforced by a gateway: a ``user`` that is not a UUID (a name means
nothing to the hypervisor, and vshare's own ``user`` rules are host-local uids, not
something a tenant may grant), ``cephx``, or an access level other than ro/rw. Such a rule
is refused with Manila's ``InvalidShareAccess``, reported back as state ``error`` for that
rule alone, so the others still apply (raising would put every rule of the batch in error).

This module is pure: no HTTP, no Manila objects beyond mappings read with ``[]``.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

_HEX64: Final = re.compile(r"^[0-9a-f]{64}$")
LEVELS: Final = frozenset({"ro", "rw"})


class Unenforceable(ValueError):
    """A Manila rule that no gateway could enforce; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class Wanted:
    """One rule as vshare stores it: ``key`` is (access_type, normalized access_to)."""

    access_type: str
    access_to: str
    level: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.access_type, self.access_to)


def rule_id(rule: Mapping[str, Any]) -> str:
    """The access rule's id as Manila's share manager keys its updates."""
    found = rule.get("access_id") if hasattr(rule, "get") else None
    return str(found or rule["id"])


def normalize(access_type: str, access_to: str) -> str:
    """``access_to`` written as vshare's store writes it, so rules compare equal."""
    if access_type == "ip":
        net = ipaddress.ip_network(access_to.strip(), strict=False)
        return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
    if access_type == "instance":
        return str(uuid.UUID(access_to))
    if access_type == "cert":
        hexed = access_to.replace(":", "").lower()
        return hexed if _HEX64.match(hexed) else access_to
    return access_to


def to_vshare(rule: Mapping[str, Any]) -> Wanted:
    """The vshare rule for one Manila rule.

    Raises:
        Unenforceable: the type, value or level is one no gateway can enforce.
    """
    access_type = str(rule["access_type"])
    access_to = str(rule["access_to"]).strip()
    level = str(rule["access_level"])
    if level not in LEVELS:
        raise Unenforceable(f"access level {level!r} is not ro or rw")
    if access_type == "user":
        try:
            return Wanted("instance", normalize("instance", access_to), level)
        except ValueError:
            raise Unenforceable(
                f"user {access_to!r} is not a Nova instance UUID: vshare grants user rules to"
                " instances, which their hypervisor identifies"
            ) from None
    if access_type == "ip":
        try:
            return Wanted("ip", normalize("ip", access_to), level)
        except ValueError:
            raise Unenforceable(f"{access_to!r} is not an IP address or CIDR") from None
    if access_type == "cert":
        if not access_to:
            raise Unenforceable("a cert rule needs a certificate CN or SHA-256 fingerprint")
        return Wanted("cert", normalize("cert", access_to), level)
    raise Unenforceable(f"access type {access_type!r} is not one of user (instance), ip, cert")


@dataclass
class Plan:
    """What to ask of vshare's API for one share: rules to add, to change level, to deny,
    and Manila rules to report as ``error`` (rule id → reason)."""

    allow: list[Wanted] = field(default_factory=list)
    relevel: list[tuple[str, str]] = field(default_factory=list)  # (vshare rule id, level)
    deny: list[str] = field(default_factory=list)  # vshare rule ids
    errors: dict[str, str] = field(default_factory=dict)
    #: Manila rule id → the vshare rule it is (rules that map), to report back per rule.
    sources: dict[str, Wanted] = field(default_factory=dict)


def _wanted(rules: Iterable[Mapping[str, Any]], plan: Plan) -> dict[tuple[str, str], Wanted]:
    out: dict[tuple[str, str], Wanted] = {}
    for rule in rules:
        try:
            want = to_vshare(rule)
        except Unenforceable as exc:
            plan.errors[rule_id(rule)] = str(exc)
            continue
        plan.sources[rule_id(rule)] = want
        # Two Manila rules for one grantee (one UUID written in two cases): the wider
        # level wins, as a gateway would decide between two rules.
        prior = out.get(want.key)
        if prior is None or (prior.level == "ro" and want.level == "rw"):
            out[want.key] = want
    return out


def plan_full(
    manila_rules: Iterable[Mapping[str, Any]], current: Iterable[Mapping[str, Any]]
) -> Plan:
    """Bring vshare's rules of a share (``current``: the API's rule bodies, deleted ones
    left out) to exactly Manila's ``manila_rules``: Manila is the source of truth, so a
    vshare rule Manila does not know is denied."""
    plan = Plan()
    wanted = _wanted(manila_rules, plan)
    seen: set[tuple[str, str]] = set()
    for rule in current:
        if rule["state"] in ("queued_to_deny", "denying", "deleted"):
            continue  # already leaving; a wanted one is allowed again below
        key = (str(rule["access_type"]), str(rule["access_to"]))
        want = wanted.get(key)
        if want is None or key in seen:
            plan.deny.append(str(rule["id"]))
            continue
        seen.add(key)
        if rule["access_level"] != want.level:
            plan.relevel.append((str(rule["id"]), want.level))
    plan.allow = [w for k, w in wanted.items() if k not in seen]
    return plan


def plan_incremental(
    add: Iterable[Mapping[str, Any]],
    delete: Iterable[Mapping[str, Any]],
    update: Iterable[Mapping[str, Any]],
    current: Iterable[Mapping[str, Any]],
) -> Plan:
    """Apply only Manila's changes: ``add`` and ``update`` rules are made to exist at their
    level; ``delete`` rules are denied if vshare has them (a rule that was never applied,
    or was refused, is no error to delete: Manila's contract)."""
    plan = Plan()
    live = {
        (str(r["access_type"]), str(r["access_to"])): r
        for r in current
        if r["state"] not in ("queued_to_deny", "denying", "deleted")
    }
    for rule in delete:
        try:
            key = to_vshare(rule).key
        except Unenforceable:
            continue  # it was refused when added: nothing of it exists
        found = live.pop(key, None)
        if found is not None:
            plan.deny.append(str(found["id"]))
    for want in _wanted([*add, *update], plan).values():
        found = live.get(want.key)
        if found is None:
            plan.allow.append(want)
        elif found["access_level"] != want.level:
            plan.relevel.append((str(found["id"]), want.level))
    return plan
