"""Pure access decisions: who is asking + the share's rules → deny, ro or rw.

No I/O and no project imports: the gateway turns transport facts into a
:class:`Requester` (resolving them to an :class:`Instance` through an
:class:`InstanceRegistry`) and asks :func:`decide`. The 9P ``uname``/``n_uname`` a guest
sends are deliberately not part of a :class:`Requester`: they never grant anything.
"""

from vshare.policy._access import (
    ACCESS_TYPES,
    AccessRule,
    Level,
    Requester,
    decide,
    squash_mode,
)
from vshare.policy._instances import (
    MAX_GUEST_CID,
    MIN_GUEST_CID,
    IdentityFacts,
    Instance,
    InstanceRegistry,
    Key,
    check_unique,
    identity_keys,
    normalize_fingerprint,
    normalize_ip,
    normalize_socket,
)

__all__ = [
    "ACCESS_TYPES",
    "MAX_GUEST_CID",
    "MIN_GUEST_CID",
    "AccessRule",
    "IdentityFacts",
    "Instance",
    "InstanceRegistry",
    "Key",
    "Level",
    "Requester",
    "check_unique",
    "decide",
    "identity_keys",
    "normalize_fingerprint",
    "normalize_ip",
    "normalize_socket",
    "squash_mode",
]
