"""The control service's refusals, one line each, and the HTTP status each one means.

=========================  ======  ==================================================
exception                  status  when
=========================  ======  ==================================================
``ValueError``             400     malformed input (a name, a size, an address, ...)
:class:`Forbidden`         403     an action the caller's token does not allow
``store.NotFound``         404     no such share, rule, instance or token *for this caller*
``store.Conflict``         409     the request contradicts the state (a taken name, a
                                   duplicate rule, a non-empty share, a shrink below use)
:class:`OverLimit`         413     a size over the largest the operator allows
                                   (``vshare api run --max-share-size``)
``store.OverQuota``        413     a create or extend over the tenant's quota
                                   (shares, gigabytes: ``vshare quota``)
``store.StoreUnavailable``  503     the store cannot serve
:class:`VolumeUnavailable`  503     a backend volume cannot be opened or written
=========================  ======  ==================================================

``NotFound``, ``Conflict`` and ``OverQuota`` are the store's own classes, re-exported by
``vshare.control``, so callers (the REST API) map one family, whichever layer raised it.
"""

from __future__ import annotations


class Forbidden(PermissionError):
    """The caller may not do this at all (a tenant token asking for an admin action)."""


class OverLimit(Exception):
    """A share size over the largest one the operator allows (create and extend, for every
    caller, whatever the tenant's quota: Manila's ``per_share_gigabytes``)."""


class VolumeUnavailable(Exception):
    """A share's backend volume cannot be opened or changed (missing, unreadable, not
    served by this control plane); the message names the volume and the cause."""
