"""``vshare api ...``: run the REST API, and manage its tokens on the store directly (how an
operator bootstraps the first admin token). Also ``vshare gateway list``, a client of the
API, registered on the gateway group by ``_main.py``.

The heavy imports (FastAPI, uvicorn, the store) happen inside the commands, so that the
client commands of the CLI start quickly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

import click

from vshare.cli._fail import EXIT_USAGE, fail
from vshare.cli._logging import setup_logging
from vshare.cli._remote import Remote, remote_options, table

if TYPE_CHECKING:
    from vshare.store import Store

DEFAULT_STORE: Final = "sqlite:///var/lib/vshare/state.db"
#: ``control.DEFAULT_MAX_SHARE_GIB``, repeated so that the client commands need not import
#: the control plane (a test checks that they agree).
DEFAULT_MAX_SHARE_GIB: Final = 100 * 1024

_store_option = click.option(
    "--store",
    default=DEFAULT_STORE,
    envvar="VSHARE_STORE",
    show_default=True,
    metavar="URI",
    help="The control-plane store [env VSHARE_STORE]: sqlite:///path/state.db, or"
    " etcd://host:2379[,host:2379...][/prefix] for a fleet.",
)


@click.group()
def api() -> None:
    """Run the control plane's REST API; manage its tokens."""


@api.command("run")
@click.option(
    "--listen",
    default="127.0.0.1:8564",
    show_default=True,
    metavar="HOST:PORT",
    envvar="VSHARE_API_LISTEN",
    help="Address to serve HTTP on [env VSHARE_API_LISTEN].",
)
@_store_option
@click.option(
    "--volume",
    "volumes",
    multiple=True,
    metavar="NAME=URI",
    help="A volume shares are made in (repeatable; the first is the default) "
    "[default: default=posix:/var/lib/vshare/volume].",
)
@click.option(
    "--max-share-size",
    "max_share_gib",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_SHARE_GIB,
    show_default=True,
    metavar="GIB",
    envvar="VSHARE_MAX_SHARE_SIZE",
    help="The largest size, in GiB, a share may be created with or extended to, by"
    " anyone [env VSHARE_MAX_SHARE_SIZE].",
)
@click.option("-v", "--verbose", count=True, help="Debug logs.")
def api_run(
    listen: str, store: str, volumes: tuple[str, ...], max_share_gib: int, verbose: int
) -> None:
    """Serve the REST API until SIGTERM (OpenAPI document at /openapi.json)."""
    from vshare.api import parse_listen
    from vshare.node.api import run_api, volume_table
    from vshare.node.errors import NodeError

    try:
        host, port = parse_listen(listen)
        vols = volume_table(volumes)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    setup_logging(verbose)
    try:
        run_api(store, vols, host, port, max_share_gib=max_share_gib)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    except NodeError as exc:
        fail(str(exc))


@contextmanager
def _open_store(uri: str) -> Iterator[Store]:
    """The store at ``uri``, for one token command: a malformed URI or token name is a usage
    mistake (exit 2), any other store failure exits 1 with its message."""
    from vshare.store import StoreError, open_store

    try:
        with open_store(uri) as state:
            yield state
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    except StoreError as exc:
        fail(str(exc))


@api.group("token")
def token() -> None:
    """Create, list and revoke API tokens, on the store directly (no API needed)."""


@token.command("create")
@click.argument("name")
@click.option("--tenant", help="A token of this tenant (default: an admin token).")
@_store_option
@click.option("--json", "as_json", is_flag=True, help="Print name, tenant and secret as JSON.")
def token_create(name: str, tenant: str | None, store: str, as_json: bool) -> None:
    """Create token NAME and print its secret, once: only its hash is stored."""
    from vshare.control import issue_token
    from vshare.store import Conflict

    with _open_store(store) as state:
        try:
            record, secret = issue_token(state, name, tenant)
        except Conflict:
            fail(f"token {name!r} exists; revoke it first, or choose another name")
    if as_json:
        out = {
            "name": record.name,
            "tenant": record.tenant,
            "admin": record.is_admin,
            "secret": secret,
        }
        click.echo(json.dumps(out, indent=2))
        return
    who = "an admin token" if record.is_admin else f"a token of tenant {record.tenant}"
    click.echo(f"created {who} {record.name!r}; its secret, shown this once:", err=True)
    click.echo(secret)


@token.command("list")
@_store_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def token_list(store: str, as_json: bool) -> None:
    """List the API tokens (names and tenants; secrets are never stored)."""
    with _open_store(store) as state:
        tokens = state.list_tokens()
    rows = [
        {
            "name": t.name,
            "tenant": t.tenant,
            "admin": t.is_admin,
            "created_at": t.created_at.isoformat(),
        }
        for t in tokens
    ]
    if as_json:
        click.echo(json.dumps({"tokens": rows}, indent=2))
        return
    table(
        ("NAME", "TENANT", "CREATED"),
        [(r["name"], r["tenant"] or "(admin)", r["created_at"]) for r in rows],
    )


@token.command("revoke")
@click.argument("name")
@_store_option
def token_revoke(name: str, store: str) -> None:
    """Revoke token NAME: requests with it are refused from now on."""
    from vshare.store import NotFound

    with _open_store(store) as state:
        try:
            state.remove_token(name)
        except NotFound:
            fail(f"no token {name!r}")
    click.echo(f"revoked token {name}")


@click.command("list")
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Also the gateways whose heartbeat ran out (shown as gone).",
)
@remote_options
def gateway_list(show_all: bool, remote: Remote) -> None:
    """List the live gateways registered with the control plane, with their load at their
    last heartbeat (admin). A gateway whose heartbeat is older than its ttl (stopped,
    killed, cut off) drops out of the list; --all shows it as gone until it is removed."""
    answer = remote.call("GET", "/v1/gateways")
    if not show_all:
        answer["gateways"] = [g for g in answer["gateways"] if g["healthy"]]
    remote.render(answer, _gateways_table)


def _gateways_table(answer: dict[str, Any]) -> None:
    table(
        ("ID", "HEALTHY", "SESSIONS", "IN_FLIGHT", "LAST_SEEN", "HOST", "VERSION", "ADDRESSES"),
        [
            (
                g["id"],
                "yes" if g["healthy"] else "gone",
                str(g.get("sessions", 0)),
                str(g.get("requests_in_flight", 0)),
                g["last_seen"],
                g["host"] or "-",
                g["version"] or "-",
                " ".join(g["addresses"]) or "-",
            )
            for g in answer["gateways"]
        ],
    )
