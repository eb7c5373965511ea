"""Deletes that always finish (issue 21): a deep tree removed through a real ``vshare api
run`` process, and a forced delete killed midway (SIGKILL) finished after a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx

from tests.api.server import ApiServer, start_api
from tests.api.test_http import error_of
from tests.processes import VSHARE
from vshare.store import ShareStatus, SqliteStore

DEPTH = 10_000


def make_deep_tree(top: Path, depth: int, files_every: int = 0) -> None:
    """``top/d/d/d/...`` ``depth`` levels deep (longer than PATH_MAX: made with dir fds),
    with a few files every ``files_every`` levels."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(depth):
            if files_every and level % files_every == 0:
                for i in range(20):
                    os.close(os.open(f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def store_of(api: ApiServer) -> SqliteStore:
    return SqliteStore(api.store_uri.removeprefix("sqlite://"))


def test_a_tree_10000_levels_deep_is_deleted_with_force(api: ApiServer) -> None:
    admin = api.client(api.admin_token)
    made = admin.post("/v1/shares", json={"name": "deep", "size_gib": 1, "tenant": "acme"})
    assert made.status_code == 201, made.text
    directory = api.volume / made.json()["path"]
    make_deep_tree(directory, DEPTH)
    started = time.monotonic()
    deleted = admin.delete("/v1/shares/deep", params={"force": "true"}, timeout=300)
    took = time.monotonic() - started
    assert deleted.status_code == 204, deleted.text
    assert not directory.exists()
    assert error_of(admin.get("/v1/shares/deep"), 404) == "no share 'deep'"
    assert took < 120, took
    assert "with force (" in api.log_path.read_text()  # the log says how much it removed


def test_a_delete_killed_midway_is_finished_after_a_restart(tmp_path: Path) -> None:
    server = start_api(tmp_path)
    admin = server.client(server.admin_token)
    made = admin.post("/v1/shares", json={"name": "big", "size_gib": 1, "tenant": "acme"})
    assert made.status_code == 201, made.text
    share = made.json()
    directory = server.volume / share["path"]
    make_deep_tree(directory, DEPTH, files_every=5)  # 10,000 dirs and 40,000 files

    answers: list[object] = []

    def delete() -> None:
        try:
            answers.append(admin.delete("/v1/shares/big", params={"force": "true"}, timeout=300))
        except httpx.TransportError as exc:
            answers.append(exc)

    thread = threading.Thread(target=delete)
    thread.start()
    # Kill the API as soon as the removal has visibly begun (subdirectories hoisted).
    deadline = time.monotonic() + 60
    while not any(n.startswith(".vshare-rm-") for n in os.listdir(directory)):
        assert time.monotonic() < deadline and not answers, answers
        time.sleep(0.001)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(20)
    thread.join(60)
    assert answers and isinstance(answers[0], httpx.TransportError), answers
    assert directory.exists()  # midway: a part is left
    with store_of(server) as store:
        assert store.get_share(share["id"]).status is ShareStatus.DELETING

    again = start_api(tmp_path, admin="admin2")
    try:
        client = again.client(again.admin_token)
        shown = client.get("/v1/shares/big").json()
        assert shown["status"] == "deleting"
        assert "delete it again with force" in shown["waiting_for"]
        message = error_of(client.delete("/v1/shares/big"), 409)
        assert message.startswith("share big is deleting: a delete with force"), message
        env = {**os.environ, "VSHARE_ENDPOINT": again.url, "VSHARE_TOKEN": again.admin_token}
        shown_cli = vshare_env(["share", "show", "big"], env)
        assert "waiting_for:" in shown_cli
        done = vshare_env(["share", "delete", "big", "--force"], env)
        assert done.strip() == "deleted share big"
        assert not directory.exists()
        assert os.listdir(again.volume / "shares") == []
        assert error_of(client.get("/v1/shares/big"), 404) == "no share 'big'"
    finally:
        assert again.stop() == 0


def vshare_env(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [VSHARE, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
