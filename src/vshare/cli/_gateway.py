"""``vshare gateway ...``: run a gateway."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import click
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from vshare.backend import open_backend
from vshare.cli._logging import setup_logging
from vshare.gateway.config import ConfigError, GatewayConfig, load_config
from vshare.gateway.follow import StoreFollower
from vshare.gateway.server import Gateway
from vshare.store import StoreError, open_store
from vshare.transport import run_async


@click.group()
def gateway() -> None:
    """Run and inspect gateways."""


def fail(message: str, code: int = 2) -> None:
    click.echo(f"vshare: {message}", err=True)
    sys.exit(code)


async def run_gateway(
    config: GatewayConfig, before_shutdown: Callable[[], None] | None = None
) -> None:
    """Serve until SIGINT/SIGTERM, then shut down gracefully. ``before_shutdown`` runs (in
    a worker thread) when a signal arrives, while the gateway still serves: ``vshare up``
    unmounts its FUSE client there, which needs the gateway to answer."""
    try:
        backend = open_backend(config.backend, cache_bytes=config.cache_bytes)
    except OSError as exc:
        raise OSError(exc.errno, f"backend {config.backend}: {exc.strerror}") from None
    gw = Gateway(config, backend)
    if config.backend.startswith("gluster:"):
        gw.ctx.metrics.registry.register(_GlusterCacheCollector())
    store = follower = None
    if config.store:
        try:
            store = open_store(config.store)
        except (StoreError, ValueError) as exc:
            backend.close()
            raise ValueError(f"store {config.store}: {exc}") from None
        follower = StoreFollower(
            store, backend=config.backend, apply_shares=gw.set_shares, instances=gw.instances,
            addresses=config.listen, registry=gw.ctx.metrics.registry,
            load=lambda: (len(gw.sessions), sum(s.inflight for s in gw.sessions)),
        )  # fmt: skip
        try:  # serve nothing before the store's shares and rules are known
            await follower.load()
        except StoreError as exc:
            store.close()
            backend.close()
            raise ValueError(f"store {config.store}: {exc}") from None
    if config.metrics:
        from prometheus_client import start_http_server

        host, _, port = config.metrics.rpartition(":")
        start_http_server(int(port), addr=host or "127.0.0.1", registry=gw.ctx.metrics.registry)
        logging.getLogger("vshare.gateway").info("gateway: metrics on http://%s/metrics",
                                                 config.metrics)  # fmt: skip
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(gw.serve)

            async def on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        logging.getLogger("vshare.gateway").info(
                            "gateway: %s received", signal.Signals(signum).name
                        )
                        if before_shutdown is not None:
                            await anyio.to_thread.run_sync(before_shutdown)
                        gw.shutdown()
                        return

            tg.start_soon(on_signal)
            if follower is not None:
                tg.start_soon(follower.run)
            await gw.wait_stopped()
            tg.cancel_scope.cancel()
    finally:
        if store is not None:
            store.close()
        backend.close()


@gateway.command("run")
@click.option("--listen", "listen", multiple=True, metavar="URI",
              help="vsock://any:564, unix:///path, tcp://host:port, tls://host:port or "
                   "hvsock:///vm.sock (repeatable; default port 564).")  # fmt: skip
@click.option("--backend", metavar="URI",
              help="The volume to serve: posix:/path (a local directory, or a kernel mount of"
                   " CephFS, NFS, GlusterFS...) or gluster://HOST[:PORT]/VOLUME[/DIR] (a"
                   " GlusterFS volume through libgfapi; DIR: a subdirectory of it).")  # fmt: skip
@click.option("--store", metavar="URI",
              help="sqlite:///path/state.db or etcd://host:2379[,host:2379...]: serve the "
                   "control plane's shares, live.")  # fmt: skip
@click.option("--metrics", metavar="HOST:PORT", help="Serve Prometheus metrics here.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="A gateway.toml; flags override it.")  # fmt: skip
@click.option("--msize", type=int, help="Largest msize to agree to (default 512 KiB).")
@click.option("--tls-cert", metavar="PEM", help="Certificate (chain) of tls:// listeners.")
@click.option("--tls-key", metavar="PEM", help="Private key of --tls-cert.")
@click.option("--tls-client-ca", metavar="PEM",
              help="Require client certificates this CA signed (tls://).")  # fmt: skip
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
            config_path, listen=listen or None, backend=backend, metrics=metrics, msize=msize,
            store=store,
            tls_cert=tls_cert, tls_key=tls_key, tls_client_ca=tls_client_ca,
        )  # fmt: skip
        tls = config.tls_settings()
        if tls is not None:
            tls.server_context()  # unreadable or mismatched files: say so before starting
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    if not config.backend:
        fail("no backend: give --backend posix:/path (or backend = ... in --config)")
    if not config.listen:
        fail("nothing to listen on: give --listen URI (or listen = [...] in --config)")
    setup_logging(verbose)
    try:
        run_async(run_gateway, config)
    except OSError as exc:
        fail(exc.strerror or str(exc), 1)
    except ValueError as exc:
        fail(str(exc), 1)
    except KeyboardInterrupt:
        pass
    except BaseExceptionGroup as group:  # a listener failed inside the task group
        leaf = _only_leaf(group)
        if isinstance(leaf, OSError):
            fail(leaf.strerror or str(leaf), 1)
        if isinstance(leaf, ValueError):
            fail(str(leaf), 1)
        raise


class _GlusterCacheCollector:
    """Whether each GlusterFS volume lets shares keep a cache (it announces other clients'
    changes: ``features.cache-invalidation on``), and how many attaches in cache mode
    meta/all were served as ``none`` because it does not: a fallback otherwise shows only
    in the log."""

    def collect(self) -> Iterator[Metric]:
        from vshare.backend import gluster

        usable = GaugeMetricFamily(
            "vshare_gluster_cache_usable",
            "1 if the volume announces other clients' changes, so share cache modes apply",
            labels=["volume"],
        )
        fallbacks = CounterMetricFamily(
            "vshare_cache_mode_fallbacks",
            "Attaches in cache mode meta or all served as none: the volume does not announce"
            " changes (see the gateway's log for why)",
            labels=["volume"],
        )
        for uri, (problem, count) in sorted(gluster.cache_fallbacks().items()):
            usable.add_metric([uri], 1.0 if problem is None else 0.0)
            fallbacks.add_metric([uri], count)
        yield usable
        yield fallbacks


def _only_leaf(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member groups (else the group itself)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
