"""Instances from libvirt: each domain's vsock CID and Nova metadata.

Where the facts are in a domain's XML (``virsh dumpxml``):

- the instance uuid: ``<domain><uuid>`` (Nova gives the domain its instance's uuid);
- the CID: ``<devices><vsock model='virtio'><cid auto='no' address='3'/></vsock>``, format
  from libvirt's domain XML reference (formatdomain.html, "Vsock"). With ``auto='yes'``
  libvirt picks the CID when the domain starts, and the *live* XML carries it in
  ``address``; an inactive domain's XML has none, and such a domain is nobody;
- the tenant: Nova's metadata element, written by ``nova/virt/libvirt/config.py``
  (``LibvirtConfigGuestMetaNovaInstance`` and ``...NovaOwner``)::

      <metadata>
        <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
          <nova:name>web-1</nova:name>
          <nova:owner>
            <nova:user uuid="...">alice</nova:user>
            <nova:project uuid="PROJECT-UUID">acme</nova:project>
          </nova:owner>
          ...

  Domains created by older Nova releases use the namespace ``.../nova/1.0``; both are
  read. A domain without Nova metadata is an instance with no tenant (its uuid can still
  be named by an ``instance`` access rule).

How the table follows libvirt (:func:`follow`):

- **Lifecycle events**, when libvirt-python is installed (the ``libvirt`` extra; it builds
  against Debian's ``libvirt-dev``): one read-only connection registers for
  ``VIR_DOMAIN_EVENT_ID_LIFECYCLE`` and libvirt's default event loop runs in a thread. A
  domain that stops (shut down, destroyed, crashed, migrated away, saved) loses its CID in
  the table as soon as the event arrives, well before another domain can have booted with
  it: with ``<cid auto='yes'/>`` libvirt may give a stopped domain's CID to the next domain
  that starts, and libvirt sends a connection's events in order, so the old domain's stop
  is applied before the new one's start. A started domain is learned from its live XML.
  The full list is read again on every (re)connection and every ``resync`` seconds (a
  safety net, applied only if no event came meanwhile).
- **Polling** through ``virsh`` every ``libvirt_poll`` seconds, the fallback while the
  binding is missing or the connection is down; the connection is retried with a backoff
  (0.1 s doubling up to ``libvirt_poll``). While libvirt is unreachable the last known
  domains are kept: no domain can be started, and so no CID handed out, without it.

While libvirt is followed it *claims* CIDs in the instance table: a CID that is not in the
last event-updated or polled map resolves to nobody, even one a ``[[instance]]`` table of
the config names (identities of other kinds are untouched). Every CID learned or forgotten
is logged with the domain's uuid and name.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

import anyio
import anyio.to_thread

from vshare.gateway.instances import InstanceTable
from vshare.gateway.libvirt_binding import (
    EVENT_RESUMED,
    EVENT_STARTED,
    EVENT_STOPPED,
    Binding,
    Connection,
    Event,
    EventFeed,
    LibvirtError,
)
from vshare.policy import MAX_GUEST_CID, MIN_GUEST_CID, Instance

log = logging.getLogger("vshare.gateway")

#: Nova's metadata namespaces, newest first.
NOVA_NAMESPACES: Final = (
    "http://openstack.org/xmlns/libvirt/nova/1.1",
    "http://openstack.org/xmlns/libvirt/nova/1.0",
)
SOURCE: Final = "libvirt"


@dataclass(frozen=True, slots=True)
class Domain:
    """What vshare reads from one domain's XML."""

    uuid: str
    name: str  # libvirt's domain name (instance-0000002a)
    cid: int | None  # None: no vsock device, or an auto CID not assigned (inactive domain)
    nova_name: str | None = None  # the instance's display name
    project_id: str | None = None  # the tenant
    project_name: str | None = None


def parse_domain(xml: str | bytes) -> Domain:
    """Read one domain's XML (live XML, so that auto-assigned CIDs are there).

    Raises:
        ValueError: not well-formed XML, not a ``<domain>``, no ``<uuid>``, or a CID that
            is not a number.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ValueError(f"domain XML: {exc}") from None
    if root.tag != "domain":
        raise ValueError(f"domain XML: the root element is <{root.tag}>, not <domain>")
    uuid = (root.findtext("uuid") or "").strip()
    name = (root.findtext("name") or "").strip()
    if not uuid:
        raise ValueError(f"domain {name or '?'}: no <uuid>")
    cid: int | None = None
    for element in root.iterfind("devices/vsock/cid"):
        text = (element.get("address") or "").strip()
        if not text:
            continue  # auto='yes' on an inactive domain: no CID yet
        if not text.isdigit():
            raise ValueError(f"domain {uuid}: vsock cid address {text!r} is not a number")
        cid = int(text)
        break
    nova_name = project_id = project_name = None
    for ns in NOVA_NAMESPACES:
        meta = root.find(f"metadata/{{{ns}}}instance")
        if meta is None:
            continue
        nova_name = _text(meta.findtext(f"{{{ns}}}name"))
        project = meta.find(f"{{{ns}}}owner/{{{ns}}}project")
        if project is not None:
            project_id = _text(project.get("uuid"))
            project_name = _text(project.text)
        break
    return Domain(uuid, name, cid, nova_name, project_id, project_name)


def _text(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def instance_of(domain: Domain) -> Instance | None:
    """The instance a domain is, or None when it has no usable guest CID."""
    if domain.cid is None or not MIN_GUEST_CID <= domain.cid <= MAX_GUEST_CID:
        return None
    return Instance(
        uuid=domain.uuid,
        tenant=domain.project_id or "",
        name=domain.nova_name or domain.name,
        cids=frozenset({domain.cid}),
    )


def instances_from_xml(xmls: Iterable[str | bytes]) -> tuple[list[Instance], list[str]]:
    """Instances from many domains' XML; a domain that cannot be read is skipped.

    Returns:
        The instances, and one line per domain skipped because its XML is unreadable.
    """
    instances: list[Instance] = []
    problems: list[str] = []
    for xml in xmls:
        try:
            inst = instance_of(parse_domain(xml))
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if inst is not None:
            instances.append(inst)
    return instances, problems


def virsh_domain_xmls(uri: str, virsh: str | None = None, timeout: float = 30.0) -> list[str]:
    """The live XML of every running domain, read-only through ``virsh -r -c URI``.

    Raises:
        OSError: no ``virsh`` on PATH, or virsh failed (its message, one line).
    """
    exe = virsh or shutil.which("virsh")
    if exe is None:
        raise FileNotFoundError("libvirt: no virsh on PATH (Debian: libvirt-clients)")

    def run(*args: str) -> str:
        try:
            command = [exe, "-r", "-c", uri, *args]
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"libvirt: virsh {args[0]} took over {timeout:g} s") from None
        if done.returncode != 0:
            message = (done.stderr.strip().splitlines() or ["failed"])[-1]
            raise OSError(f"libvirt: virsh {args[0]}: {message}")
        return done.stdout

    uuids = [line.strip() for line in run("list", "--uuid").splitlines() if line.strip()]
    xmls = []
    for uuid in uuids:
        try:
            xmls.append(run("dumpxml", uuid))
        except OSError as exc:  # the domain went away between list and dumpxml
            log.debug("%s", exc)
    return xmls


# --- applying what libvirt says to the table ---------------------------------------------


def _describe(inst: Instance) -> str:
    cids = ",".join(str(c) for c in sorted(inst.cids))
    return f"CID {cids} of domain {inst.uuid} ({inst.name}, tenant {inst.tenant or '-'})"


def _ours(table: InstanceTable) -> dict[str, Instance]:
    return {inst.uuid: inst for inst in table if table.source_of(inst.uuid) == SOURCE}


def refresh(table: InstanceTable, xmls: Iterable[str | bytes]) -> None:
    """Make the table's libvirt instances those of ``xmls``; log what was skipped, learned
    and forgotten."""
    instances, problems = instances_from_xml(xmls)
    before = _ours(table)
    problems += table.sync(SOURCE, instances)
    after = _ours(table)
    for uuid, inst in before.items():
        if after.get(uuid) != inst:
            log.info("libvirt: forgot %s: not running", _describe(inst))
    for uuid, inst in after.items():
        if before.get(uuid) != inst:
            log.info("libvirt: learned %s", _describe(inst))
    for line in problems:
        log.warning("libvirt: %s", line)


def _forget(table: InstanceTable, uuid: str, why: str) -> Instance | None:
    if table.source_of(uuid) != SOURCE:
        return None
    inst = table.remove(uuid)
    log.info("libvirt: forgot %s: %s", _describe(inst), why)
    return inst


def _learn(table: InstanceTable, inst: Instance, why: str) -> bool:
    """Register a running domain's instance (replacing what the table had for it).
    Another libvirt instance holding one of its CIDs is stale (its stop was missed): the
    newest fact wins."""
    current = table.get(inst.uuid)
    if current == inst and table.source_of(inst.uuid) == SOURCE:
        return False
    if current is not None:
        if table.source_of(inst.uuid) != SOURCE:
            log.warning("libvirt: domain %s is an instance of another source: left out", inst.uuid)
            return False
        table.remove(inst.uuid)
    for other in list(table):
        if other.cids & inst.cids and table.source_of(other.uuid) == SOURCE:
            _forget(table, other.uuid, f"its CID went to domain {inst.uuid}")
    try:
        table.add(inst, SOURCE)
    except ValueError as exc:  # another source's instance has that CID: nobody has it
        log.warning("libvirt: %s", exc)
        return False
    log.info("libvirt: learned %s: %s", _describe(inst), why)
    return True


# --- following (the binding itself is in libvirt_binding.py) ------------------------------

RECONNECT_FIRST: Final = 0.1  # seconds; doubled after each failure, up to the poll interval
RESYNC: Final = 60.0  # seconds between full reads while events flow


@dataclass(slots=True)
class FollowStatus:
    """How the follower is doing (for metrics and tests)."""

    mode: Literal["starting", "events", "polling"] = "starting"
    connects: int = 0  # event connections made
    learned: int = 0  # CIDs learned from events
    forgotten: int = 0  # CIDs forgotten on events
    resyncs: int = 0  # full reads applied while connected
    last_forget_lag: float | None = None  # seconds from libvirt's callback to the table


async def follow(
    table: InstanceTable,
    uri: str,
    interval: float,
    read: Callable[[str], list[str]] = virsh_domain_xmls,
    *,
    binding: Binding | Literal["auto"] | None = "auto",
    resync: float = RESYNC,
    status: FollowStatus | None = None,
) -> None:
    """Keep the table's libvirt instances those of the domains running under ``uri`` until
    cancelled: lifecycle events when the binding is there (``binding="auto"``: if
    libvirt-python is installed), else, and while the connection is down, ``read`` every
    ``interval`` seconds. A failed read keeps the last known instances and is logged (once
    per kind of failure). CIDs are claimed for libvirt meanwhile (see the module note)."""
    status = status if status is not None else FollowStatus()
    if binding == "auto":
        binding = Binding.load()
        if binding is None:
            log.info(
                "libvirt: libvirt-python is not installed: polling %s every %g s", uri, interval
            )
    release = table.claim("cid", SOURCE)
    try:
        backoff = min(RECONNECT_FIRST, interval)
        connect_error = read_error = ""  # logged once each, until things work again
        while True:
            if binding is not None:
                try:
                    await _follow_events(table, binding, uri, resync, status)
                except LibvirtError as exc:
                    if str(exc) != connect_error:
                        log.error("%s (polling every %g s, reconnecting)", exc, interval)
                        connect_error = str(exc)
                else:  # the connection closed after working: start the backoff again
                    backoff = min(RECONNECT_FIRST, interval)
                    connect_error = read_error = ""
            status.mode = "polling"
            try:
                xmls = await anyio.to_thread.run_sync(read, uri, abandon_on_cancel=True)
            except OSError as exc:
                if str(exc) != read_error:
                    log.error("%s", exc)
                    read_error = str(exc)
            else:
                read_error = ""
                refresh(table, xmls)
            if binding is None:
                await anyio.sleep(interval)
            else:
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, interval)
    finally:
        release()


async def _follow_events(
    table: InstanceTable, binding: Binding, uri: str, resync: float, status: FollowStatus
) -> None:
    """Follow one connection's events until it closes (return) or fails (LibvirtError)."""
    feed = EventFeed()
    conn: Connection | None = None
    try:
        conn = await anyio.to_thread.run_sync(binding.open, uri, feed, abandon_on_cancel=True)
        status.connects += 1
        log.info("libvirt: following %s through lifecycle events", uri)
        # Registered first, listed second: what changes while listing is in the feed.
        refresh(table, await anyio.to_thread.run_sync(conn.running_xmls))
        status.mode = "events"
        failure: LibvirtError | None = None
        async with anyio.create_task_group() as tg:  # (errors raised here would be grouped)
            tg.start_soon(_resync_every, table, conn, feed, resync, status)
            try:
                while True:
                    for event in await feed.get():
                        if event.kind == "closed":
                            what = event.describe()
                            log.warning("libvirt: %s: %s; polling until it is back", uri, what)
                            tg.cancel_scope.cancel()
                            return
                        await _apply(table, conn, event, status)
            except LibvirtError as exc:
                failure = exc
                tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
    finally:
        feed.close()
        if conn is not None:  # closing may wait on a hung daemon: not on the loop
            threading.Thread(target=conn.close, name="libvirt-close", daemon=True).start()


async def _apply(
    table: InstanceTable, conn: Connection, event: Event, status: FollowStatus
) -> None:
    """One lifecycle event. Events are applied one after the other, in libvirt's order."""
    why = f"{event.describe()} (domain {event.name})"
    if event.event == EVENT_STOPPED:
        if _forget(table, event.uuid, why) is not None:
            status.forgotten += 1
            status.last_forget_lag = time.monotonic() - event.at
        return
    if event.event not in (EVENT_STARTED, EVENT_RESUMED):
        return  # defined, suspended, shutdown (the guest began it; stopped follows), ...
    xml = await anyio.to_thread.run_sync(conn.domain_xml, event.uuid)
    # An old event (queued before the resync) for a domain that has stopped since: forget.
    inst = None if xml is None else _instance_or_log(xml)
    if inst is None:
        if _forget(table, event.uuid, f"{why}, but has no CID now") is not None:
            status.forgotten += 1
        return
    if _learn(table, inst, why):
        status.learned += 1


def _instance_or_log(xml: str) -> Instance | None:
    try:
        return instance_of(parse_domain(xml))
    except ValueError as exc:
        log.warning("libvirt: %s", exc)
        return None


async def _resync_every(
    table: InstanceTable, conn: Connection, feed: EventFeed, period: float, status: FollowStatus
) -> None:
    """Read the whole list again now and then; a list during which an event came may be
    older than that event, and is dropped (the events are applied instead)."""
    while True:
        await anyio.sleep(period)
        generation = feed.generation
        try:
            xmls = await anyio.to_thread.run_sync(conn.running_xmls)
        except LibvirtError as exc:  # a broken connection also closes: the events say so
            log.warning("%s", exc)
            continue
        if feed.generation == generation:
            refresh(table, xmls)
            status.resyncs += 1
