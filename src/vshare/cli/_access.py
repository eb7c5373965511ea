"""``vshare access ...``: a share's access rules, through the REST API."""

from __future__ import annotations

from typing import Any

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
    remote: Remote,
) -> None:
    """Allow VALUE to use SHARE: an instance uuid, an IP address or CIDR, a certificate's
    SHA-256 fingerprint (or CN), or a local uid. Gateways apply the rule within a second."""
    rule = remote.call(
        "POST",
        f"/v1/shares/{segment(share_name)}/access",
        body={"access_type": access_type, "access_to": access_to, "access_level": level},
    )
    remote.echo(
        rule,
        f"rule {rule['id']}: {rule['access_type']} {rule['access_to']}"
        f" {rule['access_level']} on share {share_name} ({rule['state']})",
    )


@access.command("deny")
@click.argument("share_name", metavar="SHARE")
@click.argument("rule_id")
@remote_options
def access_deny(share_name: str, rule_id: str, remote: Remote) -> None:
    """Withdraw rule RULE_ID of SHARE."""
    rule = remote.call("DELETE", f"/v1/shares/{segment(share_name)}/access/{segment(rule_id)}")
    what = "deleted" if rule["state"] == "deleted" else f"{rule['state']}: gateways will drop it"
    remote.echo(rule, f"rule {rule['id']} {what}")


@access.command("update")
@click.argument("share_name", metavar="SHARE")
@click.argument("rule_id")
@click.option(
    "--level", type=click.Choice(("ro", "rw")), required=True, help="The new access level."
)
@remote_options
def access_update(share_name: str, rule_id: str, level: str, remote: Remote) -> None:
    """Change the access level of rule RULE_ID of SHARE (live sessions follow at once)."""
    rule = remote.call(
        "PUT",
        f"/v1/shares/{segment(share_name)}/access/{segment(rule_id)}",
        body={"access_level": level},
    )
    remote.echo(rule, f"rule {rule['id']} of share {share_name}: {rule['access_level']}")


def _rules_table(answer: dict[str, Any]) -> None:
    table(
        ("ID", "TYPE", "TO", "LEVEL", "STATE"),
        [
            (r["id"], r["access_type"], r["access_to"], r["access_level"], r["state"])
            for r in answer["access"]
        ],
    )


@access.command("list")
@click.argument("share_name", metavar="SHARE")
@click.option("--all", "include_deleted", is_flag=True, help="Also rules in state deleted.")
@remote_options
def access_list(share_name: str, include_deleted: bool, remote: Remote) -> None:
    """List the access rules of SHARE, oldest first."""
    answer = remote.call(
        "GET",
        f"/v1/shares/{segment(share_name)}/access",
        params={"include_deleted": include_deleted or None},
    )
    remote.render(answer, _rules_table)
