"""Validation at the edge (issue 21), through a real ``vshare api run`` process and the real
``vshare`` command: strict numbers, volumes checked at start, store URIs, secrets kept out of
the access log, authentication before the body size."""

from __future__ import annotations

import http.client
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.api.server import ApiServer
from tests.api.test_http import error_of
from tests.processes import VSHARE, free_port

TEN_MB = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def admin(api: ApiServer) -> Iterator[httpx.Client]:
    with api.client(api.admin_token) as client:
        yield client


@pytest.mark.parametrize("size", [True, False, "10", 2.0, "1e3", None])
def test_sizes_are_numbers_only(admin: httpx.Client, size: object) -> None:
    body = {"name": "strict", "size_gib": size, "tenant": "acme"}
    message = error_of(admin.post("/v1/shares", json=body), 400)
    assert message.startswith("size_gib: "), message
    assert admin.get("/v1/shares/strict").status_code == 404


def test_resizes_and_cids_are_numbers_only(admin: httpx.Client) -> None:
    made = admin.post("/v1/shares", json={"name": "num", "size_gib": 1, "tenant": "acme"})
    assert made.status_code == 201, made.text
    for size in (True, "10"):
        message = error_of(admin.post("/v1/shares/num/extend", json={"size_gib": size}), 400)
        assert message.startswith("size_gib: "), message
    assert admin.get("/v1/shares/num").json()["size_gib"] == 1
    body = {"uuid": "vm-strict", "tenant": "acme", "cids": ["3"]}
    assert error_of(admin.post("/v1/instances", json=body), 400).startswith("cids.0: ")
    body["cids"] = [True]
    assert error_of(admin.post("/v1/instances", json=body), 400).startswith("cids.0: ")


def test_a_token_in_the_query_string_is_not_logged(api: ApiServer, admin: httpx.Client) -> None:
    secret = "s3cr3t-in-the-url-" + "x" * 20
    response = httpx.get(f"{api.url}/v1/shares", params={"token": secret})
    assert response.status_code in (400, 401)
    response = admin.get("/v1/shares", params={"token": secret, "tenant": "acme"})
    assert "unknown query parameter 'token'" in error_of(response, 400)
    log = api.log_path.read_text()
    assert secret not in log
    assert "/v1/shares?token=***&tenant=acme" in log  # what the API takes is still shown


def _post_raw(url: str, body_length: int, token: str | None) -> int:
    """POST a body of ``body_length`` bytes with Content-Length; the status, even when the
    server answers before taking all of it."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest("POST", "/v1/shares")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(body_length))
        if token:
            conn.putheader("Authorization", f"Bearer {token}")
        conn.endheaders()
        try:
            chunk = b" " * 65536
            for _ in range(body_length // len(chunk)):
                conn.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: read what it said
        return conn.getresponse().status
    finally:
        conn.close()


def test_authentication_comes_before_the_body_size(api: ApiServer) -> None:
    assert _post_raw(api.url, TEN_MB, None) == 401
    assert _post_raw(api.url, TEN_MB, "not-a-token") == 401
    assert _post_raw(api.url, TEN_MB, api.admin_token) == 413
    # Without a Content-Length (chunked): the same order, decided when the bound is passed.
    chunks = (b" " * 65536 for _ in range(TEN_MB // 65536))
    response = httpx.post(f"{api.url}/v1/shares", content=chunks)
    assert error_of(response, 401) == "this request needs a valid bearer token"
    assert response.headers["www-authenticate"] == "Bearer"
    chunks = (b" " * 65536 for _ in range(TEN_MB // 65536))
    response = api.client(api.admin_token).post("/v1/shares", content=chunks)
    assert error_of(response, 413) == "request body over 65536 bytes"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("VSHARE_")}
    full.update(env or {})
    return subprocess.run(
        [VSHARE, *args], check=False, capture_output=True, text=True, env=full, timeout=60
    )


def one_line_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vshare: "), done.stderr
    return lines[0].removeprefix("vshare: ")


def test_api_run_refuses_a_volume_that_does_not_exist(tmp_path: Path) -> None:
    store = tmp_path / "state.db"
    for uri, reason in [
        ("posix:/nonexistent", "/nonexistent does not exist"),
        (f"posix:{tmp_path / 'file'}", "is not a directory"),
    ]:
        (tmp_path / "file").write_text("not a directory")
        done = run("api", "run", "--listen", f"127.0.0.1:{free_port()}", "--store", f"sqlite://{store}",
                   "--volume", f"default={uri}")  # fmt: skip
        message = one_line_error(done, 2)
        assert message.startswith("volume default: ") and reason in message, message
        assert not store.exists()  # refused before the store was opened


def test_store_uris(tmp_path: Path) -> None:
    four = f"sqlite:///{tmp_path}/four.db"  # sqlite:////abs/path: an absolute path too
    assert four.startswith("sqlite:////")
    done = run("api", "token", "create", "ops", "--store", four)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "four.db").stat().st_size > 0
    assert "ops" in run("api", "token", "list", "--store", four).stdout

    missing_dir = tmp_path / "no-such-dir" / "state.db"
    message = one_line_error(run("api", "token", "list", "--store", f"sqlite://{missing_dir}"), 1)
    assert (
        message
        == f"store {missing_dir}: cannot create the database file: No such file or directory"
    )
    for uri, expected in [
        ("sqlite://host/x.db", "store URI 'sqlite://host/x.db': "),
        ("sqlite:", "store URI 'sqlite:' names no file"),
        ("etcd://nohost", "is not host:port"),
        ("etcd://h:2379?colour=red", "unknown option 'colour'"),
        ("nothing", "has no scheme"),
    ]:
        message = one_line_error(run("api", "token", "list", "--store", uri), 2)
        assert message.startswith(expected) or expected in message, (uri, message)
    assert sorted(os.listdir(tmp_path)) == ["four.db", "four.db-shm", "four.db-wal"] or sorted(
        os.listdir(tmp_path)
    ) == ["four.db"]


def test_tokens_and_config_errors_are_one_line(api: ApiServer, tmp_path: Path) -> None:
    base = {"VSHARE_ENDPOINT": api.url, "XDG_CONFIG_HOME": str(tmp_path / "none")}
    message = one_line_error(run("share", "list", env={**base, "VSHARE_TOKEN": "tök"}), 2)
    assert message.startswith("invalid API token (--token or VSHARE_TOKEN): it holds a non-ASCII")
    newline = {**base, "VSHARE_TOKEN": api.admin_token + "\n"}
    message = one_line_error(run("share", "list", env=newline), 2)
    assert message.startswith("invalid API token (--token or VSHARE_TOKEN): it holds a line break")
    message = one_line_error(run("share", "list", "--token", "a b", env=base), 2)
    assert "a space or control character" in message
    config = tmp_path / "client.toml"
    config.write_text(f'endpoint = "{api.url}"\ntoken = "tök"\n')
    message = one_line_error(run("share", "list", env={"VSHARE_CONFIG": str(config)}), 2)
    assert message.startswith(f"invalid API token (token in {config})")

    missing = tmp_path / "missing.toml"
    env = {"VSHARE_CONFIG": str(missing), "VSHARE_TOKEN": api.admin_token}
    message = one_line_error(run("share", "list", env=env), 2)
    assert message == f"config {missing} (VSHARE_CONFIG): no such file"
    # A good token through the environment still works.
    done = run("share", "list", env={**base, "VSHARE_TOKEN": api.admin_token})
    assert done.returncode == 0, done.stderr
