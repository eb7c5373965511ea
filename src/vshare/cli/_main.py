"""Entry point of the ``vshare`` command."""

from __future__ import annotations

import click

from vshare import __version__
from vshare.cli import _logging
from vshare.cli._access import access
from vshare.cli._api import api, gateway_list
from vshare.cli._gateway import gateway
from vshare.cli._instance import instance
from vshare.cli._mount import mount
from vshare.cli._quota import quota
from vshare.cli._share import share
from vshare.cli._umount import umount
from vshare.cli._up import up


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vshare")
@click.option(
    "--log-format",
    type=click.Choice(_logging.FORMATS),
    default="text",
    envvar="VSHARE_LOG_FORMAT",
    show_default=True,
    help="Logs on stderr as text lines or as one JSON object per line.",
)
def cli(log_format: str) -> None:
    """vshare: shared file systems for virtual machines, through the hypervisor."""
    _logging.default_format = log_format


cli.add_command(gateway)
cli.add_command(up)
cli.add_command(share)
cli.add_command(access)
cli.add_command(instance)
cli.add_command(quota)
cli.add_command(api)
cli.add_command(mount)
cli.add_command(umount)
gateway.add_command(gateway_list)


def main() -> None:
    cli()
