"""``vshare quota`` against a real ``vshare api run`` process (issue 21): tables for people,
JSON for scripts, and a create over quota refused in one line naming the limit, with exit
code 1 (the real binary) or 2 (a usage mistake)."""

from __future__ import annotations

import json

import pytest

from tests.api.server import ApiServer

# The same fixture: a real API process of this module's own.
from tests.cli.test_control_cli import api, clean_env, ok, real_vshare, refused, table

__all__ = ["api"]


def test_set_show_list_reset(api: ApiServer) -> None:
    admin = clean_env(VSHARE_ENDPOINT=api.url, VSHARE_TOKEN=api.admin_token)
    tenant = clean_env(VSHARE_ENDPOINT=api.url, VSHARE_TOKEN=api.token("acme-q", tenant="acme"))
    line = ok(["quota", "set", "acme", "--shares", "1", "--gigabytes", "unlimited"], admin)
    assert line == "quota of tenant acme: shares 1 (tenant), gigabytes unlimited (tenant)\n"
    ok(["share", "create", "acme-one", "--size", "20"], tenant)

    # The tenant sees its own quota without naming itself.
    shown = ok(["quota", "show"], tenant).splitlines()
    assert shown[0] == "quota of tenant acme"
    assert table("\n".join(shown[1:])) == [
        {"QUOTA": "shares", "IN USE": "1", "LIMIT": "1", "SET BY": "tenant"},
        {"QUOTA": "gigabytes", "IN USE": "20", "LIMIT": "unlimited", "SET BY": "tenant"},
    ]
    assert json.loads(ok(["quota", "show", "--json"], tenant))["shares"]["in_use"] == 1

    # Over quota: one line naming the limit, exit 1, through the real binary too.
    message = refused(["share", "create", "acme-two", "--size", "1"], tenant)
    assert message == "tenant acme is over its quota: 2 shares, the limit (shares) is 1"
    done = real_vshare(["share", "create", "acme-two", "--size", "1"], {
        "VSHARE_ENDPOINT": api.url, "VSHARE_TOKEN": api.tokens["acme-q"],
        "VSHARE_CONFIG": "/dev/null",
    })  # fmt: skip
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"vshare: {message}\n"

    # A tenant may not set; the admin sets the defaults and lists everyone.
    assert refused(["quota", "set", "acme", "--shares", "9"], tenant) == (
        "only the admin may set quotas"
    )
    line = ok(["quota", "set", "--default", "--gigabytes", "500"], admin)
    assert line == "quota of the defaults: shares 50 (built-in), gigabytes 500 (defaults)\n"
    rows = table(ok(["quota", "list"], admin))
    assert rows == [
        {"TENANT": "(defaults)", "SHARES": "50", "GIGABYTES": "500"},
        {"TENANT": "acme", "SHARES": "1 / 1", "GIGABYTES": "20 / unlimited"},
    ]
    line = ok(["quota", "set", "acme", "--gigabytes", "default"], admin)
    assert line == "quota of tenant acme: shares 1 (tenant), gigabytes 500 (defaults)\n"
    line = ok(["quota", "reset", "acme"], admin)
    assert line == "quota of tenant acme: shares 50 (built-in), gigabytes 500 (defaults)\n"
    ok(["share", "create", "acme-two", "--size", "1"], tenant)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["quota", "set", "acme"], "give --shares, --gigabytes or both"),
        (["quota", "set", "--shares", "3"], "give TENANT or --default (one of them)"),
        (["quota", "show"], "the admin names the tenant: vshare quota show TENANT (or --default)"),
    ],
)
def test_usage_mistakes_are_one_line_exit_2(api: ApiServer, args: list[str], message: str) -> None:
    admin = clean_env(VSHARE_ENDPOINT=api.url, VSHARE_TOKEN=api.admin_token)
    assert refused(args, admin, code=2) == message


def test_a_bad_limit_is_clicks_usage_error(api: ApiServer) -> None:
    done = real_vshare(["quota", "set", "acme", "--shares", "-5"], {
        "VSHARE_ENDPOINT": api.url, "VSHARE_TOKEN": api.admin_token, "VSHARE_CONFIG": "/dev/null",
    })  # fmt: skip
    assert done.returncode == 2 and "give a number (-1: no limit), unlimited or default" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr
