"""The REST API as clients use it: a real ``vshare api run`` process, driven with httpx."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.server import ApiServer, start_api, vshare
from vshare.store import GatewayRecord, RuleState, ShareStatus, SqliteStore, hash_token

VM = "6f1c4c2e-8a59-4b7e-9d2b-1f0e2d3c4b5a"


def error_of(response: httpx.Response, status: int) -> str:
    """Check the status and the error body; return the one-line message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    message = body["error"]["message"]
    assert isinstance(message, str) and message and "\n" not in message
    assert "Traceback" not in response.text
    return str(message)


@pytest.fixture(scope="module")
def admin(api: ApiServer) -> httpx.Client:
    return api.client(api.admin_token)


def store_of(api: ApiServer) -> SqliteStore:
    """The same database the server uses, opened as a gateway would."""
    return SqliteStore(api.store_uri.removeprefix("sqlite://"))


def test_health_needs_no_token(api: ApiServer) -> None:
    response = httpx.get(f"{api.url}/v1/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok" and response.json()["revision"] >= 1


def test_the_share_lifecycle(api: ApiServer, admin: httpx.Client) -> None:
    created = admin.post("/v1/shares", json={"name": "life", "size_gib": 2, "tenant": "acme"})
    assert created.status_code == 201, created.text
    share = created.json()
    assert share["name"] == "life" and share["tenant"] == "acme" and share["size_gib"] == 2
    assert share["status"] == "available" and share["volume"] == "default"
    assert share["path"] == f"shares/{share['id']}"
    directory = api.volume / "shares" / share["id"]
    assert directory.is_dir()

    assert admin.get("/v1/shares/life").json() == share
    assert admin.get(f"/v1/shares/{share['id']}").json() == share
    assert "life" in [s["name"] for s in admin.get("/v1/shares").json()["shares"]]

    grown = admin.post("/v1/shares/life/extend", json={"size_gib": 3})
    assert grown.status_code == 200 and grown.json()["size_gib"] == 3

    with open(directory / "data.bin", "wb") as f:
        f.truncate(3 * 2**29)  # 1.5 GiB, sparse
    message = error_of(admin.post("/v1/shares/life/shrink", json={"size_gib": 1}), 409)
    assert message == "share life holds 1.50 GiB; it cannot shrink to 1 GiB"
    shrunk = admin.post("/v1/shares/life/shrink", json={"size_gib": 2})
    assert shrunk.status_code == 200 and shrunk.json()["size_gib"] == 2

    message = error_of(admin.delete("/v1/shares/life"), 409)
    assert message == "share life is not empty; delete it with force to remove its files too"
    assert (directory / "data.bin").exists()
    deleted = admin.delete("/v1/shares/life", params={"force": "true"})
    assert deleted.status_code == 204 and deleted.content == b""
    assert not directory.exists()
    assert error_of(admin.get("/v1/shares/life"), 404) == "no share 'life'"


def test_the_cache_mode_of_a_share(api: ApiServer, admin: httpx.Client) -> None:
    made = admin.post("/v1/shares", json={"name": "cached", "size_gib": 1, "tenant": "acme"})
    assert made.status_code == 201 and made.json()["cache"] == "meta"  # the default
    strict = {"name": "strict", "size_gib": 1, "tenant": "acme", "cache": "none"}
    assert admin.post("/v1/shares", json=strict).json()["cache"] == "none"

    changed = admin.put("/v1/shares/cached", json={"cache": "all"})
    assert changed.status_code == 200, changed.text
    assert changed.json() == {**made.json(), "cache": "all"}
    assert admin.get("/v1/shares/cached").json()["cache"] == "all"
    assert {s["name"]: s["cache"] for s in admin.get("/v1/shares").json()["shares"]}[
        "strict"
    ] == "none"
    with store_of(api) as store:
        share = store.get_share(made.json()["id"])
        assert share.cache == "all" and share.revision == store.revision()  # the last write

    for body, expected in [
        ({"cache": "most"}, "cache: Input should be 'none', 'meta' or 'all'"),
        ({"cache": None}, "cache: Input should be 'none', 'meta' or 'all'"),
        ({}, "cache: Field required"),
        ({"cache": "all", "size_gib": 5}, "size_gib: Extra inputs"),
    ]:
        response = admin.put("/v1/shares/cached", json=body)
        assert expected in error_of(response, 400), body
        assert response.json()["error"]["code"] == "bad_request"
    bad_create = {"name": "x", "size_gib": 1, "tenant": "acme", "cache": "fast"}
    assert "cache: Input should be" in error_of(admin.post("/v1/shares", json=bad_create), 400)
    missing = admin.put("/v1/shares/absent", json={"cache": "none"})
    assert error_of(missing, 404) == "no share 'absent'"
    with store_of(api) as store:
        store.update_share(made.json()["id"], status=ShareStatus.SHRINKING)
    busy = admin.put("/v1/shares/cached", json={"cache": "none"})
    assert error_of(busy, 409) == "share cached is shrinking; wait until that is done"
    assert admin.get("/v1/shares/cached").json()["cache"] == "all"


def test_access_rules(api: ApiServer, admin: httpx.Client) -> None:
    made = admin.post("/v1/shares", json={"name": "ruled", "size_gib": 1, "tenant": "acme"})
    assert made.status_code == 201
    rules = "/v1/shares/ruled/access"
    made = admin.post(rules, json={"access_type": "ip", "access_to": "10.1.2.3/8"})
    assert made.status_code == 201, made.text
    rule = made.json()
    assert (rule["access_to"], rule["access_level"], rule["state"]) == (
        "10.0.0.0/8", "rw", "queued_to_apply",
    )  # fmt: skip
    message = error_of(
        admin.post(rules, json={"access_type": "ip", "access_to": "10.0.0.0/8"}), 409
    )
    assert message.startswith("share ruled already has an ip rule for 10.0.0.0/8")
    ro = admin.post(rules, json={"access_type": "instance", "access_to": VM, "access_level": "ro"})
    assert ro.status_code == 201 and ro.json()["access_level"] == "ro"
    listed = admin.get(rules).json()["access"]
    assert [r["id"] for r in listed] == [rule["id"], ro.json()["id"]]

    # Never applied: deny deletes it outright.
    denied = admin.delete(f"{rules}/{rule['id']}")
    assert denied.status_code == 200 and denied.json()["state"] == "deleted"
    assert [r["id"] for r in admin.get(rules).json()["access"]] == [ro.json()["id"]]

    # Applied (a gateway moved it to active): deny queues it for the gateways.
    with store_of(api) as store:
        store.update_rule(ro.json()["id"], state=RuleState.ACTIVE)
    queued = admin.delete(f"{rules}/{ro.json()['id']}")
    assert queued.status_code == 200 and queued.json()["state"] == "queued_to_deny"
    with store_of(api) as store:
        assert store.get_rule(ro.json()["id"]).state is RuleState.QUEUED_TO_DENY
    again = admin.delete(f"{rules}/{ro.json()['id']}")
    assert again.status_code == 200 and again.json()["state"] == "queued_to_deny"

    assert "no access rule" in error_of(admin.delete(f"{rules}/nope"), 404)
    bad = admin.post(rules, json={"access_type": "user", "access_to": "root"})
    assert "numeric uid" in error_of(bad, 400)


def test_instances(admin: httpx.Client) -> None:
    body = {"uuid": VM.upper(), "tenant": "acme", "name": "web", "cids": [42]}
    made = admin.post("/v1/instances", json=body)
    assert made.status_code == 201, made.text
    instance = made.json()
    assert instance["uuid"] == VM and instance["cids"] == [42] and instance["name"] == "web"
    assert "is registered" in error_of(admin.post("/v1/instances", json=body), 409)
    taken = admin.post("/v1/instances", json={"uuid": "vm-x", "tenant": "acme", "cids": [42]})
    assert "cid 42 belongs to instance" in error_of(taken, 409)
    assert admin.get(f"/v1/instances/{VM}").json() == instance
    assert VM in [i["uuid"] for i in admin.get("/v1/instances").json()["instances"]]

    replaced = admin.put(
        f"/v1/instances/{VM}", json={"tenant": "acme", "ips": ["10.0.0.9"], "cids": [43]}
    )
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["cids"], replaced.json()["ips"]) == ([43], ["10.0.0.9"])

    removed = admin.delete(f"/v1/instances/{VM}")
    assert removed.status_code == 204
    assert error_of(admin.get(f"/v1/instances/{VM}"), 404) == f"no instance {VM!r}"
    assert error_of(admin.delete(f"/v1/instances/{VM}"), 404) == f"no instance {VM!r}"


def test_gateways_are_listed_with_their_health(api: ApiServer, admin: httpx.Client) -> None:
    with store_of(api) as store:
        store.heartbeat(
            GatewayRecord(id="hv-live", addresses=("vsock://any:564",), version="0.1.0",
                          host="hv1"),
            ttl_seconds=60,
        )  # fmt: skip
        store.heartbeat(GatewayRecord(id="hv-gone", host="hv2"), ttl_seconds=0.05)
    time.sleep(0.2)
    gateways = {g["id"]: g for g in admin.get("/v1/gateways").json()["gateways"]}
    assert gateways["hv-live"]["healthy"] is True
    assert gateways["hv-live"]["addresses"] == ["vsock://any:564"]
    assert gateways["hv-live"]["host"] == "hv1" and gateways["hv-live"]["ttl_seconds"] == 60
    assert gateways["hv-gone"]["healthy"] is False


def test_volumes_are_listed_with_their_capacity(api: ApiServer, admin: httpx.Client) -> None:
    (volume,) = admin.get("/v1/volumes").json()["volumes"]
    fs = os.statvfs(api.volume)
    assert volume["default"] is True and volume["problem"] is None
    assert volume["total_gib"] == round(fs.f_blocks * fs.f_frsize / 2**30, 3)
    # free space moves as the machine writes: within a GiB of statvfs's
    assert abs(volume["free_gib"] - fs.f_bavail * fs.f_frsize / 2**30) < 1
    assert 0 < volume["free_gib"] <= volume["total_gib"]


def test_401_without_or_with_an_unknown_token(api: ApiServer) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
        {"Authorization": f"Bearer {hash_token(api.admin_token)}"},  # the hash is no key
    ):
        response = httpx.get(f"{api.url}/v1/shares", headers=headers)
        error_of(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "unauthorized"
    # Authentication comes first: an unauthenticated request learns nothing about its input.
    error_of(httpx.post(f"{api.url}/v1/shares", json={"bad": 1}), 401)


def test_400_for_malformed_input(admin: httpx.Client) -> None:
    cases: list[tuple[dict[str, Any] | str, str]] = [
        ({"name": "x", "size_gib": 0, "tenant": "t"}, "size_gib: Input should be greater"),
        ({"name": "x", "size_gib": "ten", "tenant": "t"}, "size_gib: Input should be a valid"),
        ({"size_gib": 1, "tenant": "t"}, "name: Field required"),
        ({"name": "x", "size_gib": 1, "tenant": "t", "colour": "red"}, "colour: Extra inputs"),
        ({"name": "a/b", "size_gib": 1, "tenant": "t"}, "name: String should match pattern"),
        ({"name": "x", "size_gib": 1}, "an admin must say which tenant"),
        ({"name": "x", "size_gib": 1, "tenant": "t", "volume": "v9"}, "volume 'v9' is not one"),
        ("{not json", "JSON"),
    ]
    for body, expected in cases:
        if isinstance(body, str):
            response = admin.post(
                "/v1/shares", content=body, headers={"content-type": "application/json"}
            )
        else:
            response = admin.post("/v1/shares", json=body)
        message = error_of(response, 400)
        assert expected in message, (body, message)
        assert response.json()["error"]["code"] == "bad_request"
    assert "force" in error_of(admin.delete("/v1/shares/x", params={"force": "maybe"}), 400)


def test_404_and_405_for_what_does_not_exist(admin: httpx.Client) -> None:
    assert error_of(admin.get("/v1/shares/absent"), 404) == "no share 'absent'"
    assert error_of(admin.get("/v1/nothing"), 404) == "no such endpoint: GET /v1/nothing"
    response = admin.put("/v1/shares")
    assert error_of(response, 405) == "/v1/shares does not take PUT"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_tenant_tokens_see_and_manage_only_their_own(api: ApiServer, admin: httpx.Client) -> None:
    red = api.client(api.token("red-token", tenant="red"))
    made = admin.post(
        "/v1/tokens", json={"name": "blue-token", "tenant": "blue"}
    )  # the API can make them too
    assert made.status_code == 201 and made.json()["tenant"] == "blue"
    blue = api.client(made.json()["secret"])

    mine = red.post("/v1/shares", json={"name": "red-data", "size_gib": 1})
    assert mine.status_code == 201 and mine.json()["tenant"] == "red"
    theirs = blue.post("/v1/shares", json={"name": "blue-data", "size_gib": 1}).json()
    rule = blue.post(
        "/v1/shares/blue-data/access", json={"access_type": "ip", "access_to": "10.0.0.0/8"}
    ).json()

    assert [s["name"] for s in red.get("/v1/shares").json()["shares"]] == ["red-data"]
    assert [s["name"] for s in blue.get("/v1/shares").json()["shares"]] == ["blue-data"]
    everyone = [s["name"] for s in admin.get("/v1/shares").json()["shares"]]
    assert {"red-data", "blue-data"} <= set(everyone)
    assert [s["name"] for s in admin.get("/v1/shares?tenant=red").json()["shares"]] == ["red-data"]

    # Another tenant's share is answered exactly as a missing one: no probing.
    for key in ("blue-data", theirs["id"]):
        assert error_of(red.get(f"/v1/shares/{key}"), 404) == f"no share {key!r}"
        error_of(red.delete(f"/v1/shares/{key}", params={"force": "true"}), 404)
        error_of(red.post(f"/v1/shares/{key}/extend", json={"size_gib": 9}), 404)
        error_of(red.put(f"/v1/shares/{key}", json={"cache": "none"}), 404)
        error_of(red.get(f"/v1/shares/{key}/access"), 404)
        error_of(red.delete(f"/v1/shares/{key}/access/{rule['id']}"), 404)
        error_of(
            red.post(f"/v1/shares/{key}/access", json={"access_type": "ip", "access_to": "0/0"}),
            404,
        )
    after = blue.get("/v1/shares/blue-data").json()
    assert after["size_gib"] == 1 and after["status"] == "available" and after["cache"] == "meta"
    assert [r["id"] for r in blue.get("/v1/shares/blue-data/access").json()["access"]] == [
        rule["id"]
    ]
    assert (api.volume / "shares" / theirs["id"]).is_dir()

    # Forbidden: acting for another tenant, and admin-only actions.
    create_for_blue = {"name": "sneaky", "size_gib": 1, "tenant": "blue"}
    assert "cannot create shares for blue" in error_of(
        red.post("/v1/shares", json=create_for_blue), 403
    )
    error_of(red.get("/v1/shares", params={"tenant": "blue"}), 403)
    error_of(red.get("/v1/gateways"), 403)
    error_of(red.get("/v1/volumes"), 403)
    error_of(red.get("/v1/tokens"), 403)
    error_of(red.post("/v1/tokens", json={"name": "more"}), 403)
    error_of(red.post("/v1/instances", json={"uuid": "vm-r", "tenant": "red", "cids": [77]}), 403)

    # Instances: each tenant sees its own.
    admin.post("/v1/instances", json={"uuid": "vm-red", "tenant": "red", "cids": [91]})
    admin.post("/v1/instances", json={"uuid": "vm-blue", "tenant": "blue", "cids": [92]})
    assert [i["uuid"] for i in red.get("/v1/instances").json()["instances"]] == ["vm-red"]
    assert error_of(red.get("/v1/instances/vm-blue"), 404) == "no instance 'vm-blue'"
    error_of(red.delete("/v1/instances/vm-blue"), 403)
    assert admin.get("/v1/instances/vm-blue").status_code == 200

    assert red.get("/v1/whoami").json() == {"token": "red-token", "admin": False, "tenant": "red"}


def test_tokens(api: ApiServer, admin: httpx.Client) -> None:
    made = admin.post("/v1/tokens", json={"name": "ops2"})
    assert made.status_code == 201
    secret = made.json()["secret"]
    assert made.json()["admin"] is True and made.json()["tenant"] is None
    ops2 = api.client(secret)
    assert ops2.get("/v1/whoami").json() == {"token": "ops2", "admin": True, "tenant": None}
    listed = admin.get("/v1/tokens").json()["tokens"]
    assert {"admin", "ops2"} <= {t["name"] for t in listed}
    assert secret not in admin.get("/v1/tokens").text
    assert hash_token(secret) not in admin.get("/v1/tokens").text
    assert "exists" in error_of(admin.post("/v1/tokens", json={"name": "ops2"}), 409)
    assert "this request uses" in error_of(ops2.delete("/v1/tokens/ops2"), 409)
    assert admin.delete("/v1/tokens/ops2").status_code == 204
    error_of(ops2.get("/v1/whoami"), 401)
    error_of(admin.delete("/v1/tokens/ops2"), 404)


def test_the_openapi_document(api: ApiServer) -> None:
    doc = httpx.get(f"{api.url}/openapi.json").json()
    paths = doc["paths"]
    for path, methods in {
        "/v1/shares": {"get", "post"},
        "/v1/shares/{share}": {"get", "put", "delete"},
        "/v1/shares/{share}/extend": {"post"},
        "/v1/shares/{share}/shrink": {"post"},
        "/v1/shares/{share}/access": {"get", "post"},
        "/v1/shares/{share}/access/{rule_id}": {"delete"},
        "/v1/instances": {"get", "post"},
        "/v1/instances/{uuid}": {"get", "put", "delete"},
        "/v1/gateways": {"get"},
        "/v1/volumes": {"get"},
        "/v1/health": {"get"},
    }.items():
        assert methods <= set(paths[path]), path
    create = paths["/v1/shares"]["post"]["responses"]
    assert "422" not in create
    assert create["409"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_the_access_log_has_one_line_per_request(api: ApiServer, admin: httpx.Client) -> None:
    admin.get("/v1/shares/logged-absent")
    time.sleep(0.2)
    lines = [
        line for line in api.log_lines()
        if line["logger"] == "vshare.api.access" and line["msg"] == "GET /v1/shares/logged-absent"
    ]  # fmt: skip
    assert len(lines) == 1
    assert lines[0]["status"] == 404 and lines[0]["token"] == "admin"
    assert isinstance(lines[0]["ms"], float)


@pytest.mark.slow
def test_sigterm_stops_the_api_gracefully_with_exit_0(tmp_path: Path) -> None:
    server = start_api(tmp_path)
    client = server.client(server.admin_token)
    assert (
        client.post("/v1/shares", json={"name": "s", "size_gib": 1, "tenant": "t"}).status_code
        == 201
    )
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(20) == 0
    messages = [line["msg"] for line in server.log_lines()]
    assert messages[-1] == "api: stopped"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/v1/health", timeout=2)
    # The state survives: a new server on the same store sees the share.
    again = start_api(tmp_path, admin="admin2")
    try:
        assert again.client(again.admin_token).get("/v1/shares/s").status_code == 200
    finally:
        assert again.stop() == 0


def test_startup_failures_are_one_line(tmp_path: Path) -> None:
    store = f"sqlite://{tmp_path / 'state.db'}"
    with socket_bound() as port:
        done = vshare("api", "run", "--listen", f"127.0.0.1:{port}", "--store", store,
                      "--volume", f"default=posix:{tmp_path}", check=False)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"vshare: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    for args, message in [
        (["--listen", "nowhere"], "--listen 'nowhere': expected HOST:PORT"),
        (["--volume", "novalue"], "expected NAME=URI"),
        (["--store", "mysql://x"], "unknown scheme 'mysql'"),
    ]:
        volume = ["--volume", f"default=posix:{tmp_path}"]
        done = vshare("api", "run", "--store", store, *volume, *args, check=False)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@contextlib.contextmanager
def socket_bound() -> Iterator[int]:
    """A port of 127.0.0.1 held by a listening socket for the duration of a block."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])
