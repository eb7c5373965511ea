"""Entry point of the ``vshare`` command."""

from __future__ import annotations

import click

from vshare import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vshare")
def cli() -> None:
    """vshare: shared file systems for virtual machines, through the hypervisor."""


def main() -> None:
    cli()


@cli.command()
@click.option("--data", default="./var", show_default=True, help="Directory for all state.")
def up(data: str) -> None:
    """Run the all-in-one node: store, gateway, API and a demo share, on embedded defaults."""
    click.echo(f"vshare up: the all-in-one node is not built yet (data directory: {data}).")
    click.echo("The 9P2000.L codec is ready: see README.md, Usage.")
