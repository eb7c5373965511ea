"""Per-tenant quotas through HTTP (issue 21): Manila's shares and gigabytes, defaults and
overrides set by the admin, usage shown, create and extend refused with 413 over_quota."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.server import ApiServer
from tests.api.test_http import error_of


@pytest.fixture(scope="module")
def admin(api: ApiServer) -> httpx.Client:
    return api.client(api.admin_token)


def limits(quota: dict[str, Any]) -> tuple[Any, ...]:
    s, g = quota["shares"], quota["gigabytes"]
    return (s["limit"], s["in_use"], s["set_by"], g["limit"], g["in_use"], g["set_by"])


def test_a_tenant_sees_its_quota_and_usage(api: ApiServer) -> None:
    red = api.client(api.token("red-q", tenant="red"))
    assert red.post("/v1/shares", json={"name": "red-q1", "size_gib": 30}).status_code == 201
    quota = red.get("/v1/quotas/red").json()
    assert quota["tenant"] == "red"
    assert limits(quota) == (50, 1, "built-in", 1000, 30, "built-in")
    # Another tenant's quota is not this token's business; the defaults are everyone's.
    assert "cannot see quotas for blue" in error_of(red.get("/v1/quotas/blue"), 403)
    defaults = red.get("/v1/quota-defaults").json()
    assert defaults["tenant"] is None
    assert limits(defaults) == (50, None, "built-in", 1000, None, "built-in")
    # Setting is the admin's.
    assert "only the admin may set quotas" in error_of(
        red.put("/v1/quotas/red", json={"shares": 500}), 403
    )
    assert error_of(red.get("/v1/quotas"), 403) == "only the admin may list quotas"


def test_create_and_extend_over_quota_are_413(api: ApiServer, admin: httpx.Client) -> None:
    green = api.client(api.token("green-q", tenant="green"))
    set_ = admin.put("/v1/quotas/green", json={"shares": 2, "gigabytes": 10})
    assert limits(set_.json()) == (2, 0, "tenant", 10, 0, "tenant")
    assert green.post("/v1/shares", json={"name": "green-a", "size_gib": 4}).status_code == 201
    assert green.post("/v1/shares", json={"name": "green-b", "size_gib": 4}).status_code == 201

    response = green.post("/v1/shares", json={"name": "green-c", "size_gib": 1})
    message = error_of(response, 413)
    assert response.json()["error"]["code"] == "over_quota"
    assert message == "tenant green is over its quota: 3 shares, the limit (shares) is 2"
    assert green.get("/v1/shares/green-c").status_code == 404

    response = green.post("/v1/shares/green-a/extend", json={"size_gib": 7})
    assert error_of(response, 413) == (
        "tenant green is over its quota: 11 GiB in its shares, the limit (gigabytes) is 10 GiB"
    )
    assert response.json()["error"]["code"] == "over_quota"
    shown = green.get("/v1/shares/green-a").json()
    assert (shown["size_gib"], shown["status"]) == (4, "available")  # untouched
    assert green.post("/v1/shares/green-a/extend", json={"size_gib": 6}).status_code == 200

    # The admin creating for the tenant counts against the tenant's quota too.
    body = {"name": "green-admin", "size_gib": 1, "tenant": "green"}
    assert error_of(admin.post("/v1/shares", json=body), 413).startswith("tenant green is over")
    # A null falls back to the defaults; the field left out is kept.
    relaxed = admin.put("/v1/quotas/green", json={"shares": None}).json()
    assert limits(relaxed) == (50, 2, "built-in", 10, 10, "tenant")
    assert admin.post("/v1/shares", json={**body, "size_gib": 1}).status_code == 413  # 11 GiB
    assert limits(admin.delete("/v1/quotas/green").json()) == (
        50, 2, "built-in", 1000, 10, "built-in",
    )  # fmt: skip
    assert admin.post("/v1/shares", json=body).status_code == 201


def test_defaults_are_stored_and_overrides_listed(api: ApiServer, admin: httpx.Client) -> None:
    try:
        changed = admin.put("/v1/quota-defaults", json={"shares": 3, "gigabytes": -1}).json()
        assert limits(changed) == (3, None, "defaults", -1, None, "defaults")
        # A tenant without an override gets them, unlimited gigabytes included.
        blue = api.client(api.token("blue-q", tenant="blue"))
        big = {"name": "blue-big", "size_gib": 50_000}
        assert blue.post("/v1/shares", json=big).status_code == 201
        assert limits(blue.get("/v1/quotas/blue").json()) == (
            3, 1, "defaults", -1, 50_000, "defaults",
        )  # fmt: skip
        admin.put("/v1/quotas/blue", json={"gigabytes": 60_000})
        listed = admin.get("/v1/quotas").json()
        assert limits(listed["defaults"]) == (3, None, "defaults", -1, None, "defaults")
        tenants = {q["tenant"]: limits(q) for q in listed["quotas"]}
        assert tenants["blue"] == (3, 1, "defaults", 60_000, 50_000, "tenant")
        assert [q["tenant"] for q in listed["quotas"]] == sorted(tenants)
    finally:
        admin.put("/v1/quota-defaults", json={"shares": None, "gigabytes": None})
    assert limits(admin.get("/v1/quota-defaults").json()) == (
        50, None, "built-in", 1000, None, "built-in",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "give the limits to set: shares, gigabytes (or both)"),
        ({"shares": -2}, "shares: Input should be greater than or equal to -1"),
        ({"shares": True}, "shares: Input should be a valid integer"),
        ({"gigabytes": "10"}, "gigabytes: Input should be a valid integer"),
        ({"snapshots": 10}, "snapshots: Extra inputs are not permitted"),
    ],
)
def test_bad_quota_bodies_are_400(admin: httpx.Client, body: Any, message: str) -> None:
    assert message in error_of(admin.put("/v1/quotas/acme", json=body), 400)
