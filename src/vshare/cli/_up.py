"""``vshare up``: the all-in-one node on embedded defaults (composed in
:mod:`vshare.node.allinone`, which says what runs where); this command makes it, prints
where everything is, and serves until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vshare.cli import _logging
from vshare.cli._fail import EXIT_REFUSED, fail
from vshare.node.allinone import DEMO, AllInOne
from vshare.node.errors import NodeError


@click.command()
@click.option(
    "--data",
    default="./var",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Directory for all state; reused on the next run.",
)
@click.option("--port", default=5640, show_default=True, help="Gateway TCP port on 127.0.0.1.")
@click.option("--api-port", default=8564, show_default=True, help="REST API port on 127.0.0.1.")
def up(data: Path, port: int, api_port: int) -> None:
    """Run the all-in-one node: store, gateway, REST API and a demo share under --data.

    Stop it with Ctrl-C.
    """
    node = AllInOne(data.resolve(), port, api_port)
    _logging.setup_logging(0)
    try:
        token, share_id = node.prepare()
    except NodeError as exc:
        fail(str(exc), EXIT_REFUSED)
    api = node.start_api(_logging.default_format)
    _banner(node, token, share_id, api.pid)
    try:
        node.run(api)
    except NodeError as exc:
        fail(str(exc), EXIT_REFUSED)


def _banner(node: AllInOne, token: str, share_id: str, api_pid: int) -> None:
    endpoint = node.endpoint
    share_dir = node.volume / "shares" / share_id
    click.echo(f"vshare node: data in {node.data}")
    click.echo(f"  store     {node.store_uri}")
    click.echo(f"  gateway   unix://{node.socket}  and  tcp://127.0.0.1:{node.port}  (9P2000.L)")
    click.echo(f"  api       {endpoint}  (OpenAPI: {endpoint}/openapi.json), pid {api_pid}")
    click.echo(f"  share     {DEMO!r} (id {share_id}) -> {share_dir}")
    click.echo(f"  admin token (also in {node.token_path}):")
    click.echo(f"    {token}")
    click.echo("Try:")
    click.echo(
        f"  VSHARE_ENDPOINT={endpoint} VSHARE_TOKEN=$(cat {node.token_path}) vshare share list"
    )
    click.echo(f"  diodcat -s 127.0.0.1:{node.port} -a {DEMO} README.txt")
    click.echo(
        f"  mount -t 9p -o trans=tcp,port={node.port},version=9p2000.L,aname={DEMO}"
        " 127.0.0.1 /mnt   # from a guest with the 9P client"
    )
    click.echo(f"  mount     {node.mountpoint}  (the demo share, vshare FUSE client)")
    click.echo("Ctrl-C stops everything.")
    sys.stdout.flush()
