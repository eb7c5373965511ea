"""The control-plane CLI (``vshare share|access|instance|gateway list``) against a real
``vshare api run`` process: JSON for scripts, tables for people, one-line errors with the
documented exit codes, and endpoint/token from flags, the environment or a config file.

Most commands run in-process through click's runner (fast, with the real HTTP server on
the other side); the exit-code and environment cases also run the real ``vshare`` binary.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.api.server import VSHARE, ApiServer, free_port, start_api
from vshare.cli._main import cli
from vshare.store import GatewayRecord, SqliteStore

VM = "6f1c4c2e-8a59-4b7e-9d2b-1f0e2d3c4b5a"
CLIENT_ENV = ("VSHARE_ENDPOINT", "VSHARE_TOKEN", "VSHARE_CONFIG", "XDG_CONFIG_HOME")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    server = start_api(tmp_path_factory.mktemp("cli-api"))
    try:
        yield server
    finally:
        assert server.stop() == 0


def clean_env(tmp: Path | None = None, **values: str) -> dict[str, str | None]:
    """No client settings from the test runner's environment; a config path that does not
    exist unless one is given."""
    env: dict[str, str | None] = dict.fromkeys(CLIENT_ENV)
    env["XDG_CONFIG_HOME"] = str((tmp or Path("/nonexistent")) / "no-config-home")
    env.update(values)
    return env


def run(args: list[str], env: Mapping[str, str | None]) -> Result:
    """``vshare ARGS`` in-process; never a traceback, whatever the outcome."""
    result = CliRunner().invoke(cli, args, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"vshare {' '.join(args)} raised {result.exception!r}")
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    return result


def ok(args: list[str], env: Mapping[str, str | None]) -> str:
    result = run(args, env)
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result.stdout


def refused(args: list[str], env: Mapping[str, str | None], code: int = 1) -> str:
    """Run a command that must fail: the exit code, and the one stderr line it says."""
    result = run(args, env)
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vshare: "), result.stderr
    return lines[0].removeprefix("vshare: ")


def table(text: str) -> list[dict[str, str]]:
    """Parse an aligned table (columns split on runs of two or more spaces)."""
    lines = text.splitlines()
    header = re.split(r"\s{2,}", lines[0].strip())
    return [dict(zip(header, re.split(r"\s{2,}", line.strip()), strict=True)) for line in lines[1:]]


@pytest.fixture(scope="module")
def admin_env(api: ApiServer) -> dict[str, str | None]:
    return clean_env(VSHARE_ENDPOINT=api.url, VSHARE_TOKEN=api.admin_token)


def test_share_commands(api: ApiServer, admin_env: dict[str, str | None]) -> None:
    out = ok(["share", "create", "docs", "--size", "2", "--tenant", "acme", "--json"], admin_env)
    share: dict[str, Any] = json.loads(out)
    assert (share["name"], share["size_gib"], share["tenant"], share["status"]) == (
        "docs", 2, "acme", "available",
    )  # fmt: skip
    directory = api.volume / "shares" / share["id"]
    assert directory.is_dir()

    line = ok(["share", "create", "notes", "--size", "1", "--tenant", "acme"], admin_env)
    assert line.startswith("created share notes (") and "1 GiB, tenant acme" in line

    rows = {r["NAME"]: r for r in table(ok(["share", "list"], admin_env))}
    assert rows["docs"] == {
        "NAME": "docs", "ID": share["id"], "TENANT": "acme", "SIZE_GIB": "2",
        "STATUS": "available", "CACHE": "meta", "VOLUME": "default",
    }  # fmt: skip
    listed = json.loads(ok(["share", "list", "--json", "--tenant", "acme"], admin_env))
    assert {s["name"] for s in listed["shares"]} >= {"docs", "notes"}

    shown = dict(
        line.split(":", 1) for line in ok(["share", "show", share["id"]], admin_env).splitlines()
    )
    assert shown["name"].strip() == "docs" and shown["path"].strip() == f"shares/{share['id']}"

    assert "share docs: 5 GiB" in ok(["share", "extend", "docs", "5"], admin_env)
    with open(directory / "big.bin", "wb") as f:
        f.truncate(2 * 2**30)
    message = refused(["share", "shrink", "docs", "1"], admin_env)
    assert message == "share docs holds 2.00 GiB; it cannot shrink to 1 GiB"
    assert json.loads(ok(["share", "shrink", "docs", "3", "--json"], admin_env))["size_gib"] == 3

    message = refused(["share", "delete", "docs"], admin_env)
    assert message == "share docs is not empty; delete it with force to remove its files too"
    assert ok(["share", "delete", "docs", "--force"], admin_env) == "deleted share docs\n"
    assert not directory.exists()
    assert refused(["share", "show", "docs"], admin_env) == "no share 'docs'"
    usage = run(["share", "extend", "notes", "0"], admin_env)  # click's own check: exit 2
    assert usage.exit_code == 2 and "0 is not in the range x>=1" in usage.stderr


def test_share_cache_commands(admin_env: dict[str, str | None]) -> None:
    made = ok(["share", "create", "strict", "--size", "1", "--tenant", "acme", "--cache", "none",
               "--json"], admin_env)  # fmt: skip
    assert json.loads(made)["cache"] == "none"
    rows = {r["NAME"]: r for r in table(ok(["share", "list"], admin_env))}
    assert rows["strict"]["CACHE"] == "none"

    line = ok(["share", "update", "strict", "--cache", "all"], admin_env)
    assert line == "share strict: 1 GiB, tenant acme, volume default, cache all, available\n"
    shown = dict(
        line.split(":", 1) for line in ok(["share", "show", "strict"], admin_env).splitlines()
    )
    assert shown["cache"].strip() == "all"
    changed = json.loads(ok(["share", "update", "strict", "--cache", "meta", "--json"], admin_env))
    assert changed["cache"] == "meta" and changed["name"] == "strict"

    for args in (["share", "update", "strict", "--cache", "most"],
                 ["share", "create", "x", "--size", "1", "--cache", "fast"]):  # fmt: skip
        usage = run(args, admin_env)  # click's own check: exit 2, before any request
        assert usage.exit_code == 2 and "is not one of 'none', 'meta', 'all'" in usage.stderr
    usage = run(["share", "update", "strict"], admin_env)
    assert usage.exit_code == 2 and "Missing option '--cache'" in usage.stderr
    assert refused(["share", "update", "absent", "--cache", "none"], admin_env) == (
        "no share 'absent'"
    )
    for command in ("create", "update"):
        text = ok(["share", command, "--help"], admin_env)
        for mode in ("none  every request asks the storage", "meta  attributes and name",
                     "all   file data"):  # fmt: skip
            assert mode in text, (command, text)


def test_access_commands(admin_env: dict[str, str | None]) -> None:
    ok(["share", "create", "ruled", "--size", "1", "--tenant", "acme"], admin_env)
    line = ok(["access", "allow", "ruled", "ip", "10.1.2.3/8", "--level", "ro"], admin_env)
    assert line.endswith("ip 10.0.0.0/8 ro on share ruled (queued_to_apply)\n")
    rule_id = line.split()[1].rstrip(":")
    made = json.loads(ok(["access", "allow", "ruled", "instance", VM, "--json"], admin_env))
    assert made["access_level"] == "rw" and made["state"] == "queued_to_apply"

    message = refused(["access", "allow", "ruled", "ip", "10.0.0.0/8"], admin_env)
    assert message.startswith("share ruled already has an ip rule for 10.0.0.0/8")

    rows = table(ok(["access", "list", "ruled"], admin_env))
    assert [(r["ID"], r["TYPE"], r["TO"], r["LEVEL"], r["STATE"]) for r in rows] == [
        (rule_id, "ip", "10.0.0.0/8", "ro", "queued_to_apply"),
        (made["id"], "instance", VM, "rw", "queued_to_apply"),
    ]
    assert ok(["access", "deny", "ruled", rule_id], admin_env) == f"rule {rule_id} deleted\n"
    listed = json.loads(ok(["access", "list", "ruled", "--json"], admin_env))
    assert [r["id"] for r in listed["access"]] == [made["id"]]
    assert "no access rule" in refused(["access", "deny", "ruled", rule_id + "x"], admin_env)
    assert "numeric uid" in refused(["access", "allow", "ruled", "user", "root"], admin_env)
    # A usage mistake is click's: exit 2.
    refused_usage = run(["access", "allow", "ruled", "mac", "aa:bb"], admin_env)
    assert refused_usage.exit_code == 2 and "'mac' is not one of" in refused_usage.stderr


def test_instance_commands(admin_env: dict[str, str | None]) -> None:
    line = ok(
        ["instance", "register", VM, "--tenant", "acme", "--cid", "42", "--ip", "10.0.0.9",
         "--name", "web"],
        admin_env,
    )  # fmt: skip
    assert line == f"registered instance {VM} (tenant acme): cid=42 ip=10.0.0.9\n"
    rows = table(ok(["instance", "list"], admin_env))
    assert {"UUID": VM, "TENANT": "acme", "NAME": "web", "IDENTITIES": "cid=42 ip=10.0.0.9"} in rows
    listed = json.loads(ok(["instance", "list", "--json", "--tenant", "acme"], admin_env))
    assert [i["uuid"] for i in listed["instances"]] == [VM]
    assert "uuid:       " + VM in ok(["instance", "show", VM], admin_env)

    again = ["instance", "register", VM, "--tenant", "acme", "--cid", "43"]
    assert "is registered" in refused(again, admin_env)
    replaced = json.loads(ok([*again, "--replace", "--json"], admin_env))
    assert replaced["cids"] == [43] and replaced["ips"] == []
    message = refused(["instance", "register", "vm-2", "--tenant", "acme"], admin_env, code=2)
    assert message == "give at least one identity: --cid, --socket, --ip or --cert"
    assert ok(["instance", "remove", VM], admin_env) == f"removed instance {VM}\n"
    assert refused(["instance", "remove", VM], admin_env) == f"no instance {VM!r}"


def test_gateway_list(api: ApiServer, admin_env: dict[str, str | None]) -> None:
    with SqliteStore(api.store_uri.removeprefix("sqlite://")) as store:
        store.heartbeat(GatewayRecord(id="hv-7", host="hv7", version="0.1.0"), ttl_seconds=60)
    rows = table(ok(["gateway", "list"], admin_env))
    (row,) = [r for r in rows if r["ID"] == "hv-7"]
    assert row["HEALTHY"] == "yes" and row["HOST"] == "hv7"


def test_a_tenant_token_acts_for_its_tenant(api: ApiServer) -> None:
    env = clean_env(VSHARE_ENDPOINT=api.url, VSHARE_TOKEN=api.token("cli-red", tenant="red"))
    made = json.loads(ok(["share", "create", "red-share", "--size", "1", "--json"], env))
    assert made["tenant"] == "red"
    assert [r["NAME"] for r in table(ok(["share", "list"], env))] == ["red-share"]
    assert refused(["gateway", "list"], env) == "only the admin may list gateways"


def test_endpoint_and_token_from_a_config_file(api: ApiServer, tmp_path: Path) -> None:
    config = tmp_path / "client.toml"
    config.write_text(f'endpoint = "{api.url}"\ntoken = "{api.admin_token}"\n')
    env = clean_env(VSHARE_CONFIG=str(config))
    assert "shares" in json.loads(ok(["share", "list", "--json"], env))

    # The default place: $XDG_CONFIG_HOME/vshare/client.toml.
    (tmp_path / "xdg" / "vshare").mkdir(parents=True)
    (tmp_path / "xdg" / "vshare" / "client.toml").write_text(config.read_text())
    env = clean_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    env["VSHARE_CONFIG"] = None
    assert "shares" in json.loads(ok(["share", "list", "--json"], env))

    # Flags, then the environment, win over the file.
    config.write_text(f'endpoint = "{api.url}"\ntoken = "wrong"\n')
    env = clean_env(VSHARE_CONFIG=str(config))
    assert refused(["share", "list"], env) == "unknown or revoked API token"
    ok(["share", "list", "--token", api.admin_token], env)
    ok(["share", "list"], {**env, "VSHARE_TOKEN": api.admin_token})

    config.write_text('endpoint = "x"\ncolour = "red"\n')
    assert "unknown key 'colour'" in refused(["share", "list"], env, code=2)
    config.write_text("endpoint = [unclosed\n")
    assert refused(["share", "list"], env, code=2).startswith(f"config {config}:")


def test_no_token_is_a_usage_error(tmp_path: Path) -> None:
    message = refused(["share", "list"], clean_env(tmp_path), code=2)
    assert message.startswith("no API token: give --token, set VSHARE_TOKEN")


def real_vshare(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV}
    full.update(env)
    return subprocess.run(
        [VSHARE, *args], check=False, capture_output=True, text=True, env=full, timeout=60
    )


def test_the_real_command_with_env_and_its_exit_codes(api: ApiServer, tmp_path: Path) -> None:
    env = {"VSHARE_ENDPOINT": api.url, "VSHARE_TOKEN": api.admin_token,
           "VSHARE_CONFIG": str(tmp_path / "none.toml")}  # fmt: skip
    done = real_vshare(["share", "create", "twice", "--size", "1", "--tenant", "t"], env)
    assert done.returncode == 0 and done.stdout.startswith("created share twice"), done.stderr

    done = real_vshare(["share", "create", "twice", "--size", "1", "--tenant", "t"], env)
    assert (done.returncode, done.stdout, done.stderr) == (
        1, "", "vshare: share name 'twice' is taken\n",
    )  # fmt: skip

    port = free_port()  # nothing listens there
    unreachable = {**env, "VSHARE_ENDPOINT": f"127.0.0.1:{port}"}
    done = real_vshare(["share", "list"], unreachable)
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr.startswith(
        f"vshare: cannot reach the vshare API at http://127.0.0.1:{port}: "
    )
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_api_token_commands_work_on_the_store(tmp_path: Path) -> None:
    store = f"sqlite://{tmp_path / 'state.db'}"
    done = real_vshare(["api", "token", "create", "ops", "--store", store], {})
    assert done.returncode == 0 and "shown this once" in done.stderr
    secret = done.stdout.strip()
    assert len(secret) >= 43 and "\n" not in secret
    done = real_vshare(["api", "token", "create", "acme-ci", "--tenant", "acme", "--json",
                        "--store", store], {})  # fmt: skip
    assert json.loads(done.stdout)["tenant"] == "acme"
    rows = table(real_vshare(["api", "token", "list", "--store", store], {}).stdout)
    assert [(r["NAME"], r["TENANT"]) for r in rows] == [("acme-ci", "acme"), ("ops", "(admin)")]
    done = real_vshare(["api", "token", "create", "ops", "--store", store], {})
    assert (done.returncode, done.stderr) == (
        1, "vshare: token 'ops' exists; revoke it first, or choose another name\n",
    )  # fmt: skip
    assert real_vshare(["api", "token", "revoke", "ops", "--store", store], {}).returncode == 0
    done = real_vshare(["api", "token", "revoke", "ops", "--store", store], {})
    assert (done.returncode, done.stderr) == (1, "vshare: no token 'ops'\n")
    with SqliteStore(tmp_path / "state.db") as state:
        assert [t.name for t in state.list_tokens()] == ["acme-ci"]
