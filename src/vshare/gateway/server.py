"""The gateway: listeners, instances, sessions, graceful shutdown.

Task tree (each task has an owner; cancellation flows down):

    Gateway.serve
    ├── one accept loop per listener (each in its own cancel scope: removable while serving)
    ├── the libvirt follower, when configured (refreshes the instance table)
    ├── the change feed's host watchers (feed_watch.py): one task per share with subscribers
    └── one Session.run per connection (each in its own cancel scope: cuttable)
        └── one task per request in flight

Listeners change while serving: :meth:`Gateway.add_listener` / :meth:`remove_listener`, and
through the instance table: registering an instance with a hybrid-vsock ``socket`` opens
``hvsock://<socket>?port=<hvsock_port>`` (the Unix socket ``<socket>_<port>``), removing it
closes that listener and the VM's live sessions. Removing any instance cuts the sessions
whose identity was that instance's: a session never outlives the identity it attached as.
"""

from __future__ import annotations

import functools
import logging
import os
import resource
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
import anyio.abc

from vshare.backend.base import Backend
from vshare.gateway import libvirt
from vshare.gateway.collector import COLLECTOR
from vshare.gateway.config import GatewayConfig
from vshare.gateway.context import GatewayContext
from vshare.gateway.feed_watch import Watchers
from vshare.gateway.instances import Change, InstanceTable
from vshare.gateway.metrics import Metrics
from vshare.gateway.session import Session
from vshare.gateway.share import Share
from vshare.policy import Instance, identity_keys
from vshare.transport import Address, Connection, Listener, listen, parse_uri

log = logging.getLogger("vshare.gateway")


def raise_fd_limit() -> int:
    """Fids and sessions hold file descriptors: lift the soft limit to the hard one.
    Returns the limit now in force (the budgets are derived from it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:  # not on Linux (nr_open bounds it); keep the soft one
        return soft
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):  # e.g. an unlimited hard limit
            return soft
    return hard


#: The largest fd table grown at start (8 bytes a slot: 8 MiB of kernel memory at most).
_FD_TABLE_MAX = 1 << 20


def grow_fd_table(nofile: int) -> None:
    """Make the kernel's fd table as large as the fd limit now, once, rather than while
    serving: a multithreaded process that grows it past a power of two waits for an RCU
    grace period (``expand_fdtable`` → ``synchronize_rcu``), which stalled the event loop
    for 5-15 ms at each of 2,048, 4,096, 8,192 fds while one tenant made fids. The table
    never shrinks, so this is paid once per process."""
    top = min(nofile, _FD_TABLE_MAX) - 1
    if top < 1024:
        return
    fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.dup2(fd, top, inheritable=False)
        os.close(top)
    except OSError as exc:  # not worth failing for
        log.debug("gateway: cannot grow the fd table to %d: %s", top + 1, exc)
    finally:
        os.close(fd)


@dataclass(eq=False)
class _Live:
    """A running session and what it takes to end it."""

    session: Session
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)


@dataclass(eq=False)
class _Served:
    """A listener, the scope of its accept loop, and the sessions it accepted."""

    listener: Listener
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    sessions: set[_Live] = field(default_factory=set)
    started: bool = False
    closed: bool = False


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        backend: Backend,
        metrics: Metrics | None = None,
        instances: InstanceTable | None = None,
    ) -> None:
        """``instances`` defaults to a table of the config's ``[[instance]]`` entries."""
        self.config = config
        self.instances = instances if instances is not None else InstanceTable(config.instances)
        # At start, so that the budgets (context.py) are derived from the limit in force.
        nofile = raise_fd_limit()
        grow_fd_table(nofile)
        self.ctx = GatewayContext(
            config, backend, metrics or Metrics(), instances=self.instances, nofile=nofile
        )
        self.sessions: set[Session] = set()
        self.listeners: list[Listener] = []
        self._served: dict[str, _Served] = {}  # by str(Address)
        self._live: dict[Session, _Live] = {}
        self._serving = False
        self._accept_tg: anyio.abc.TaskGroup | None = None
        self._session_tg: anyio.abc.TaskGroup | None = None
        self._accepting = anyio.CancelScope()
        self._stopped = anyio.Event()
        self.instances.subscribe(self._on_instance_change)
        #: How the libvirt follower is doing (``config.libvirt``): exported as metrics.
        self.libvirt_status = libvirt.FollowStatus()
        if config.libvirt:
            self.ctx.metrics.watch_libvirt(self.libvirt_status)

    @property
    def addresses(self) -> list[Address]:
        return [lst.bound for lst in self.listeners]

    def hvsock_uri(self, socket_path: str) -> str:
        """The listener URI of a hybrid-vsock instance socket (binds ``<path>_<port>``)."""
        return str(Address("hvsock", path=socket_path, port=self.config.hvsock_port))

    async def serve(
        self,
        listen_on: Sequence[str] | None = None,
        *,
        task_status: anyio.abc.TaskStatus[list[Address]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen and serve until :meth:`shutdown` (or cancellation).

        Listens on ``listen_on`` (default: the config's), plus one hybrid-vsock listener
        per registered instance socket. ``task_status.started`` receives the bound
        addresses (tcp port 0 → real port).
        """
        COLLECTOR.start()
        uris = list(listen_on if listen_on is not None else self.config.listen)
        uris += [self.hvsock_uri(s) for inst in self.instances for s in sorted(inst.sockets)]
        if not uris:
            raise ValueError("nothing to listen on: give at least one --listen URI")
        self._serving = True
        try:
            for uri in uris:
                self._open(uri)
        except BaseException:
            self._close_listeners()
            self._serving = False
            raise
        for address in self.addresses:
            log.info("gateway: listening on %s", address)
        self.ctx.workers.warm()
        try:
            async with anyio.create_task_group() as tg:
                self._session_tg = tg
                tg.start_soon(Watchers(self.ctx.feed, self.ctx.backend).run)
                with self._accepting:
                    async with anyio.create_task_group() as accept_tg:
                        self._accept_tg = accept_tg
                        for served in list(self._served.values()):
                            self._start(served)
                        if self.config.libvirt:
                            accept_tg.start_soon(
                                functools.partial(
                                    libvirt.follow,
                                    self.instances,
                                    self.config.libvirt,
                                    self.config.libvirt_poll,
                                    status=self.libvirt_status,
                                )
                            )
                        task_status.started(self.addresses)
                self._accept_tg = None
                self._close_listeners()
                # Accepting has stopped (shutdown): let sessions finish their requests.
                with anyio.move_on_after(self.config.shutdown_grace):
                    while any(s.inflight for s in self.sessions):
                        await anyio.sleep(0.02)
                tg.cancel_scope.cancel()
        finally:
            self._accept_tg = self._session_tg = None
            self._serving = False
            self._close_listeners()
            self.ctx.workers.close()  # idle now: sessions ended, their fids closed
            COLLECTOR.stop()
            self._stopped.set()

    # --- listeners ----------------------------------------------------------------------

    async def add_listener(self, uri: str) -> Address:
        """Listen on one more address while serving (or before :meth:`serve`).

        Returns:
            The bound address. Adding an address already listened on changes nothing.

        Raises:
            ValueError: a malformed URI or unusable TLS settings.
            OSError: the address cannot be bound.
        """
        return self._open(uri).listener.bound

    async def remove_listener(self, uri: str) -> None:
        """Stop listening on an address (its Unix socket file goes), close the sessions it
        accepted, and return once they have ended.

        Raises:
            KeyError: the gateway does not listen there.
        """
        cut = self._close(uri)
        for live in cut:
            await live.done.wait()

    def _open(self, uri: str) -> _Served:
        address = parse_uri(uri)
        key = str(address)
        served = self._served.get(key)
        if served is not None:
            return served
        try:
            served = _Served(listen(address, tls=self.config.tls_settings()))
        except OSError as exc:  # say which address: bind errors do not
            where = f"{address} ({address.listen_path})" if address.scheme == "hvsock" else address
            raise OSError(exc.errno, f"listen on {where}: {exc.strerror or exc}") from None
        self._served[key] = served
        self.listeners.append(served.listener)
        if self._accept_tg is not None:
            self._start(served)
            log.info("gateway: listening on %s", served.listener.bound)
        return served

    def _start(self, served: _Served) -> None:
        if served.started or served.closed or self._accept_tg is None:
            return
        served.started = True
        self._accept_tg.start_soon(self._accept, served)

    async def _accept(self, served: _Served) -> None:
        assert self._session_tg is not None

        async def handle(conn: Connection) -> None:
            await self._connection(conn, served)

        try:
            with served.scope:
                await served.listener.serve(handle, self._session_tg)
        finally:
            served.listener.close()

    def _close(self, uri: str) -> list[_Live]:
        """Close one listener and cut its sessions (synchronously); the sessions cut."""
        key = str(parse_uri(uri))
        served = self._served.pop(key)
        served.closed = True
        served.scope.cancel()
        served.listener.close()
        if served.listener in self.listeners:
            self.listeners.remove(served.listener)
        cut = list(served.sessions)
        for live in cut:
            live.scope.cancel()
        log.info("gateway: stopped listening on %s (%d sessions closed)", key, len(cut))
        return cut

    def _close_listeners(self) -> None:
        for served in self._served.values():
            served.listener.close()

    # --- shares -------------------------------------------------------------------------

    def set_shares(self, shares: Sequence[Share]) -> None:
        """Serve these shares and rules from now on, live: new attaches see them at once;
        sessions keep their attachments at the new level (rw→ro: the next write fails with
        EROFS), and a session that lost access is refused every request from then on."""
        if {s.key: s for s in shares} == self.ctx.shares:
            return  # nothing a session could notice (e.g. only rule states moved)
        self.ctx.set_shares(shares)
        for session in list(self.sessions):
            session.reevaluate()
        log.info("gateway: now serving %d shares", len(shares))

    # --- instances ----------------------------------------------------------------------

    def _on_instance_change(self, change: Change) -> None:
        """Keep hybrid-vsock listeners and live sessions in step with the instance table."""
        instance = change.instance
        for path in sorted(instance.sockets):
            uri = self.hvsock_uri(path)
            if change.action == "added" and self._serving:
                try:
                    self._open(uri)
                except (OSError, ValueError) as exc:
                    log.error(
                        "gateway: instance %s: cannot listen on %s: %s", instance.uuid, uri, exc
                    )
            elif change.action == "removed" and str(parse_uri(uri)) in self._served:
                self._close(uri)
        if change.action == "removed":
            self._cut_sessions_of(instance)
        for session in list(self.sessions):  # an identity may now be someone else
            session.reevaluate()

    def _cut_sessions_of(self, instance: Instance) -> None:
        keys = instance.keys
        cut = [
            live
            for live in self._live.values()
            if keys.intersection(identity_keys(live.session.conn.identity))
        ]
        for live in cut:
            live.scope.cancel()
        if cut:
            log.info("gateway: instance %s removed: %d sessions closed", instance, len(cut))

    # --- sessions -----------------------------------------------------------------------

    async def _connection(self, conn: Connection, served: _Served) -> None:
        if served.closed:  # its listener was removed while the connection was accepted
            await conn.aclose()
            return
        session = Session(self.ctx, conn)
        # A slot: within the identity's share and the total (budget "sessions", context.py);
        # refused, the connection closes at once (its refusal is logged and counted).
        slot = self.ctx.budgets.sessions.account(session.key, session.id, str(conn.identity))
        if not slot.take():
            await conn.aclose()
            return
        live = _Live(session)
        self.sessions.add(session)
        self._live[session] = live
        served.sessions.add(live)
        try:
            with live.scope:
                await session.run()
        finally:
            slot.close()
            self.sessions.discard(session)
            if not self.sessions:
                COLLECTOR.idle()  # nobody to pause
            self._live.pop(session, None)
            served.sessions.discard(live)
            live.done.set()

    def shutdown(self) -> None:
        """Stop accepting; in-flight requests get ``shutdown_grace`` seconds to finish."""
        log.info("gateway: shutting down (%d sessions)", len(self.sessions))
        self._accepting.cancel()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
