"""``vshare quota ...``: per-tenant quotas (Manila's shares and gigabytes), through the
REST API."""

from __future__ import annotations

from typing import Any

import click

from vshare.cli._fail import EXIT_USAGE, fail
from vshare.cli._remote import Remote, remote_options, segment, table

_RESOURCES = ("shares", "gigabytes")


class Limit(click.ParamType[int | str, Any]):
    """A quota limit: a whole number from -1 up, ``unlimited`` (-1), or ``default`` (kept
    as the word: the API is sent null, and the defaults' limit applies again)."""

    name = "N|unlimited|default"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> int | str:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text == "default":
            return text
        if text == "unlimited":
            return -1
        try:
            number = int(text)
        except ValueError:
            number = -2
        if number < -1:
            self.fail(f"{value!r}: give a number (-1: no limit), unlimited or default", param, ctx)
        return number


def _shown(limit: int) -> str:
    return "unlimited" if limit == -1 else str(limit)


def _summary(quota: dict[str, Any]) -> str:
    return ", ".join(
        f"{name} {_shown(quota[name]['limit'])} ({quota[name]['set_by']})" for name in _RESOURCES
    )


def _who(quota: dict[str, Any]) -> str:
    return f"tenant {quota['tenant']}" if quota["tenant"] else "the defaults"


@click.group()
def quota() -> None:
    """Per-tenant quotas, as Manila has them: how many shares a tenant may hold (shares)
    and how many GiB they may add up to (gigabytes). Tenants without an override of their
    own get the defaults (built in: 50 shares, 1000 GiB). Creates and extends over a quota
    are refused."""


def _quota_table(answer: dict[str, Any]) -> None:
    click.echo(f"quota of {_who(answer)}")
    rows = []
    for name in _RESOURCES:
        item = answer[name]
        in_use = "-" if item["in_use"] is None else item["in_use"]
        rows.append((name, in_use, _shown(item["limit"]), item["set_by"]))
    table(("QUOTA", "IN USE", "LIMIT", "SET BY"), rows)


@quota.command("show")
@click.argument("tenant", required=False)
@click.option("--default", "default", is_flag=True, help="Show the defaults instead.")
@remote_options
def quota_show(tenant: str | None, default: bool, remote: Remote) -> None:
    """Show TENANT's limits and usage (a tenant token: its own, TENANT may be left out)."""
    if default:
        if tenant:
            fail("give TENANT or --default, not both", EXIT_USAGE)
        answer = remote.call("GET", "/v1/quota-defaults")
    else:
        if not tenant:
            me = remote.call("GET", "/v1/whoami")
            if me["admin"]:
                fail(
                    "the admin names the tenant: vshare quota show TENANT (or --default)",
                    EXIT_USAGE,
                )
            tenant = str(me["tenant"])
        answer = remote.call("GET", f"/v1/quotas/{segment(tenant)}")
    remote.render(answer, _quota_table)


@quota.command("set")
@click.argument("tenant", required=False)
@click.option(
    "--default",
    "default",
    is_flag=True,
    help="Set the defaults: every tenant without an override of its own.",
)
@click.option(
    "--shares",
    type=Limit(),
    help="How many shares; -1 or unlimited: no limit; default: the defaults' limit.",
)
@click.option(
    "--gigabytes",
    type=Limit(),
    help="GiB in all the tenant's shares together; same values as --shares.",
)
@remote_options
def quota_set(
    tenant: str | None,
    default: bool,
    shares: int | str | None,
    gigabytes: int | str | None,
    remote: Remote,
) -> None:
    """Set TENANT's quota, or the defaults with --default (admin). Limits not given stay
    as they are; lowering one below usage refuses only what would grow it."""
    if bool(tenant) == default:
        fail("give TENANT or --default (one of them)", EXIT_USAGE)
    given = (("shares", shares), ("gigabytes", gigabytes))
    body = {k: None if v == "default" else v for k, v in given if v is not None}
    if not body:
        fail("give --shares, --gigabytes or both", EXIT_USAGE)
    path = "/v1/quota-defaults" if default else f"/v1/quotas/{segment(tenant or '')}"
    answer = remote.call("PUT", path, body=body)
    remote.echo(answer, f"quota of {_who(answer)}: {_summary(answer)}")


@quota.command("reset")
@click.argument("tenant")
@remote_options
def quota_reset(tenant: str, remote: Remote) -> None:
    """Remove TENANT's override (admin): the defaults apply to it again."""
    answer = remote.call("DELETE", f"/v1/quotas/{segment(tenant)}")
    remote.echo(answer, f"quota of {_who(answer)}: {_summary(answer)}")


def _quotas_table(answer: dict[str, Any]) -> None:
    def cell(item: dict[str, Any]) -> str:
        used = "" if item["in_use"] is None else f"{item['in_use']} / "
        return f"{used}{_shown(item['limit'])}"

    rows = [
        ("(defaults)", cell(answer["defaults"]["shares"]), cell(answer["defaults"]["gigabytes"]))
    ]
    rows += [(q["tenant"], cell(q["shares"]), cell(q["gigabytes"])) for q in answer["quotas"]]
    table(("TENANT", "SHARES", "GIGABYTES"), rows)


@quota.command("list")
@remote_options
def quota_list(remote: Remote) -> None:
    """The defaults and every tenant with an override or a share, as "in use / limit"
    (admin; ``quota show TENANT`` says where each limit comes from)."""
    remote.render(remote.call("GET", "/v1/quotas"), _quotas_table)
