"""A share as the gateway serves it: the runtime value the fid tables, the session and the
store follower hand around. It comes from the store (``follow.shares_of``) or from a
``[[share]]`` table of the gateway's config (``config.load_config``); either way it is
validated here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from vshare.policy import AccessRule
from vshare.terms import CACHE_MODES, DEFAULT_CACHE_MODE, CacheMode, share_name_problem

KiB: Final = 1024
MiB: Final = 1024 * KiB
GiB: Final = 1024 * MiB


class ConfigError(ValueError):
    """A configuration mistake; the message is one line meant for the operator."""


@dataclass(frozen=True, slots=True)
class Share:
    """A share as the gateway serves it."""

    name: str
    path: str  # relative to the backend volume
    id: str = ""
    access: tuple[AccessRule, ...] = ()
    uid: int = 0
    gid: int = 0
    readonly: bool = False
    #: The quota: the share's size in GiB (None: no limit, statfs shows the volume's).
    size_gib: int | None = None
    tenant: str = ""
    #: What its requests may be answered from without asking the storage (see
    #: ``vshare.terms.CacheMode``); applied when a session attaches.
    cache: CacheMode = DEFAULT_CACHE_MODE

    @property
    def key(self) -> str:
        """What stays the same when a share's rules or size change: its id, else its name."""
        return self.id or self.name

    @property
    def size_bytes(self) -> int | None:
        return None if self.size_gib is None else self.size_gib * GiB

    def __post_init__(self) -> None:
        if problem := share_name_problem(self.name):
            raise ConfigError(problem)
        if self.size_gib is not None and (type(self.size_gib) is not int or self.size_gib < 1):
            raise ConfigError(f"share {self.name!r}: size_gib must be a whole number ≥ 1")
        if not isinstance(self.cache, str) or self.cache not in CACHE_MODES:
            raise ConfigError(
                f"share {self.name!r}: cache must be one of {', '.join(CACHE_MODES)},"
                f" not {self.cache!r}"
            )
        parts = [p for p in self.path.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts) or "\0" in self.path:
            raise ConfigError(
                f"share {self.name!r}: path {self.path!r} must be a subdirectory of the volume"
                " (relative, no '.' or '..')"
            )
