"""Pure access decisions: who is asking + the share's rules → deny, ro or rw.

No I/O and no project imports: the gateway turns transport facts into a
:class:`Requester` and asks :func:`decide`. The 9P ``uname``/``n_uname`` a guest sends are
deliberately not part of a :class:`Requester`: they never grant anything.
"""

from vshare.policy._access import (
    ACCESS_TYPES,
    AccessRule,
    Level,
    Requester,
    decide,
    squash_mode,
)

__all__ = ["ACCESS_TYPES", "AccessRule", "Level", "Requester", "decide", "squash_mode"]
