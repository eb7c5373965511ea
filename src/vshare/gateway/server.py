"""The gateway: listeners, sessions, graceful shutdown.

Task tree (each task has an owner; cancellation flows down):

    Gateway.serve
    ├── one accept loop per listener
    └── one Session.run per connection
        └── one task per request in flight
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Sequence

import anyio
import anyio.abc

from vshare.backend.base import Backend
from vshare.gateway.config import GatewayConfig
from vshare.gateway.context import GatewayContext
from vshare.gateway.metrics import Metrics
from vshare.gateway.session import Session
from vshare.transport import Address, Listener, SocketConnection, listen

log = logging.getLogger("vshare.gateway")


def raise_fd_limit() -> int:
    """Each fid holds a file descriptor: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Gateway:
    def __init__(self, config: GatewayConfig, backend: Backend, metrics: Metrics | None = None):
        self.config = config
        self.ctx = GatewayContext(config, backend, metrics or Metrics())
        self.sessions: set[Session] = set()
        self.listeners: list[Listener] = []
        self._accepting = anyio.CancelScope()
        self._stopped = anyio.Event()

    @property
    def addresses(self) -> list[Address]:
        return [lst.bound for lst in self.listeners]

    async def serve(
        self,
        listen_on: Sequence[str] | None = None,
        *,
        task_status: anyio.abc.TaskStatus[list[Address]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen and serve until :meth:`shutdown` (or cancellation).

        ``task_status.started`` receives the bound addresses (tcp port 0 → real port).
        """
        raise_fd_limit()
        uris = list(listen_on if listen_on is not None else self.config.listen)
        if not uris:
            raise ValueError("nothing to listen on: give at least one --listen URI")
        try:
            for uri in uris:
                self.listeners.append(listen(uri))
        except BaseException:
            self._close_listeners()
            raise
        for address in self.addresses:
            log.info("gateway: listening on %s", address)
        try:
            async with anyio.create_task_group() as tg:
                with self._accepting:
                    async with anyio.create_task_group() as accept_tg:
                        for lst in self.listeners:
                            accept_tg.start_soon(lst.serve, self._connection, tg)
                        task_status.started(self.addresses)
                self._close_listeners()
                # Accepting has stopped (shutdown): let sessions finish their requests.
                with anyio.move_on_after(self.config.shutdown_grace):
                    while any(s.inflight for s in self.sessions):
                        await anyio.sleep(0.02)
                tg.cancel_scope.cancel()
        finally:
            self._close_listeners()
            self._stopped.set()

    async def _connection(self, conn: SocketConnection) -> None:
        if len(self.sessions) >= self.config.max_sessions:
            log.warning("gateway: refusing %s: %d sessions is the limit", conn.identity,
                        self.config.max_sessions)  # fmt: skip
            await conn.aclose()
            return
        session = Session(self.ctx, conn)
        self.sessions.add(session)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)

    def shutdown(self) -> None:
        """Stop accepting; in-flight requests get ``shutdown_grace`` seconds to finish."""
        log.info("gateway: shutting down (%d sessions)", len(self.sessions))
        self._accepting.cancel()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def _close_listeners(self) -> None:
        for lst in self.listeners:
            lst.close()
