"""The driver's client of vshare's REST API: one httpx call per method, errors as
:class:`ApiError`, and the waits for vshare's transitional statuses.

Manila's share manager calls the driver from its own worker threads, so this client is
blocking (``httpx.Client``; one per driver, safe to share between threads). It knows
nothing of Manila: the driver turns its answers and errors into Manila's terms.
"""

from __future__ import annotations

import time
from typing import Any, Final

import httpx

#: Statuses a vshare share passes through while one request works on it; the driver
#: waits for them to end rather than reporting them to Manila (whose state is the truth).
TRANSITIONAL: Final = frozenset({"creating", "extending", "shrinking", "deleting"})
#: Rule states on their way to ``active`` or ``deleted`` (gateways following the store
#: move them on).
RULE_PENDING: Final = frozenset({"queued_to_apply", "applying", "queued_to_deny", "denying"})

Json = dict[str, Any]


class ApiError(Exception):
    """The API refused (``status`` >= 400, with its ``code`` and one-line ``message``), or
    could not be reached (``status`` 0)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"vshare API: {message} ({status} {code})" if status else message)
        self.status = status
        self.code = code
        self.message = message


class VshareApi:
    """vshare's REST API at ``endpoint`` with a bearer ``token``.

    Args:
        endpoint: ``http://host:port`` of ``vshare api run``.
        token: an admin token (the driver acts for every Manila project).
        timeout: seconds for one HTTP request.
        poll: seconds between looks at a share or rule that is still changing.
    """

    def __init__(self, endpoint: str, token: str, *, timeout: float = 30, poll: float = 0.1):
        self.endpoint = endpoint.rstrip("/")
        self._poll = poll
        self._http = httpx.Client(
            base_url=self.endpoint,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: Json | None = None, **params: str) -> Any:
        try:
            answer = self._http.request(method, path, json=body, params=params or None)
        except httpx.HTTPError as exc:
            raise ApiError(0, "unreachable", f"vshare API at {self.endpoint}: {exc}") from exc
        if answer.status_code >= 400:
            try:
                error = answer.json()["error"]
                code, message = str(error["code"]), str(error["message"])
            except (ValueError, KeyError, TypeError):
                code, message = "http", answer.text[:200] or answer.reason_phrase
            raise ApiError(answer.status_code, code, message)
        return None if answer.status_code == 204 else answer.json()

    # --- who we are, what the volume holds -------------------------------------------------

    def _call_or_none(self, method: str, path: str) -> Json | None:
        """:meth:`_call`, None where the thing is not there (404)."""
        try:
            found: Json = self._call(method, path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def whoami(self) -> Json:
        result: Json = self._call("GET", "/v1/whoami")
        return result

    def list_volumes(self) -> list[Json]:
        volumes: list[Json] = self._call("GET", "/v1/volumes")["volumes"]
        return volumes

    def list_shares(self) -> list[Json]:
        shares: list[Json] = self._call("GET", "/v1/shares")["shares"]
        return shares

    # --- shares ----------------------------------------------------------------------------

    def get_share(self, share: str) -> Json | None:
        """The share by name or id, or None if there is none."""
        return self._call_or_none("GET", f"/v1/shares/{share}")

    def create_share(self, name: str, size_gib: int, tenant: str, volume: str | None) -> Json:
        body: Json = {"name": name, "size_gib": size_gib, "tenant": tenant}
        if volume:
            body["volume"] = volume
        created: Json = self._call("POST", "/v1/shares", body)
        return created

    def delete_share(self, share: str) -> None:
        """Delete with ``force``: the share and every file in it (Manila's delete)."""
        self._call("DELETE", f"/v1/shares/{share}", force="true")

    def resize_share(self, share: str, size_gib: int, *, grow: bool) -> Json:
        action = "extend" if grow else "shrink"
        resized: Json = self._call("POST", f"/v1/shares/{share}/{action}", {"size_gib": size_gib})
        return resized

    def settled(self, share: str, timeout: float) -> Json | None:
        """The share once no request is changing it (not in a transitional status); None
        once it is gone.

        Raises:
            ApiError: still changing after ``timeout`` seconds (status 0, code ``timeout``).
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self.get_share(share)
            if found is None or found["status"] not in TRANSITIONAL:
                return found
            if time.monotonic() > deadline:
                raise ApiError(
                    0, "timeout", f"share {share} is still {found['status']} after"
                    f" {timeout:g} s: {found.get('waiting_for') or 'a request is running'}",
                )  # fmt: skip
            time.sleep(self._poll)

    # --- access rules ----------------------------------------------------------------------

    def list_rules(self, share: str) -> list[Json]:
        rules: list[Json] = self._call("GET", f"/v1/shares/{share}/access")["access"]
        return rules

    def allow(self, share: str, access_type: str, access_to: str, level: str) -> Json:
        body = {"access_type": access_type, "access_to": access_to, "access_level": level}
        rule: Json = self._call("POST", f"/v1/shares/{share}/access", body)
        return rule

    def set_level(self, share: str, rule_id: str, level: str) -> Json:
        body = {"access_level": level}
        rule: Json = self._call("PUT", f"/v1/shares/{share}/access/{rule_id}", body)
        return rule

    def deny(self, share: str, rule_id: str) -> Json | None:
        """Withdraw a rule; None if it is already gone."""
        return self._call_or_none("DELETE", f"/v1/shares/{share}/access/{rule_id}")

    def rules_settled(self, share: str, timeout: float) -> list[Json]:
        """The share's rules once none is pending (gateways following the store take a
        new rule to ``active``, a withdrawn one to ``deleted``), or as they are after
        ``timeout`` seconds: the store holds them either way, and gateways that start
        later apply them."""
        deadline = time.monotonic() + timeout
        while True:
            rules = self.list_rules(share)
            if all(r["state"] not in RULE_PENDING for r in rules):
                return rules
            if time.monotonic() > deadline:
                return rules
            time.sleep(self._poll)
