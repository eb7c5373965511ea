"""``python -m vshare.fuse URI SHARE MOUNTPOINT ...``: see :func:`vshare.fuse.mount_main`."""

from __future__ import annotations

import argparse
import sys

from vshare.client._session import DEFAULT_MSIZE
from vshare.fuse._mount import mount_main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vshare.fuse")
    p.add_argument("uri")
    p.add_argument("share")
    p.add_argument("mountpoint")
    p.add_argument("--gateway", action="append", default=[], help="another gateway URI")
    p.add_argument("--cache", default="auto", choices=["none", "auto", "always", "coherent"])
    p.add_argument("--readonly", action="store_true")
    p.add_argument("--reconnect-timeout", type=float, default=30.0)
    p.add_argument("--msize", type=int, default=DEFAULT_MSIZE)
    p.add_argument("--foreground", action="store_true")
    a = p.parse_args(argv)
    return mount_main(
        [a.uri, *a.gateway],
        a.share,
        a.mountpoint,
        cache=a.cache,
        readonly=a.readonly,
        reconnect_timeout=a.reconnect_timeout,
        foreground=a.foreground,
        msize=a.msize,
    )


if __name__ == "__main__":
    sys.exit(main())
