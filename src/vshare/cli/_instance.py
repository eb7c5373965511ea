"""``vshare instance ...``: instances (VMs) and their identities, through the REST API."""

from __future__ import annotations

from typing import Any

import click

from vshare.cli._fail import EXIT_USAGE, fail
from vshare.cli._remote import Remote, fields, remote_options, segment, table


@click.group()
def instance() -> None:
    """Manage instances (VMs) and their identities, through the API."""


def _identities(i: dict[str, Any]) -> str:
    parts = [f"cid={c}" for c in i["cids"]] + [f"socket={s}" for s in i["sockets"]]
    parts += [f"ip={a}" for a in i["ips"]] + [f"cert={c[:16]}…" for c in i["certs"]]
    return " ".join(parts)


@instance.command("register")
@click.argument("uuid")
@click.option("--tenant", required=True, help="The project the instance belongs to.")
@click.option("--name", default="", help="A display name.")
@click.option("--cid", "cids", type=int, multiple=True, help="Its vsock CID (repeatable).")
@click.option(
    "--socket",
    "sockets",
    multiple=True,
    metavar="PATH",
    help="Its hybrid-vsock socket, the VMM's uds_path (repeatable).",
)
@click.option("--ip", "ips", multiple=True, metavar="ADDR", help="Its IP address (repeatable).")
@click.option(
    "--cert",
    "certs",
    multiple=True,
    metavar="FINGERPRINT",
    help="Its TLS client certificate's SHA-256 (repeatable).",
)
@click.option("--replace", is_flag=True, help="Replace the instance if it is registered.")
@remote_options
def instance_register(
    uuid: str,
    tenant: str,
    name: str,
    cids: tuple[int, ...],
    sockets: tuple[str, ...],
    ips: tuple[str, ...],
    certs: tuple[str, ...],
    replace: bool,
    remote: Remote,
) -> None:
    """Register instance UUID and the identities it connects with (admin)."""
    if not (cids or sockets or ips or certs):
        fail("give at least one identity: --cid, --socket, --ip or --cert", EXIT_USAGE)
    body: dict[str, Any] = {
        "tenant": tenant,
        "name": name,
        "cids": list(cids),
        "sockets": list(sockets),
        "ips": list(ips),
        "certs": list(certs),
    }
    if replace:
        i = remote.call("PUT", f"/v1/instances/{segment(uuid)}", body=body)
    else:
        i = remote.call("POST", "/v1/instances", body={"uuid": uuid, **body})
    remote.echo(i, f"registered instance {i['uuid']} (tenant {i['tenant']}): {_identities(i)}")


@instance.command("remove")
@click.argument("uuid")
@remote_options
def instance_remove(uuid: str, remote: Remote) -> None:
    """Forget instance UUID (admin). Access rules naming it stay."""
    remote.call("DELETE", f"/v1/instances/{segment(uuid)}")
    remote.echo({"removed": uuid}, f"removed instance {uuid}")


def _instances_table(answer: dict[str, Any]) -> None:
    table(
        ("UUID", "TENANT", "NAME", "IDENTITIES"),
        [(i["uuid"], i["tenant"], i["name"] or "-", _identities(i)) for i in answer["instances"]],
    )


@instance.command("list")
@click.option("--tenant", help="Only this tenant's (admin).")
@remote_options
def instance_list(tenant: str | None, remote: Remote) -> None:
    """List the instances this token may see."""
    remote.render(remote.call("GET", "/v1/instances", params={"tenant": tenant}), _instances_table)


def _instance_fields(i: dict[str, Any]) -> None:
    fields(
        [
            ("uuid", i["uuid"]),
            ("tenant", i["tenant"]),
            ("name", i["name"] or "-"),
            ("cids", " ".join(map(str, i["cids"])) or "-"),
            ("sockets", " ".join(i["sockets"]) or "-"),
            ("ips", " ".join(i["ips"]) or "-"),
            ("certs", " ".join(i["certs"]) or "-"),
            ("created_at", i["created_at"]),
        ]
    )


@instance.command("show")
@click.argument("uuid")
@remote_options
def instance_show(uuid: str, remote: Remote) -> None:
    """Show one instance."""
    remote.render(remote.call("GET", f"/v1/instances/{segment(uuid)}"), _instance_fields)
