"""The vocabulary every layer shares: words that mean the same thing in the store, the
control plane, the gateway and the backends, defined once here so they cannot drift.

Layer 0: imports nothing from vshare.
"""

from __future__ import annotations

import re
from typing import Final, Literal, get_args

__all__ = [
    "CACHE_MODES",
    "DEFAULT_CACHE_MODE",
    "SHARE_NAME",
    "CacheMode",
    "share_name_problem",
]

#: How much of a share the gateway may cache (docs/cache.md says what each promises):
#: ``none`` nothing, ``meta`` attributes and directory entries, ``all`` file data as well.
CacheMode = Literal["none", "meta", "all"]
CACHE_MODES: Final[tuple[CacheMode, ...]] = get_args(CacheMode)
#: The cache mode of a share that does not say (a record written before the field existed).
DEFAULT_CACHE_MODE: Final[CacheMode] = "meta"

#: A share's name: what a guest's mount names (the 9P aname), so it must be one safe path-free
#: word, and what an operator types. Ids are uuid4 strings, which also match.
SHARE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


def share_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a share's name (one line), or None if it can."""
    if isinstance(name, str) and SHARE_NAME.fullmatch(name):
        return None
    return (
        f"share name {name!r}: 1 to 255 letters, digits, '.', '_' or '-', starting"
        " with a letter or digit"
    )
