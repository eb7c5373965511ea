"""``vshare gateway ...``: run a gateway (composed in :mod:`vshare.node.gateway`)."""

from __future__ import annotations

from pathlib import Path

import click

from vshare.cli._fail import EXIT_REFUSED, EXIT_USAGE, fail
from vshare.cli._logging import setup_logging
from vshare.gateway import ConfigError, load_config
from vshare.node.errors import NodeError
from vshare.node.gateway import serve_gateway


@click.group()
def gateway() -> None:
    """Run and inspect gateways."""


@gateway.command("run")
@click.option(
    "--listen",
    "listen",
    multiple=True,
    metavar="URI",
    help="vsock://any:564, unix:///path, tcp://host:port, tls://host:port or "
    "hvsock:///vm.sock (repeatable; default port 564).",
)
@click.option(
    "--backend",
    metavar="URI",
    help="The volume to serve: posix:/path (a local directory, or a kernel mount of"
    " CephFS, NFS, GlusterFS...) or gluster://HOST[:PORT]/VOLUME[/DIR] (a"
    " GlusterFS volume through libgfapi; DIR: a subdirectory of it).",
)
@click.option(
    "--store",
    metavar="URI",
    help="sqlite:///path/state.db or etcd://host:2379[,host:2379...]: serve the "
    "control plane's shares, live.",
)
@click.option("--metrics", metavar="HOST:PORT", help="Serve Prometheus metrics here.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A gateway.toml; flags override it.",
)
@click.option("--msize", type=int, help="Largest msize to agree to (default 1 MiB + 24).")
@click.option("--tls-cert", metavar="PEM", help="Certificate (chain) of tls:// listeners.")
@click.option("--tls-key", metavar="PEM", help="Private key of --tls-cert.")
@click.option(
    "--tls-client-ca", metavar="PEM", help="Require client certificates this CA signed (tls://)."
)
@click.option("-v", "--verbose", count=True, help="Debug logs (every request's errors).")
def gateway_run(
    listen: tuple[str, ...],
    backend: str | None,
    store: str | None,
    metrics: str | None,
    config_path: Path | None,
    msize: int | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_client_ca: str | None,
    verbose: int,
) -> None:
    """Serve shares over 9P2000.L until SIGTERM.

    Shares, access rules and instances come from the control-plane store (--store), and
    follow its changes within a second; without a store, from the [[share]] and
    [[instance]] tables of --config. Instances may also come from libvirt (libvirt = URI).
    """
    try:
        config = load_config(
            config_path,
            listen=listen or None,
            backend=backend,
            metrics=metrics,
            msize=msize,
            store=store,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_client_ca=tls_client_ca,
        )
        tls = config.tls_settings()
        if tls is not None:
            tls.server_context()  # unreadable or mismatched files: say so before starting
    except (ConfigError, ValueError) as exc:
        fail(str(exc), EXIT_USAGE)
    if not config.backend:
        fail("no backend: give --backend posix:/path (or backend = ... in --config)", EXIT_USAGE)
    if not config.listen:
        fail("nothing to listen on: give --listen URI (or listen = [...] in --config)", EXIT_USAGE)
    setup_logging(verbose)
    try:
        serve_gateway(config)
    except NodeError as exc:
        fail(str(exc), EXIT_REFUSED)
