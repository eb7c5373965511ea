"""``vshare mount [--kernel] URI SHARE MOUNTPOINT``: mount a share inside a guest.

Two clients, one command:

- the **FUSE client** (default): :func:`vshare.fuse.mount_main`, the reconnecting async
  client behind FUSE; it survives a gateway restart and fails over to the next ``--gateway``.
- the **Linux kernel client** (``--kernel``): this command dials the gateway (``vsock://``,
  ``tcp://`` or ``unix://``) and runs ``mount -t 9p -o trans=fd,rfdno=N,wfdno=N,...`` with
  the connected socket inherited as N, the way WSL2 and u-root's cpu hand a connection to
  v9fs. Once mounted, the kernel owns the socket and no vshare process is left: nothing in
  Python on the data path, and no reconnection either (a connection lost is a mount lost).

The command prints the mount line it runs (``--dry-run`` prints it and stops, with ``FD``
for the descriptor it would have). Exit status: 0; 1 the gateway cannot be reached or
``mount`` failed (its message is shown); 2 a usage mistake.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Final

import anyio
import click

from vshare.transport import SocketConnection, connect, parse_uri

#: ``cache=`` of v9fs (Linux 6.1): none (every access asks the gateway), loose (page cache,
#: no coherence with other clients), fscache (loose + a persistent local cache, with
#: cachefilesd), mmap (none, plus shared writable mappings).
KERNEL_CACHE_MODES: Final = ("none", "loose", "fscache", "mmap")
FUSE_CACHE_MODES: Final = ("none", "auto", "always", "coherent")
#: The kernel's fd transport takes at most 1 MiB; the gateway's default is 512 KiB.
KERNEL_MSIZE_MAX: Final = 1024 * 1024
KERNEL_MSIZE_DEFAULT: Final = 512 * 1024
MSIZE_MIN: Final = 4096
#: Schemes the kernel client can use: a plain stream the kernel reads and writes.
KERNEL_SCHEMES: Final = ("vsock", "tcp", "unix")

#: 1 MiB of payload: the FUSE kernel module hands over writes of up to 1 MiB.
FUSE_MSIZE_DEFAULT: Final = 1024 * 1024 + 24

Dial = Callable[[str], socket.socket]
Run = Callable[..., "subprocess.CompletedProcess[bytes]"]


def kernel_options(
    fd: int | str,
    share: str,
    *,
    msize: int = KERNEL_MSIZE_DEFAULT,
    cache: str = "none",
    readonly: bool = False,
) -> str:
    """The ``-o`` string of the kernel mount over descriptor ``fd``.

    Raises:
        ValueError: a share name the option string cannot carry, or a bad msize or cache.
    """
    if not share or any(c in share for c in ", \t\n\0"):
        raise ValueError(f"share {share!r}: a share name has no commas, blanks or NULs")
    if not MSIZE_MIN <= msize <= KERNEL_MSIZE_MAX:
        raise ValueError(f"--msize must be between {MSIZE_MIN} and {KERNEL_MSIZE_MAX}")
    if cache not in KERNEL_CACHE_MODES:
        raise ValueError(f"--cache must be one of {', '.join(KERNEL_CACHE_MODES)} with --kernel")
    options = [
        "trans=fd",
        f"rfdno={fd}",
        f"wfdno={fd}",
        "version=9p2000.L",
        f"msize={msize}",
        f"aname={share}",
        f"cache={cache}",
    ]
    if readonly:
        options.append("ro")
    return ",".join(options)


def kernel_mount_argv(options: str, mountpoint: str) -> list[str]:
    return ["mount", "-t", "9p", "-o", options, "vshare", mountpoint]


def check_kernel_uri(uri: str) -> None:
    """Raises ValueError unless ``uri`` is an address the kernel client can use."""
    if parse_uri(uri).scheme not in KERNEL_SCHEMES:
        raise ValueError(
            f"{uri}: the kernel client takes {', '.join(s + '://' for s in KERNEL_SCHEMES)}"
            " (it speaks no TLS; use the FUSE client for tls://)"
        )


def dial(uri: str) -> socket.socket:
    """A connected, blocking stream socket to the gateway at ``uri``, dialed the one way
    vshare dials (:func:`vshare.transport.connect`: vsock sockets come from
    ``transport._vsock``, TCP gets TCP_NODELAY).

    Raises:
        ValueError: a malformed URI, or a scheme the kernel cannot use (tls, hvsock).
        OSError: the gateway cannot be reached.
    """
    check_kernel_uri(uri)
    conn = anyio.run(connect, uri)
    assert isinstance(conn, SocketConnection)  # every scheme but tls
    sock = conn.socket
    sock.setblocking(True)
    return sock


def mount_kernel(
    uri: str,
    share: str,
    mountpoint: str,
    *,
    msize: int = KERNEL_MSIZE_DEFAULT,
    cache: str = "none",
    readonly: bool = False,
    dry_run: bool = False,
    dialer: Dial | None = None,
    runner: Run | None = None,
) -> int:
    """Dial (``dialer``, default :func:`dial`), print the mount line, run it (``runner``,
    default ``subprocess.run``) with the socket inherited; the exit status."""
    try:
        check_kernel_uri(uri)
        options = kernel_options("FD", share, msize=msize, cache=cache, readonly=readonly)
    except ValueError as exc:
        click.echo(f"vshare: {exc}", err=True)
        return 2
    if dry_run:
        click.echo(shlex.join(kernel_mount_argv(options, mountpoint)))
        return 0
    try:
        sock = (dialer or dial)(uri)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        click.echo(f"vshare: cannot reach the gateway at {uri}: {reason}", err=True)
        return 1
    with sock:
        fd = sock.fileno()
        options = kernel_options(fd, share, msize=msize, cache=cache, readonly=readonly)
        argv = kernel_mount_argv(options, mountpoint)
        click.echo(shlex.join(argv))
        try:
            done = (runner or subprocess.run)(argv, pass_fds=(fd,), check=False)
        except FileNotFoundError:
            click.echo("vshare: no `mount` command on PATH", err=True)
            return 1
    # The kernel took its own reference to the socket: closing ours changes nothing.
    if done.returncode != 0:
        click.echo(f"vshare: mount failed (exit {done.returncode})", err=True)
        return 1
    return 0


@click.command()
@click.argument("uri")
@click.argument("share")
@click.argument("mountpoint")
@click.option(
    "--kernel", is_flag=True, help="Mount with the Linux 9P client (trans=fd), not the FUSE client."
)
@click.option(
    "--gateway",
    "gateways",
    multiple=True,
    metavar="URI",
    help="FUSE: another gateway to fail over to (repeatable).",
)
@click.option(
    "--cache",
    default=None,
    help="--kernel: none (default), loose, fscache or mmap. FUSE: auto (default), none or always.",
)
@click.option(
    "--msize",
    type=int,
    default=None,
    help=f"Largest 9P message (--kernel: default {KERNEL_MSIZE_DEFAULT}, "
    f"at most {KERNEL_MSIZE_MAX}).",
)
@click.option("--ro", "readonly", is_flag=True, help="Mount read-only.")
@click.option(
    "--reconnect-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="FUSE: how long to keep trying gateways after a disconnection.",
)
@click.option("--foreground", is_flag=True, help="FUSE: serve in this process until unmounted.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="--kernel: print the mount command and stop (nothing is dialed).",
)
def mount(
    uri: str,
    share: str,
    mountpoint: str,
    kernel: bool,
    gateways: Sequence[str],
    cache: str | None,
    msize: int | None,
    readonly: bool,
    reconnect_timeout: float,
    foreground: bool,
    dry_run: bool,
) -> None:
    """Mount SHARE of the gateway at URI on MOUNTPOINT (inside a guest).

    URI: vsock://2:564 (the host, from a guest), tcp://HOST:PORT, unix:///PATH; the FUSE
    client also takes tls://. Choose --kernel for speed and no Python in the data path;
    the FUSE client (default) for reconnection and failover.
    """
    if kernel:
        for flag, given in (("--gateway", bool(gateways)), ("--foreground", foreground)):
            if given:
                raise click.UsageError(f"{flag} is for the FUSE client, not with --kernel")
        sys.exit(
            mount_kernel(
                uri,
                share,
                mountpoint,
                msize=msize or KERNEL_MSIZE_DEFAULT,
                cache=cache or "none",
                readonly=readonly,
                dry_run=dry_run,
            )
        )
    if dry_run:
        raise click.UsageError("--dry-run is for --kernel (the FUSE client runs no mount command)")
    if cache is not None and cache not in FUSE_CACHE_MODES:
        raise click.UsageError(f"--cache must be one of {', '.join(FUSE_CACHE_MODES)} for FUSE")
    from vshare.fuse import mount_main

    sys.exit(
        mount_main(
            [uri, *gateways],
            share,
            mountpoint,
            cache=cache or "auto",
            readonly=readonly,
            reconnect_timeout=reconnect_timeout,
            foreground=foreground,
            msize=msize or FUSE_MSIZE_DEFAULT,
        )
    )
