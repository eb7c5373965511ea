"""``vshare share ...``: shares, through the REST API."""

from __future__ import annotations

from typing import Any

import click

from vshare.cli._remote import Remote, fields, remote_options, segment, table
from vshare.terms import CACHE_MODES, DEFAULT_CACHE_MODE

#: What each cache mode means: the epilog of the commands that set one.
_CACHE_MODES_HELP = """\b
Cache modes (--cache):
  none  every request asks the storage: strict coherence across hosts
  meta  attributes and name lookups are cached; other hosts' changes show within ~1 s
  all   file data is cached too (for data that other hosts rarely change)
A mode applies to new mounts; mounts made before keep the mode they attached with.
meta and all need a GlusterFS volume with features.cache-invalidation on (gluster
volume set VOLUME features.cache-invalidation on): on any other, the gateway serves
the share as none and logs a warning naming the option. See docs/cache.md."""


@click.group()
def share() -> None:
    """Manage shares, through the API."""


def _summary(s: dict[str, Any]) -> str:
    return (
        f"{s['size_gib']} GiB, tenant {s['tenant']}, volume {s['volume'] or '-'},"
        f" cache {s['cache']}, {s['status']}"
    )


@share.command("create", epilog=_CACHE_MODES_HELP)
@click.argument("name")
@click.option(
    "--size", "size_gib", type=click.IntRange(min=1), required=True, help="Size (quota) in GiB."
)
@click.option("--tenant", help="Whose share (the admin must say; a tenant gets its own).")
@click.option("--volume", help="Volume name (default: the API's first volume).")
@click.option(
    "--cache",
    type=click.Choice(CACHE_MODES),
    default=DEFAULT_CACHE_MODE,
    show_default=True,
    help="Cache mode (see below).",
)
@remote_options
def share_create(
    name: str,
    size_gib: int,
    tenant: str | None,
    volume: str | None,
    cache: str,
    remote: Remote,
) -> None:
    """Create share NAME and its directory on the volume."""
    body = {"name": name, "size_gib": size_gib, "tenant": tenant, "volume": volume, "cache": cache}
    s = remote.call("POST", "/v1/shares", body={k: v for k, v in body.items() if v is not None})
    remote.echo(s, f"created share {s['name']} ({s['id']}): {_summary(s)}")


def _shares_table(answer: dict[str, Any]) -> None:
    table(
        ("NAME", "ID", "TENANT", "SIZE_GIB", "STATUS", "CACHE", "VOLUME"),
        [
            (
                s["name"],
                s["id"],
                s["tenant"],
                s["size_gib"],
                s["status"],
                s["cache"],
                s["volume"] or "-",
            )
            for s in answer["shares"]
        ],
    )


@share.command("list")
@click.option("--tenant", help="Only this tenant's (admin).")
@remote_options
def share_list(tenant: str | None, remote: Remote) -> None:
    """List the shares this token may see."""
    remote.render(remote.call("GET", "/v1/shares", params={"tenant": tenant}), _shares_table)


def _share_fields(s: dict[str, Any]) -> None:
    fields(
        [
            ("name", s["name"]),
            ("id", s["id"]),
            ("tenant", s["tenant"]),
            ("size_gib", s["size_gib"]),
            ("status", s["status"]),
            ("cache", s["cache"]),
            ("volume", s["volume"] or "-"),
            ("path", s["path"]),
            ("created_at", s["created_at"]),
        ]
        + ([("waiting_for", s["waiting_for"])] if s.get("waiting_for") else [])
    )


@share.command("show")
@click.argument("share_name", metavar="SHARE")
@remote_options
def share_show(share_name: str, remote: Remote) -> None:
    """Show one share (by name or id)."""
    remote.render(remote.call("GET", f"/v1/shares/{segment(share_name)}"), _share_fields)


@share.command("delete")
@click.argument("share_name", metavar="SHARE")
@click.option("--force", is_flag=True, help="Also when not empty: remove all its files.")
@remote_options
def share_delete(share_name: str, force: bool, remote: Remote) -> None:
    """Delete a share, its access rules and its directory (refused if not empty, unless
    --force). With --force a share is deleted from any status, so a share left creating,
    deleting or in error (a crash, an interrupted delete) is driven to its end; a forced
    delete that was interrupted continues where it stopped."""
    remote.call("DELETE", f"/v1/shares/{segment(share_name)}", params={"force": force or None})
    remote.echo({"deleted": share_name}, f"deleted share {share_name}")


def _print_share(s: dict[str, Any], remote: Remote) -> None:
    remote.echo(s, f"share {s['name']}: {_summary(s)}")


@share.command("update", epilog=_CACHE_MODES_HELP)
@click.argument("share_name", metavar="SHARE")
@click.option(
    "--cache", type=click.Choice(CACHE_MODES), required=True, help="The new cache mode (see below)."
)
@remote_options
def share_update(share_name: str, cache: str, remote: Remote) -> None:
    """Change the cache mode of SHARE (by name or id)."""
    s = remote.call("PUT", f"/v1/shares/{segment(share_name)}", body={"cache": cache})
    _print_share(s, remote)


def _resize_command(action: str, doc: str) -> None:
    """``share extend`` and ``share shrink``: the same command, each with its own endpoint."""

    @share.command(action, help=doc)
    @click.argument("share_name", metavar="SHARE")
    @click.argument("size_gib", metavar="NEW_SIZE_GIB", type=click.IntRange(min=1))
    @remote_options
    def resize(share_name: str, size_gib: int, remote: Remote) -> None:
        path = f"/v1/shares/{segment(share_name)}/{action}"
        _print_share(remote.call("POST", path, body={"size_gib": size_gib}), remote)


_resize_command("extend", "Grow a share to NEW_SIZE_GIB.")
_resize_command("shrink", "Shrink a share to NEW_SIZE_GIB (refused if it holds more than that).")
