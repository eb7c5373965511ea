"""The app in-process, for what a healthy server cannot be made to do from outside: a bug
(an unexpected exception) and a store that stops serving."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from vshare.api import create_app, parse_listen
from vshare.api._app import MAX_BODY
from vshare.control import ControlService, issue_token
from vshare.store import SqliteStore, StoreUnavailable

Setup = tuple[ControlService, httpx.AsyncClient]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    (tmp_path / "vol").mkdir()
    store = SqliteStore(tmp_path / "state.db")
    service = ControlService(store, {"default": f"posix:{tmp_path / 'vol'}"})
    _, secret = issue_token(store, "admin")
    transport = httpx.ASGITransport(app=create_app(service))
    headers = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers) as c:
        yield service, c
    service.close()
    store.close()


@pytest.mark.anyio
async def test_a_bug_is_a_500_with_our_body_and_a_logged_traceback(
    setup: Setup,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    service, client = setup

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(service, "list_shares", broken)
    with caplog.at_level(logging.INFO):
        response = await client.get("/v1/shares")
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "internal", "message": "internal error; see the server log"}
    }
    (record,) = [r for r in caplog.records if r.name == "vshare.api" and r.exc_info]
    assert record.getMessage() == "internal error in GET /v1/shares"
    assert isinstance(record.exc_info[1], RuntimeError)  # type: ignore[index]
    (access,) = [r for r in caplog.records if r.name == "vshare.api.access"]
    assert access.fields["status"] == 500  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_store_that_stops_serving_is_a_503(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, client = setup

    def down(*args: object) -> int:
        raise StoreUnavailable("store /x: database is locked")

    monkeypatch.setattr(service.store, "revision", down)
    response = await client.get("/v1/health")
    assert response.status_code == 503
    assert response.json()["error"] == {
        "code": "unavailable", "message": "store /x: database is locked",
    }  # fmt: skip


@pytest.mark.anyio
async def test_unknown_query_parameters_are_refused(setup: Setup) -> None:
    _, client = setup
    response = await client.delete("/v1/shares/x", params={"forse": "true"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "unknown query parameter 'forse'; it takes force"
    )
    assert (await client.get("/v1/health", params={"x": "1"})).status_code == 400
    twice = await client.get("/v1/shares", params=[("tenant", "a"), ("tenant", "b")])
    assert twice.status_code == 400
    assert twice.json()["error"]["message"] == "query parameter 'tenant' is given more than once"


@pytest.mark.anyio
async def test_a_huge_body_is_refused_before_it_is_parsed(setup: Setup) -> None:
    _, client = setup
    body = b'{"name": "' + b"x" * (MAX_BODY + 1) + b'", "size_gib": 1}'
    response = await client.post(
        "/v1/shares", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "too_large", "message": f"request body over {MAX_BODY} bytes",
    }  # fmt: skip


@pytest.mark.anyio
async def test_long_messages_are_cut_to_one_bounded_line(
    setup: Setup,
) -> None:
    _, client = setup
    response = await client.get("/v1/shares/" + "n" * 5000)
    message = response.json()["error"]["message"]
    assert response.status_code == 404 and len(message) == 500 and message.endswith("…")


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:8564") == ("127.0.0.1", 8564)
    assert parse_listen("[::1]:80") == ("::1", 80)
    assert parse_listen("api.example:443") == ("api.example", 443)
    for bad in ("8564", ":8564", "host:", "host:0", "host:65536", "host:http"):
        with pytest.raises(ValueError, match="expected HOST:PORT"):
            parse_listen(bad)
