"""API tokens: issued (the secret shown once, its hash stored), listed and revoked by the
admin; a secret authenticates a :class:`~vshare.control.Caller`."""

from __future__ import annotations

import secrets

from vshare.control._base import ServiceBase
from vshare.control._caller import Caller
from vshare.store import Conflict, Store, TokenRecord, hash_token


def issue_token(store: Store, name: str, tenant: str | None = None) -> tuple[TokenRecord, str]:
    """Create an API token: a random secret (``secrets.token_urlsafe(32)``: 256 bits) of
    which only the hash is stored. Returns the record and the secret, which exists nowhere
    else: show it once.

    Raises:
        ValueError: a malformed name or tenant.
        Conflict: a token with this name exists.
    """
    secret = secrets.token_urlsafe(32)
    stored = store.add_token(TokenRecord(name=name, hash=hash_token(secret), tenant=tenant))
    return stored, secret


class TokenOps(ServiceBase):
    """The token methods of :class:`~vshare.control.ControlService`."""

    def authenticate(self, secret: str) -> Caller | None:
        """The caller a bearer token's secret stands for, or None (unknown or empty)."""
        if not secret:
            return None
        token = self.store.find_token(hash_token(secret))
        if token is None:
            return None
        return Caller(tenant=token.tenant, admin=token.is_admin, name=token.name)

    def create_token(
        self, caller: Caller, name: str, tenant: str | None = None
    ) -> tuple[TokenRecord, str]:
        """A new token (admin only); ``tenant`` None makes an admin token. Returns the
        record and the secret (shown once; only its hash is stored).

        Raises:
            Forbidden, ValueError, Conflict.
        """
        self._admin_only(caller, "create tokens")
        try:
            return issue_token(self.store, name, tenant)
        except Conflict:
            raise Conflict(f"token {name!r} exists") from None

    def list_tokens(self, caller: Caller) -> list[TokenRecord]:
        """Every token (admin only), ordered by name; secrets are never stored."""
        self._admin_only(caller, "list tokens")
        return self.store.list_tokens()

    def revoke_token(self, caller: Caller, name: str) -> None:
        """Revoke a token (admin only). The token the caller is using cannot be revoked
        through itself (409), so an admin cannot lock everyone out by mistake.

        Raises:
            Forbidden, NotFound, Conflict.
        """
        self._admin_only(caller, "revoke tokens")
        if name == caller.name:
            raise Conflict(f"token {name!r} is the one this request uses; revoke it with another")
        self.store.remove_token(name)
