"""``python -m vshare``: the same as the ``vshare`` command."""

from vshare.cli._main import main

main()
