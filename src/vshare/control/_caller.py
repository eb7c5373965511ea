"""Who is asking: the admin, or a tenant (a project, in Manila's words)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    """The identity a request acts with, as its API token says.

    ``admin`` callers see and manage everything and have no tenant; every other caller has
    a ``tenant`` and sees only that tenant's shares, rules and instances. ``name`` is the
    token's name, for logs only: it never grants anything.

    Raises:
        ValueError: an admin with a tenant, or a non-admin without one.
    """

    tenant: str | None = None
    admin: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        if self.admin and self.tenant is not None:
            raise ValueError("an admin caller acts for no tenant")
        if not self.admin and not self.tenant:
            raise ValueError("a caller is the admin or acts for a tenant")

    def owns(self, tenant: str) -> bool:
        """Whether this caller may see and manage what ``tenant`` owns."""
        return self.admin or self.tenant == tenant

    def __str__(self) -> str:
        who = "admin" if self.admin else f"tenant {self.tenant}"
        return f"{who} (token {self.name})" if self.name else who


#: The caller of operator tools that work on the store directly (``vshare api token``).
ADMIN = Caller(admin=True, name="local")
