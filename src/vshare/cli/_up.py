"""``vshare up``: the all-in-one node on embedded defaults."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from vshare.cli._gateway import fail, run_gateway
from vshare.cli._logging import setup_logging
from vshare.cli._run import run_async
from vshare.gateway.config import GatewayConfig, Share
from vshare.policy import AccessRule

DEMO = "demo"


@click.command()
@click.option("--data", default="./var", show_default=True, type=click.Path(path_type=Path),
              help="Directory for all state; reused on the next run.")  # fmt: skip
@click.option("--port", default=5640, show_default=True, help="TCP port on 127.0.0.1.")
def up(data: Path, port: int) -> None:
    """Run the all-in-one node: a gateway on a POSIX volume under --data, with a demo share.

    Stop it with Ctrl-C.
    """
    data = data.resolve()
    volume = data / "volume"
    (volume / "shares" / DEMO).mkdir(parents=True, exist_ok=True)
    (data / "run").mkdir(parents=True, exist_ok=True)
    sock = data / "run" / "gateway.sock"
    welcome = volume / "shares" / DEMO / "README.txt"
    if not welcome.exists():
        welcome.write_text("This is the demo share of your vshare node.\n")
    config = GatewayConfig(
        listen=(f"unix://{sock}", f"tcp://127.0.0.1:{port}"),
        backend=f"posix:{volume}",
        shares=(
            Share(DEMO, f"shares/{DEMO}", access=(
                AccessRule("user", str(os.getuid())), AccessRule("ip", "127.0.0.1/32"),
            )),
        ),
    )  # fmt: skip
    click.echo(f"vshare node: data in {data}")
    click.echo(f"  gateway   unix://{sock}  and  tcp://127.0.0.1:{port}  (9P2000.L)")
    click.echo(f"  share     {DEMO!r} -> {volume / 'shares' / DEMO} (rw for uid {os.getuid()}"
               " and 127.0.0.1)")  # fmt: skip
    click.echo("Try:")
    click.echo(f"  diodls -s 127.0.0.1:{port} -a {DEMO} -l /")
    click.echo(f"  diodcat -s 127.0.0.1:{port} -a {DEMO} README.txt")
    click.echo(f"  mount -t 9p -o trans=tcp,port={port},version=9p2000.L,aname={DEMO}"
               " 127.0.0.1 /mnt   # from a guest with the 9P client")  # fmt: skip
    click.echo("Ctrl-C stops everything.")
    sys.stdout.flush()
    setup_logging(0)
    try:
        run_async(run_gateway, config)
    except OSError as exc:
        fail(str(exc), 1)
    except KeyboardInterrupt:
        pass
