"""libvirt-python, when installed: a read-only connection whose domain lifecycle events
reach the async follower (vshare.gateway.libvirt.follow) through an :class:`EventFeed`.

The binding is loaded on demand (:meth:`Binding.load`; None without the ``libvirt``
extra); libvirt's default event loop runs in one daemon thread per process, and every
event it calls back with is queued, in libvirt's order, for the follower to apply.
"""

from __future__ import annotations

import collections
import importlib
import socket
import threading
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Final, Literal

import anyio

#: virDomainEventType (libvirt-domain.h), and the details of VIR_DOMAIN_EVENT_STOPPED.
EVENT_NAMES: Final = (
    "defined", "undefined", "started", "suspended", "resumed", "stopped", "shutdown",
    "pmsuspended", "crashed",
)  # fmt: skip
EVENT_STARTED: Final = 2
EVENT_RESUMED: Final = 4
EVENT_STOPPED: Final = 5
STOPPED_DETAILS: Final = (
    "shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from snapshot",
)  # fmt: skip
#: A dead daemon is noticed within KEEPALIVE_INTERVAL * (KEEPALIVE_COUNT + 1) seconds.
KEEPALIVE_INTERVAL: Final = 2
KEEPALIVE_COUNT: Final = 3


class LibvirtError(OSError):
    """A libvirt call failed (its message, prefixed with what was being done)."""


@dataclass(frozen=True, slots=True)
class Event:
    """What libvirt's event thread hands to the follower."""

    kind: Literal["lifecycle", "closed"]
    uuid: str = ""
    name: str = ""
    event: int = -1  # virDomainEventType
    detail: int = 0  # its detail; for "closed": virConnectCloseReason
    at: float = field(default_factory=time.monotonic)  # when libvirt called us back

    def describe(self) -> str:
        if self.kind == "closed":
            return f"connection closed (reason {self.detail})"
        what = EVENT_NAMES[self.event] if 0 <= self.event < len(EVENT_NAMES) else "?"
        if self.event == EVENT_STOPPED and 0 <= self.detail < len(STOPPED_DETAILS):
            what += f" ({STOPPED_DETAILS[self.detail]})"
        return what


class EventFeed:
    """Events from libvirt's event thread to the async follower, in order: a queue under a
    lock, and a socket pair to wake the follower (no thread waits on the loop)."""

    def __init__(self) -> None:
        self._events: collections.deque[Event] = collections.deque()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._closed = False
        self.generation = 0  # how many events were put (the resync's staleness check)

    def put(self, event: Event) -> None:
        """Queue an event (any thread)."""
        with self._lock:
            if self._closed:
                return
            self._events.append(event)
            self.generation += 1
            try:
                self._wake_w.send(b"\0")
            except OSError:  # full (the follower is behind: it will see the queue) or closed
                pass

    async def get(self) -> list[Event]:
        """The events queued so far, in order; waits for at least one."""
        while True:
            with self._lock:
                if self._events:
                    batch = list(self._events)
                    self._events.clear()
                    return batch
            await anyio.wait_readable(self._wake_r)
            try:
                while self._wake_r.recv(4096):
                    pass
            except BlockingIOError:
                pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake_w.close()
            self._wake_r.close()


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt's error handler: the default prints every error on stderr; ours are raised."""


class Connection:
    """A read-only libvirt connection with lifecycle events registered (see Binding.open)."""

    def __init__(self, lv: ModuleType, conn: Any, callback_id: int) -> None:
        self._lv = lv
        self._conn = conn
        self._callback_id = callback_id

    def _failed(self, what: str, exc: Any) -> LibvirtError:
        return LibvirtError(f"libvirt: {what}: {exc.get_error_message() or exc}")

    def _gone(self, exc: Any) -> bool:
        return bool(exc.get_error_code() == self._lv.VIR_ERR_NO_DOMAIN)

    def running_xmls(self) -> list[str]:
        """The live XML of every running (or paused) domain.

        Raises:
            LibvirtError: the connection failed.
        """
        lv = self._lv
        try:
            domains = self._conn.listAllDomains(lv.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        except lv.libvirtError as exc:
            raise self._failed("list domains", exc) from None
        xmls = []
        for dom in domains:
            try:
                xmls.append(str(dom.XMLDesc(0)))
            except lv.libvirtError as exc:
                if not self._gone(exc):
                    raise self._failed("dumpxml", exc) from None
        return xmls

    def domain_xml(self, uuid: str) -> str | None:
        """A domain's live XML, or None when it is not running (or not there).

        Raises:
            LibvirtError: the connection failed.
        """
        lv = self._lv
        try:
            dom = self._conn.lookupByUUIDString(uuid)
            xml = str(dom.XMLDesc(0))
            active = bool(dom.isActive())  # after the XML: a domain stopping meanwhile is not
        except lv.libvirtError as exc:
            if self._gone(exc):
                return None
            raise self._failed(f"dumpxml {uuid}", exc) from None
        return xml if active else None

    def close(self) -> None:
        """Deregister and close (blocking; errors ignored: the daemon may be gone)."""
        lv = self._lv
        for step in (
            lambda: self._conn.domainEventDeregisterAny(self._callback_id),
            self._conn.unregisterCloseCallback,
            self._conn.close,
        ):
            try:
                step()
            except lv.libvirtError:
                pass


class Binding:
    """The few calls of libvirt-python vshare makes, typed. libvirt's default event loop is
    one per process: it is registered (before any connection is opened) and run in a daemon
    thread by the first :meth:`open`."""

    _loop_lock: Final = threading.Lock()
    _loop_started = False

    def __init__(self, module: ModuleType) -> None:
        self._lv = module

    @classmethod
    def load(cls) -> Binding | None:
        """The binding, or None when libvirt-python is not installed."""
        try:
            return cls(importlib.import_module("libvirt"))
        except ImportError:
            return None

    def _start_event_loop(self) -> None:
        with Binding._loop_lock:
            if Binding._loop_started:
                return
            self._lv.registerErrorHandler(_quiet, None)
            self._lv.virEventRegisterDefaultImpl()
            threading.Thread(target=self._run_events, name="libvirt-events", daemon=True).start()
            Binding._loop_started = True

    def _run_events(self) -> None:
        while True:
            try:
                if self._lv.virEventRunDefaultImpl() < 0:
                    time.sleep(0.1)
            except self._lv.libvirtError:
                time.sleep(0.1)

    def open(self, uri: str, feed: EventFeed) -> Connection:
        """Connect read-only to ``uri`` and send its lifecycle events (and its closing) to
        ``feed``. Blocking: call it from a worker thread.

        Raises:
            LibvirtError: cannot connect, or events cannot be registered.
        """
        self._start_event_loop()
        lv = self._lv

        def lifecycle(_conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
            feed.put(Event("lifecycle", str(dom.UUIDString()), str(dom.name()), event, detail))

        def closed(_conn: Any, reason: int, _opaque: Any) -> None:
            feed.put(Event("closed", detail=reason))

        try:
            conn = lv.openReadOnly(uri)
        except lv.libvirtError as exc:
            raise LibvirtError(f"libvirt: connect to {uri}: {exc.get_error_message()}") from None
        try:
            conn.registerCloseCallback(closed, None)
            callback_id = int(
                conn.domainEventRegisterAny(None, lv.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, None)
            )
        except lv.libvirtError as exc:
            conn.close()
            raise LibvirtError(f"libvirt: events from {uri}: {exc.get_error_message()}") from None
        try:  # remote connections: notice a daemon that hangs, not only one that exits
            conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
        except lv.libvirtError:
            pass  # local drivers (test:///) have none, and need none
        return Connection(lv, conn, callback_id)


# --- following ---------------------------------------------------------------------------
