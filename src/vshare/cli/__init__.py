"""The ``vshare`` command (subcommands live in small modules beside this one)."""

from vshare.cli._main import main

__all__ = ["main"]
