"""Entry point of the ``vshare`` command."""

from __future__ import annotations

import click

from vshare import __version__
from vshare.cli._gateway import gateway
from vshare.cli._up import up


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vshare")
def cli() -> None:
    """vshare: shared file systems for virtual machines, through the hypervisor."""


cli.add_command(gateway)
cli.add_command(up)


def main() -> None:
    cli()
