"""The largest share (issue 21): the operator's ``--max-share-size`` bounds create and
extend for everyone, through a real ``vshare api run`` process and the ``vshare`` command;
``vshare gateway run --help`` names both backends."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.server import ApiServer, start_api
from tests.api.test_http import error_of
from tests.processes import VSHARE
from vshare.cli._api import DEFAULT_MAX_SHARE_GIB as CLI_DEFAULT
from vshare.control import DEFAULT_MAX_SHARE_GIB

LIMIT = 1000


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    os.environ["VSHARE_MAX_SHARE_SIZE"] = str(LIMIT)  # as an operator's unit file would
    try:
        server = start_api(tmp_path_factory.mktemp("limited"))
    finally:
        del os.environ["VSHARE_MAX_SHARE_SIZE"]
    try:
        yield server
    finally:
        assert server.stop() == 0


def vshare_as(api: ApiServer, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSHARE_")}
    env.update(VSHARE_ENDPOINT=api.url, VSHARE_TOKEN=token, XDG_CONFIG_HOME="/nonexistent")
    return subprocess.run(
        [VSHARE, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_tenant_cannot_extend_its_share_beyond_the_limit(limited: ApiServer) -> None:
    tenant = limited.client(limited.token("acme-ci", tenant="acme"))
    made = tenant.post("/v1/shares", json={"name": "mine", "size_gib": 10})
    assert made.status_code == 201, made.text
    response = tenant.post("/v1/shares/mine/extend", json={"size_gib": 10**9})
    message = error_of(response, 413)
    assert response.json()["error"]["code"] == "over_limit"
    assert message == (
        f"share mine: 1000000000 GiB is over the largest share size, {LIMIT} GiB (the"
        " operator's limit: vshare api run --max-share-size)"
    )
    shown = tenant.get("/v1/shares/mine").json()
    assert (shown["size_gib"], shown["status"]) == (10, "available")
    grown = tenant.post("/v1/shares/mine/extend", json={"size_gib": LIMIT})
    assert grown.status_code == 200 and grown.json()["size_gib"] == LIMIT

    # The CLI: one line, exit 1 (the API refused).
    done = vshare_as(limited, limited.tokens["acme-ci"], "share", "extend", "mine", "5000")
    assert (done.returncode, done.stdout) == (1, ""), done.stderr
    assert done.stderr == (
        f"vshare: share mine: 5000 GiB is over the largest share size, {LIMIT} GiB (the"
        " operator's limit: vshare api run --max-share-size)\n"
    )


def test_create_is_bounded_too_for_the_admin(limited: ApiServer) -> None:
    admin = limited.client(limited.admin_token)
    body = {"name": "huge", "size_gib": LIMIT + 1, "tenant": "acme"}
    assert "over the largest share size" in error_of(admin.post("/v1/shares", json=body), 413)
    assert admin.get("/v1/shares/huge").status_code == 404
    done = vshare_as(limited, limited.admin_token, "share", "create", "huge", "--size",
                     str(10**9), "--tenant", "acme")  # fmt: skip
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "over the largest share size" in done.stderr


def test_the_default_limit_and_a_bad_one(tmp_path: Path) -> None:
    assert CLI_DEFAULT == DEFAULT_MAX_SHARE_GIB == 102400
    server = start_api(tmp_path)
    try:
        admin = server.client(server.admin_token)
        body = {"name": "big", "size_gib": DEFAULT_MAX_SHARE_GIB, "tenant": "t"}
        # The tenant's default quota (1000 GiB) binds first; without one, the limit does.
        response = admin.post("/v1/shares", json=body)
        assert "limit (gigabytes) is 1000 GiB" in error_of(response, 413)
        assert response.json()["error"]["code"] == "over_quota"
        assert admin.put("/v1/quotas/t", json={"gigabytes": -1}).status_code == 200
        assert admin.post("/v1/shares", json=body).status_code == 201
        response = admin.post("/v1/shares/big/extend", json={"size_gib": 10**9})
        assert "102400 GiB" in error_of(response, 413)
    finally:
        assert server.stop() == 0
    done = subprocess.run(
        [VSHARE, "api", "run", "--max-share-size", "0", "--volume", f"default=posix:{tmp_path}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "--max-share-size" in done.stderr


def test_gateway_run_help_names_both_backends() -> None:
    done = subprocess.run(
        [VSHARE, "gateway", "run", "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    text = " ".join(done.stdout.split())
    assert "posix:/path" in text and "gluster://HOST[:PORT]/VOLUME[/DIR]" in text
