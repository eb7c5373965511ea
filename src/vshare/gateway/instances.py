"""The in-memory instance registry: identity → instance, kept per source, with observers.

:class:`InstanceTable` implements :class:`vshare.policy.InstanceRegistry`. Instances come
from *sources*: ``"config"`` (the ``[[instance]]`` tables of gateway.toml), ``"libvirt"``
(domains on this host, see ``libvirt.py``), later the control-plane store. Each source
replaces its own set with :meth:`InstanceTable.sync`; one-off changes use :meth:`add` and
:meth:`remove`.

Invariants: a uuid appears once; an identity key (a CID, a socket, an address, a
certificate) belongs to at most one instance, so resolving is never ambiguous. A source
may *claim* a kind of identity (:meth:`InstanceTable.claim`: libvirt claims CIDs while it
is followed, as it is the one that hands them out on this host): a key of that kind then
resolves only to that source's instances, and to nobody otherwise. Observers
(the gateway: hybrid-vsock listeners, cutting sessions) are told of every change, after it
is made, synchronously; an observer that fails is logged and does not undo the change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from vshare.policy import IdentityFacts, Instance, Key, identity_keys

log = logging.getLogger("vshare.gateway")


@dataclass(frozen=True, slots=True)
class Change:
    """One change of the table, as observers see it."""

    action: Literal["added", "removed"]
    instance: Instance
    source: str


Observer = Callable[[Change], None]


class InstanceTable:
    """Instances by uuid and by identity key (see the module note)."""

    def __init__(self, instances: Iterable[Instance] = (), source: str = "config") -> None:
        self._by_uuid: dict[str, tuple[Instance, str]] = {}
        self._by_key: dict[Key, Instance] = {}
        self._observers: list[Observer] = []
        self._claims: dict[str, str] = {}  # identity kind ("cid") -> the one source vouching
        for inst in instances:
            self.add(inst, source)

    # --- reading ----------------------------------------------------------------------

    def resolve(self, facts: IdentityFacts) -> Instance | None:
        """The instance the transport facts identify (strongest identity first), or None.

        A key of a claimed kind counts only if the claiming source registered it."""
        for key in identity_keys(facts):
            inst = self._by_key.get(key)
            if inst is None:
                continue
            owner = self._claims.get(key[0])
            if owner is not None and self._by_uuid[inst.uuid][1] != owner:
                continue  # e.g. a config instance's CID while libvirt is followed: nobody
            return inst
        return None

    def get(self, uuid: str) -> Instance | None:
        entry = self._by_uuid.get(uuid)
        return entry[0] if entry else None

    def source_of(self, uuid: str) -> str | None:
        entry = self._by_uuid.get(uuid)
        return entry[1] if entry else None

    def __iter__(self) -> Iterator[Instance]:
        return iter([inst for inst, _ in self._by_uuid.values()])

    def __len__(self) -> int:
        return len(self._by_uuid)

    # --- changing ---------------------------------------------------------------------

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer`` after every change; returns the function that unsubscribes."""
        self._observers.append(observer)

        def unsubscribe() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return unsubscribe

    def claim(self, kind: str, source: str) -> Callable[[], None]:
        """Let only ``source`` vouch for identity keys of ``kind`` (``"cid"``) until the
        returned function is called: keys of that kind registered by other sources resolve
        to nobody meanwhile (they stay registered, and conflicts are still refused).

        Raises:
            ValueError: another source claims ``kind`` already.
        """
        owner = self._claims.get(kind)
        if owner is not None and owner != source:
            raise ValueError(f"{kind} identities are claimed by {owner} already")
        self._claims[kind] = source

        def release() -> None:
            if self._claims.get(kind) == source:
                del self._claims[kind]

        return release

    def claimed_by(self, kind: str) -> str | None:
        """The source that claims ``kind``, if any."""
        return self._claims.get(kind)

    def add(self, instance: Instance, source: str = "config") -> None:
        """Register an instance.

        Raises:
            ValueError: its uuid is known already, or one of its identities belongs to
                another instance (the table is unchanged).
        """
        if instance.uuid in self._by_uuid:
            raise ValueError(f"instance {instance.uuid} is registered already")
        for key in instance.keys:
            other = self._by_key.get(key)
            if other is not None:
                raise ValueError(
                    f"instance {instance.uuid}: {key[0]} {key[1]} belongs to {other.uuid}"
                )
        self._by_uuid[instance.uuid] = (instance, source)
        for key in instance.keys:
            self._by_key[key] = instance
        self._notify(Change("added", instance, source))

    def remove(self, uuid: str) -> Instance:
        """Forget an instance.

        Raises:
            KeyError: no such instance.
        """
        instance, source = self._by_uuid.pop(uuid)
        for key in instance.keys:
            if self._by_key.get(key) is instance:
                del self._by_key[key]
        self._notify(Change("removed", instance, source))
        return instance

    def sync(self, source: str, instances: Iterable[Instance]) -> list[str]:
        """Make ``source``'s instances exactly ``instances``: add the new, remove the gone,
        replace the changed (removed, then added). Other sources are untouched.

        An instance that conflicts with another source's (same uuid or identity) is left
        out and reported rather than failing the whole sync.

        Returns:
            One line per instance left out, for the log.
        """
        wanted = {inst.uuid: inst for inst in instances}
        for uuid, (current, src) in list(self._by_uuid.items()):
            if src == source and wanted.get(uuid) != current:
                self.remove(uuid)
        problems = []
        for uuid, inst in wanted.items():
            if self.get(uuid) == inst and self.source_of(uuid) == source:
                continue
            try:
                self.add(inst, source)
            except ValueError as exc:
                problems.append(f"{source}: {exc}")
        return problems

    def _notify(self, change: Change) -> None:
        for observer in list(self._observers):
            try:
                observer(change)
            except Exception:
                log.exception(
                    "instances: an observer failed on %s %s", change.action, change.instance
                )
