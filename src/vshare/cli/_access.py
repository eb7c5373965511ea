"""``vshare access ...``: a share's access rules, through the REST API."""

from __future__ import annotations

import click

from vshare.cli._remote import Remote, remote_options, segment, table

ACCESS_TYPES = ("instance", "ip", "cert", "user")


@click.group()
def access() -> None:
    """Manage a share's access rules, through the API."""


@access.command("allow")
@click.argument("share_name", metavar="SHARE")
@click.argument("access_type", metavar="instance|ip|cert|user", type=click.Choice(ACCESS_TYPES))
@click.argument("access_to", metavar="VALUE")
@click.option(
    "--level",
    type=click.Choice(("ro", "rw")),
    default="rw",
    show_default=True,
    help="Read-only or read-write.",
)
@remote_options
def access_allow(
    share_name: str,
    access_type: str,
    access_to: str,
    level: str,
    endpoint: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Allow VALUE to use SHARE: an instance uuid, an IP address or CIDR, a certificate's
    SHA-256 fingerprint (or CN), or a local uid. Gateways apply the rule within a second."""
    remote = Remote.resolve(endpoint, token, as_json)
    rule = remote.call(
        "POST",
        f"/v1/shares/{segment(share_name)}/access",
        body={"access_type": access_type, "access_to": access_to, "access_level": level},
    )
    if as_json:
        remote.print_json(rule)
    else:
        click.echo(
            f"rule {rule['id']}: {rule['access_type']} {rule['access_to']}"
            f" {rule['access_level']} on share {share_name} ({rule['state']})"
        )


@access.command("deny")
@click.argument("share_name", metavar="SHARE")
@click.argument("rule_id")
@remote_options
def access_deny(
    share_name: str, rule_id: str, endpoint: str | None, token: str | None, as_json: bool
) -> None:
    """Withdraw rule RULE_ID of SHARE."""
    remote = Remote.resolve(endpoint, token, as_json)
    rule = remote.call("DELETE", f"/v1/shares/{segment(share_name)}/access/{segment(rule_id)}")
    if as_json:
        remote.print_json(rule)
    elif rule["state"] == "deleted":
        click.echo(f"rule {rule['id']} deleted")
    else:
        click.echo(f"rule {rule['id']} {rule['state']}: gateways will drop it")


@access.command("update")
@click.argument("share_name", metavar="SHARE")
@click.argument("rule_id")
@click.option(
    "--level", type=click.Choice(("ro", "rw")), required=True, help="The new access level."
)
@remote_options
def access_update(
    share_name: str,
    rule_id: str,
    level: str,
    endpoint: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Change the access level of rule RULE_ID of SHARE (live sessions follow at once)."""
    remote = Remote.resolve(endpoint, token, as_json)
    rule = remote.call(
        "PUT",
        f"/v1/shares/{segment(share_name)}/access/{segment(rule_id)}",
        body={"access_level": level},
    )
    if as_json:
        remote.print_json(rule)
    else:
        click.echo(f"rule {rule['id']} of share {share_name}: {rule['access_level']}")


@access.command("list")
@click.argument("share_name", metavar="SHARE")
@click.option("--all", "include_deleted", is_flag=True, help="Also rules in state deleted.")
@remote_options
def access_list(
    share_name: str,
    include_deleted: bool,
    endpoint: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """List the access rules of SHARE, oldest first."""
    remote = Remote.resolve(endpoint, token, as_json)
    answer = remote.call(
        "GET",
        f"/v1/shares/{segment(share_name)}/access",
        params={"include_deleted": include_deleted or None},
    )
    if as_json:
        remote.print_json(answer)
        return
    table(
        ("ID", "TYPE", "TO", "LEVEL", "STATE"),
        [
            (r["id"], r["access_type"], r["access_to"], r["access_level"], r["state"])
            for r in answer["access"]
        ],
    )
