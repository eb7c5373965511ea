"""The gateway process, composed: the backend opened, the :class:`~vshare.gateway.Gateway`
built on it, the control-plane store opened and followed, metrics served, and a graceful
shutdown on SIGINT/SIGTERM.

``vshare gateway run`` and the all-in-one node (:mod:`vshare.node.allinone`) both run it
through :func:`serve_gateway`, which turns every way of failing to serve (an unreadable
volume, a store that does not answer, a listener that cannot bind) into one
:class:`NodeError` with a one-line message.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterator

import anyio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from vshare.backend import open_backend
from vshare.gateway import Gateway, GatewayConfig, StoreFollower
from vshare.node.errors import NodeError
from vshare.store import StoreError, open_store
from vshare.transport import run_async

log = logging.getLogger("vshare.gateway")


def serve_gateway(config: GatewayConfig, before_shutdown: Callable[[], None] | None = None) -> None:
    """Run the gateway of ``config`` in this thread until SIGINT/SIGTERM (or Ctrl-C).

    Raises:
        NodeError: the backend, the store or a listener failed (one line).
    """
    try:
        run_async(run_gateway, config, before_shutdown)
    except KeyboardInterrupt:
        pass
    except (OSError, ValueError) as exc:
        raise NodeError(_message(exc)) from exc
    except BaseExceptionGroup as group:  # a listener failed inside the task group
        leaf = _only_leaf(group)
        if isinstance(leaf, (OSError, ValueError)):
            raise NodeError(_message(leaf)) from leaf
        raise


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
        gw.ctx.metrics.registry.register(GlusterCacheCollector())
    store = follower = None
    if config.store:
        try:
            store = open_store(config.store)
        except (StoreError, ValueError) as exc:
            backend.close()
            raise ValueError(f"store {config.store}: {exc}") from None
        follower = StoreFollower(
            store,
            backend=config.backend,
            apply_shares=gw.set_shares,
            instances=gw.instances,
            addresses=config.listen,
            registry=gw.ctx.metrics.registry,
            load=lambda: (len(gw.sessions), sum(s.inflight for s in gw.sessions)),
        )
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
        log.info("gateway: metrics on http://%s/metrics", config.metrics)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(gw.serve)

            async def on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        log.info("gateway: %s received", signal.Signals(signum).name)
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


class GlusterCacheCollector:
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


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def _only_leaf(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member groups (else the group itself)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
