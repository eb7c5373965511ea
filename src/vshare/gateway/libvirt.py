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

No libvirt binding is needed (``libvirt-python`` builds against libvirt's C headers): the
parser reads XML text, and :func:`virsh_domain_xmls` gets that text from ``virsh``.

A caution on auto-assigned CIDs: when a domain stops, libvirt may give its CID to the next
domain that starts. Until the next refresh the new domain would resolve to the old
instance, so refresh often (``libvirt_poll``), or give domains fixed CIDs.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

import anyio
import anyio.to_thread

from vshare.gateway.instances import InstanceTable
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
            done = subprocess.run(
                [exe, "-r", "-c", uri, *args], capture_output=True, text=True,
                timeout=timeout, check=False,
            )  # fmt: skip
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


def refresh(table: InstanceTable, xmls: Iterable[str | bytes]) -> None:
    """Make the table's libvirt instances those of ``xmls``; log what was skipped."""
    instances, problems = instances_from_xml(xmls)
    problems += table.sync(SOURCE, instances)
    for line in problems:
        log.warning("libvirt: %s", line)


async def follow(
    table: InstanceTable,
    uri: str,
    interval: float,
    read: Callable[[str], list[str]] = virsh_domain_xmls,
) -> None:
    """Refresh the table from libvirt every ``interval`` seconds until cancelled. A failed
    read keeps the last known instances and is logged (once per kind of failure)."""
    last_error = ""
    while True:
        try:
            xmls = await anyio.to_thread.run_sync(read, uri, abandon_on_cancel=True)
        except OSError as exc:
            if str(exc) != last_error:
                log.error("%s", exc)
                last_error = str(exc)
        else:
            last_error = ""
            refresh(table, xmls)
        await anyio.sleep(interval)
