"""Access rules, as Manila's state machine: allow (``queued_to_apply``), deny (removed
if never applied, else ``queued_to_deny``), level changes, listings."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Final, TypeVar

from vshare.control._base import ServiceBase
from vshare.control._caller import Caller
from vshare.control._instances import instance_uuid
from vshare.policy import ACCESS_TYPES, Level
from vshare.store import Conflict, NotFound, RuleRecord, RuleState, ShareRecord, ShareStatus

log = logging.getLogger("vshare.control")

#: Rule states a deny has already dealt with.
_LEAVING: Final = frozenset({RuleState.QUEUED_TO_DENY, RuleState.DENYING, RuleState.DELETED})
_T = TypeVar("_T")


class RuleOps(ServiceBase):
    """The access-rule methods of :class:`~vshare.control.ControlService`."""

    def allow(
        self,
        caller: Caller,
        name_or_id: str,
        access_type: str,
        access_to: str,
        level: Level | str = Level.RW,
    ) -> RuleRecord:
        """Add an access rule, in state ``queued_to_apply``.

        ``access_type``: ``instance`` (an instance uuid, see :func:`instance_uuid`), ``ip``
        (an address or CIDR), ``cert`` (a SHA-256 fingerprint or a certificate CN), ``user``
        (a numeric uid, for host-local tools). ``level``: ``ro`` or ``rw``.

        The target need not be the caller's own (as in Manila, a tenant may grant its share
        to an address or anyone): a rule only ever gives away access to the share of the
        tenant who made it. An ``instance`` rule follows tenancy: it grants only while the
        instance belongs to the share's tenant, so a VM re-registered into another tenant
        loses it at once (and a tenant naming another tenant's VM grants nothing, without
        learning that the VM exists). Only the admin grants across tenants, on purpose: an
        admin's instance rule for an instance registered in another tenant is recorded as
        ``cross_tenant`` and grants whatever tenant the instance is in.

        Raises:
            NotFound: no such share for this caller.
            ValueError: a malformed type, value or level.
            Conflict: the share already has a live rule for the same type and value, or
                it is being deleted.
        """
        share = self.get_share(caller, name_or_id)
        if share.status is ShareStatus.DELETING:
            raise Conflict(f"share {share.name} is being deleted")
        if access_type not in ACCESS_TYPES:
            raise ValueError(
                f"access type {access_type!r} is not one of {', '.join(sorted(ACCESS_TYPES))}"
            )
        if access_type == "instance":
            access_to = instance_uuid(access_to)
        try:
            level = Level(level)
        except ValueError:
            raise ValueError(f"access level {level!r} is not ro or rw") from None
        cross_tenant = False
        if access_type == "instance" and caller.admin:
            try:
                target = self.store.get_instance(access_to)
            except NotFound:
                pass  # not registered (yet): the rule follows the share's tenant
            else:
                cross_tenant = target.instance.tenant != share.tenant
        rule = RuleRecord(
            share_id=share.id,
            access_type=access_type,
            access_to=access_to,
            level=level,
            state=RuleState.QUEUED_TO_APPLY,
            cross_tenant=cross_tenant,
        )
        try:
            stored = self.store.add_rule(rule)
        except Conflict:
            existing = self._live_rule(share, rule)
            held_by = f" (rule {existing.id}, {existing.state.value})" if existing else ""
            raise Conflict(
                f"share {share.name} already has an {rule.access_type} rule for"
                f" {rule.access_to}{held_by}"
            ) from None
        except NotFound:
            raise NotFound(f"no share {name_or_id!r}") from None  # deleted meanwhile
        log.info(
            "share %s: rule %s allows %s %s %s%s (by %s)",
            share.name,
            stored.id,
            stored.access_type,
            stored.access_to,
            stored.level.value,
            " across tenants" if stored.cross_tenant else "",
            caller,
        )
        return stored

    def deny(self, caller: Caller, name_or_id: str, rule_id: str) -> RuleRecord:
        """Withdraw a rule. Returns it as it now is: ``deleted`` if it had never been
        applied (its record is gone), else ``queued_to_deny`` (gateways finish the job).
        Denying a rule already on its way out changes nothing and succeeds.

        Raises:
            NotFound: no such share for this caller, or no such rule on that share.
        """
        share = self.get_share(caller, name_or_id)
        rule = self._rule_of(share, rule_id)
        for _ in range(5):  # a gateway may move the rule on meanwhile: retry on a new read
            if rule.state in _LEAVING:
                return rule
            try:
                if rule.state is RuleState.QUEUED_TO_APPLY:
                    self.store.delete_rule(rule.id)
                    gone = self._deleted(rule)
                    self._log_deny(share, gone, caller)
                    return gone
                denied = self.store.update_rule(
                    rule.id, expect_revision=rule.revision, state=RuleState.QUEUED_TO_DENY
                )
                self._log_deny(share, denied, caller)
                return denied
            except NotFound:
                return self._deleted(rule)  # a gateway (or another deny) finished it
            except Conflict:
                rule = self._rule_of(share, rule_id)
        raise Conflict(f"access rule {rule_id} keeps changing; try again")

    def update_level(
        self, caller: Caller, name_or_id: str, rule_id: str, level: Level | str
    ) -> RuleRecord:
        """Change a rule's access level (Manila's ``access-update``). Gateways apply it to
        live sessions: after rw→ro the next write fails with EROFS.

        Raises:
            NotFound: no such share for this caller, or no such rule on that share.
            Conflict: the rule is being withdrawn.
            ValueError: ``level`` is not ro or rw.
        """
        try:
            wanted = Level(level)
        except ValueError:
            raise ValueError(f"access level {level!r} must be ro or rw") from None
        share = self.get_share(caller, name_or_id)
        rule = self._rule_of(share, rule_id)
        for _ in range(5):  # a gateway may move the rule's state meanwhile
            if rule.state in _LEAVING:
                raise Conflict(f"access rule {rule_id} is being withdrawn")
            if rule.level is wanted:
                return rule
            try:
                updated = self.store.update_rule(
                    rule.id, expect_revision=rule.revision, level=wanted
                )
            except Conflict:
                rule = self._rule_of(share, rule_id)
                continue
            log.info(
                "share %s: rule %s is now %s (by %s)", share.name, rule.id, wanted.value, caller
            )
            return updated
        raise Conflict(f"access rule {rule_id} keeps changing; try again")

    def list_rules(
        self, caller: Caller, name_or_id: str, *, include_deleted: bool = False
    ) -> list[RuleRecord]:
        """The share's rules, oldest first; tombstones (state ``deleted``) only if asked.

        Raises:
            NotFound: no such share for this caller.
        """
        share = self.get_share(caller, name_or_id)
        try:
            rules = self.store.list_rules(share.id)
        except NotFound:
            raise NotFound(f"no share {name_or_id!r}") from None
        return [r for r in rules if include_deleted or r.state is not RuleState.DELETED]

    def _rule_of(self, share: ShareRecord, rule_id: str) -> RuleRecord:
        try:
            rule = self.store.get_rule(rule_id)
        except (NotFound, ValueError):
            rule = None
        if rule is None or rule.share_id != share.id:
            raise NotFound(f"share {share.name} has no access rule {rule_id!r}")
        return rule

    def _live_rule(self, share: ShareRecord, rule: RuleRecord) -> RuleRecord | None:
        return _first(
            r
            for r in self.store.list_rules(share.id)
            if r.state is not RuleState.DELETED
            and (r.access_type, r.access_to) == (rule.access_type, rule.access_to)
        )

    @staticmethod
    def _deleted(rule: RuleRecord) -> RuleRecord:
        """The rule as a deny that removed its record answers it: state deleted."""
        return dataclasses.replace(rule, state=RuleState.DELETED, cross_tenant=False)

    @staticmethod
    def _log_deny(share: ShareRecord, rule: RuleRecord, caller: Caller) -> None:
        log.info(
            "share %s: rule %s denied, now %s (by %s)",
            share.name,
            rule.id,
            rule.state.value,
            caller,
        )


def _first(items: Iterable[_T]) -> _T | None:
    return next(iter(items), None)
