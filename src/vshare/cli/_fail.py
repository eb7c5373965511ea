"""How every ``vshare`` command fails: one ``vshare: <message>`` line on stderr (never a
traceback) and one exit status, the same in every command:

- 0: done;
- 1 (:data:`EXIT_REFUSED`): the work was refused or failed: the API said no (its message),
  a gateway or node could not serve (its volume, store or listener), nothing to unmount;
- 2 (:data:`EXIT_USAGE`): a usage mistake: click's own, a bad flag value, a bad config file
  (client.toml, gateway.toml), a missing or malformed token;
- 3 (:data:`EXIT_UNREACHABLE`): the API cannot be reached (the endpoint is named).

``vshare mount`` passes on the FUSE and kernel mounts' own statuses (see its help).
"""

from __future__ import annotations

import re
import sys
from typing import Final, NoReturn

import click

EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
_UNPRINTABLE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    """Print ``vshare: <message>`` (one line) on stderr and exit with ``code``."""
    click.echo(f"vshare: {one_line(message)}", err=True)
    sys.exit(code)


def one_line(text: str) -> str:
    """``text`` on one line with nothing a terminal would interpret (messages from a server
    quote input, which may be anybody's)."""
    return " ".join(_UNPRINTABLE.sub("?", text.replace("\n", " ")).split())
