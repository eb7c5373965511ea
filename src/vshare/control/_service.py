"""The service rules of the control plane: what creating, resizing and deleting a share,
allowing and denying access, and registering instances *mean*, independent of HTTP.

Strategy and invariants:

- **The store decides races.** Names are unique because the store says so (a create is
  one transaction); status changes use ``expect_revision``, so two requests working on one
  share cannot both win (the loser gets ``Conflict``, "changed while ...; try again").
- **Directories through confined handles only.** A share's directory is
  ``shares/<share id>`` in its volume, made with ``open_root("shares")`` + ``mkdir`` and
  removed with ``backend.tree.remove_tree``; no path string is ever joined here. The id, not
  the name, names the directory, so renaming a share never moves data.
- **Statuses, as Manila names them.** creating → available (→ error if the directory could
  not be made); available → extending/shrinking → available; → deleting → (gone). A share
  in a transitional status that persists (a crash mid-request) can still be deleted with
  ``force``.
- **Cache mode** (``vshare.terms.CacheMode``: none, meta, all) is a setting of the record, changed
  in one revision and refused while the share is in a transitional status (so it cannot
  make an extend or shrink lose its race). Gateways apply it to new attachments only.
- **Rules, as Manila's state machine** (``store.RuleState``): a new rule is
  ``queued_to_apply``; gateways that follow the store take it through ``applying`` to
  ``active``. Deny moves an applied rule to ``queued_to_deny``, and gateways take it
  through ``denying`` to ``deleted``. A rule still ``queued_to_apply`` was never applied
  anywhere, so deny removes its record outright (a gateway that applied it meanwhile sees
  the record's deletion in the change feed and drops it: deleting is always safe). Deny of
  a rule already on its way out succeeds again (idempotent).
- **Tenancy.** A tenant caller sees and manages only its own tenant's shares, their rules,
  and its instances. Anything of another tenant answers exactly like something that does
  not exist (``NotFound``, same message), never ``Forbidden``: a tenant cannot probe which
  names or ids exist. One thing is unavoidably shared: share names are global (a guest
  attaches by name), so a create can tell a tenant that a name is taken, and nothing more.
  ``Forbidden`` is for actions a tenant token may never do: acting for another tenant,
  registering or removing instances (an instance's identities, such as a vsock CID, are
  the hypervisor's facts, which only the operator vouches for: a tenant that could claim a
  CID could claim another tenant's VM), listing gateways, managing tokens.
- **Quotas**, Manila's per tenant (``shares``, ``gigabytes``; -1: none), are enforced by the
  store in the transaction of the write (``OverQuota``); extend checks first as well, so a
  refused extend never passes through ``extending``. Only the admin sets them (defaults,
  or a tenant's override); a tenant sees its own quota and usage, and everyone the defaults.
- **Errors**: ``ValueError`` (bad input), :class:`Forbidden`, ``NotFound``, ``Conflict``,
  ``OverQuota``, ``StoreUnavailable``, :class:`VolumeUnavailable`, each one line (see
  ``_errors.py``).
  Every method blocks (store and backend I/O): call it from a worker thread.

Layout: ``_base.py`` (the store, volumes and tenancy checks every resource shares), one
module per resource (``_shares.py``, ``_rules.py``, ``_instances.py``, ``_tokens.py``,
``_gateways.py``, ``_quotas.py``), and this one, which composes them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from vshare.control._gateways import GatewayOps
from vshare.control._instances import InstanceOps, instance_uuid
from vshare.control._quotas import QuotaOps
from vshare.control._rules import RuleOps
from vshare.control._shares import DEFAULT_MAX_SHARE_GIB, DIR_MODE, GIB, SHARES_DIR, ShareOps
from vshare.control._tokens import TokenOps, issue_token
from vshare.control._volumes import Volumes
from vshare.store import Store
from vshare.terms import SHARE_NAME

__all__ = [
    "DEFAULT_MAX_SHARE_GIB",
    "DIR_MODE",
    "GIB",
    "SHARES_DIR",
    "SHARE_NAME",
    "ControlService",
    "instance_uuid",
    "issue_token",
]


class ControlService(TokenOps, ShareOps, RuleOps, InstanceOps, GatewayOps, QuotaOps):
    """The control plane's service rules over a :class:`~vshare.store.Store` and the
    backend volumes shares are made in. See the module note for the rules.

    Args:
        store: where the state lives (not closed by :meth:`close`: the caller owns it).
        volumes: volume name → backend URI (default: one volume ``default`` at
            ``posix:/var/lib/vshare/volume``); the first is where shares go by default.
        max_share_gib: the largest size a share may be created with or extended to, by
            anyone (:class:`OverLimit` beyond; shares already larger keep their size).

    Raises:
        ValueError: a malformed volume table.
    """

    def __init__(
        self,
        store: Store,
        volumes: Mapping[str, str] | None = None,
        *,
        max_share_gib: int = DEFAULT_MAX_SHARE_GIB,
    ) -> None:
        if isinstance(max_share_gib, bool) or not isinstance(max_share_gib, int):
            raise ValueError("max_share_gib must be a whole number of GiB")
        if max_share_gib < 1:
            raise ValueError(f"the largest share size must be 1 GiB or more, not {max_share_gib}")
        self.max_share_gib = max_share_gib
        self.store = store
        self.volumes = volumes if isinstance(volumes, Volumes) else Volumes(volumes)
        #: Share id → entries removed so far, for each forced delete running here.
        self._deletes_running: dict[str, int] = {}
        self._deletes_lock = threading.Lock()

    def close(self) -> None:
        """Close the volumes' backends. Idempotent."""
        self.volumes.close()
