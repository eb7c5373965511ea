"""Instances from libvirt domain XML: vsock CID, Nova project (tenant), domain uuid.

The samples are modelled on live ``virsh dumpxml`` output of Nova-managed KVM domains: the
metadata element as ``nova/virt/libvirt/config.py`` writes it
(``LibvirtConfigGuestMetaNova*``: namespace ``http://openstack.org/xmlns/libvirt/nova/1.1``,
``1.0`` on domains created by older releases), and the vsock device in the form of libvirt's
domain XML reference (formatdomain.html, "Vsock"), where a live domain with
``auto='yes'`` shows the CID libvirt picked in ``address``.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

import anyio
import pytest

from tests.transport.fakevsock import FakeVsockNet
from vshare.client import open_client
from vshare.gateway import libvirt
from vshare.gateway.config import Share
from vshare.gateway.instances import InstanceTable
from vshare.policy import AccessRule, Instance
from vshare.transport import PeerIdentity, _vsock, connect

from .conftest import GatewayFactory

NOVA_11_FIXED_CID = """\
<domain type='kvm' id='7'>
  <name>instance-0000002a</name>
  <uuid>1d7e5c0a-9a0f-4a39-8d0e-6b2f3c4d5e6f</uuid>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:package version="27.1.0"/>
      <nova:name>web-1</nova:name>
      <nova:creationTime>2024-03-14 10:09:13</nova:creationTime>
      <nova:flavor name="m1.small">
        <nova:memory>2048</nova:memory>
        <nova:disk>20</nova:disk>
        <nova:swap>0</nova:swap>
        <nova:ephemeral>0</nova:ephemeral>
        <nova:vcpus>1</nova:vcpus>
      </nova:flavor>
      <nova:owner>
        <nova:user uuid="5a1c0f0e2b3d4c5e8f9a0b1c2d3e4f50">alice</nova:user>
        <nova:project uuid="8c3f2a1b0d9e4f7a6b5c4d3e2f1a0b9c">acme</nova:project>
      </nova:owner>
      <nova:root type="image" uuid="0f4f4a5e-2a5b-4c1d-9e8f-7a6b5c4d3e2f"/>
      <nova:ports>
        <nova:port uuid="3b2a1c0d-4e5f-4a6b-8c7d-9e0f1a2b3c4d">
          <nova:ip type="fixed" address="10.0.0.12" ipVersion="4"/>
        </nova:port>
      </nova:ports>
    </nova:instance>
  </metadata>
  <memory unit='KiB'>2097152</memory>
  <currentMemory unit='KiB'>2097152</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <sysinfo type='smbios'>
    <system>
      <entry name='manufacturer'>OpenStack Foundation</entry>
      <entry name='product'>OpenStack Nova</entry>
      <entry name='serial'>1d7e5c0a-9a0f-4a39-8d0e-6b2f3c4d5e6f</entry>
      <entry name='uuid'>1d7e5c0a-9a0f-4a39-8d0e-6b2f3c4d5e6f</entry>
      <entry name='family'>Virtual Machine</entry>
    </system>
  </sysinfo>
  <os>
    <type arch='x86_64' machine='pc-q35-8.2'>hvm</type>
    <boot dev='hd'/>
    <smbios mode='sysinfo'/>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='/var/lib/nova/instances/1d7e5c0a-9a0f-4a39-8d0e-6b2f3c4d5e6f/disk'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <mac address='fa:16:3e:12:34:56'/>
      <source bridge='br-int'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'>
      <log file='/var/lib/nova/instances/1d7e5c0a-9a0f-4a39-8d0e-6b2f3c4d5e6f/console.log'/>
      <target type='isa-serial' port='0'/>
    </serial>
    <vsock model='virtio'>
      <cid auto='no' address='42'/>
      <alias name='vsock0'/>
      <address type='pci' domain='0x0000' bus='0x07' slot='0x00' function='0x0'/>
    </vsock>
  </devices>
</domain>
"""

NOVA_10_AUTO_CID = """\
<domain type='kvm' id='3'>
  <name>instance-00000885</name>
  <uuid>629b29b9-b0fb-4766-b27d-f4a686d5cbda</uuid>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.0">
      <nova:package version="21.2.4"/>
      <nova:name>batch worker 3</nova:name>
      <nova:creationTime>2021-04-29 06:01:09</nova:creationTime>
      <nova:flavor name="t8.16medium">
        <nova:memory>16384</nova:memory>
        <nova:disk>50</nova:disk>
        <nova:swap>0</nova:swap>
        <nova:ephemeral>0</nova:ephemeral>
        <nova:vcpus>8</nova:vcpus>
      </nova:flavor>
      <nova:owner>
        <nova:user uuid="d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6">bob</nova:user>
        <nova:project uuid="f47ac10b58cc4372a5670e02b2c3d479">globex</nova:project>
      </nova:owner>
    </nova:instance>
  </metadata>
  <memory unit='KiB'>16777216</memory>
  <devices>
    <emulator>/usr/libexec/qemu-kvm</emulator>
    <vsock model='virtio'>
      <cid auto='yes' address='3'/>
      <alias name='vsock0'/>
    </vsock>
  </devices>
</domain>
"""

# The same kind of domain, shut off: its persistent XML has no CID yet.
INACTIVE_AUTO_CID = """\
<domain type='kvm'>
  <name>instance-00000886</name>
  <uuid>7b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e</uuid>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:name>stopped</nova:name>
      <nova:owner>
        <nova:project uuid="8c3f2a1b0d9e4f7a6b5c4d3e2f1a0b9c">acme</nova:project>
      </nova:owner>
    </nova:instance>
  </metadata>
  <devices>
    <vsock model='virtio'>
      <cid auto='yes'/>
    </vsock>
  </devices>
</domain>
"""

NO_VSOCK = """\
<domain type='kvm' id='9'>
  <name>instance-00000031</name>
  <uuid>0a9b8c7d-6e5f-4a3b-9c1d-2e3f4a5b6c7d</uuid>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:name>db-1</nova:name>
      <nova:owner>
        <nova:project uuid="8c3f2a1b0d9e4f7a6b5c4d3e2f1a0b9c">acme</nova:project>
      </nova:owner>
    </nova:instance>
  </metadata>
  <devices>
    <disk type='file' device='disk'><target dev='vda' bus='virtio'/></disk>
  </devices>
</domain>
"""

# A domain libvirt runs for someone else than Nova (virt-install, libguestfs): no metadata.
NOT_NOVA = """\
<domain type='kvm' id='12'>
  <name>build-runner</name>
  <uuid>c0ffee00-1234-4abc-8def-000000000001</uuid>
  <metadata>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://debian.org/debian/12"/>
    </libosinfo:libosinfo>
  </metadata>
  <devices>
    <vsock model='virtio'><cid auto='no' address='77'/></vsock>
  </devices>
</domain>
"""


def test_nova_domain_with_fixed_cid() -> None:
    d = libvirt.parse_domain(NOVA_11_FIXED_CID)
    assert d == libvirt.Domain(
        uuid="1d7e5c0a-9a0f-4a39-8d0e-6b2f3c4d5e6f", name="instance-0000002a", cid=42,
        nova_name="web-1", project_id="8c3f2a1b0d9e4f7a6b5c4d3e2f1a0b9c", project_name="acme",
    )  # fmt: skip
    assert libvirt.instance_of(d) == Instance(
        "1d7e5c0a-9a0f-4a39-8d0e-6b2f3c4d5e6f", tenant="8c3f2a1b0d9e4f7a6b5c4d3e2f1a0b9c",
        name="web-1", cids=frozenset({42}),
    )  # fmt: skip


def test_older_nova_namespace_and_auto_assigned_cid() -> None:
    d = libvirt.parse_domain(NOVA_10_AUTO_CID.encode())
    assert (d.cid, d.nova_name, d.project_id, d.project_name) == (
        3, "batch worker 3", "f47ac10b58cc4372a5670e02b2c3d479", "globex",
    )  # fmt: skip


def test_domains_without_a_cid_are_nobody() -> None:
    for xml in (INACTIVE_AUTO_CID, NO_VSOCK):
        d = libvirt.parse_domain(xml)
        assert d.cid is None and d.project_id == "8c3f2a1b0d9e4f7a6b5c4d3e2f1a0b9c"
        assert libvirt.instance_of(d) is None


def test_domain_without_nova_metadata_has_no_tenant() -> None:
    inst = libvirt.instance_of(libvirt.parse_domain(NOT_NOVA))
    assert inst == Instance(
        "c0ffee00-1234-4abc-8def-000000000001", tenant="", name="build-runner",
        cids=frozenset({77}),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("xml", "phrase"),
    [
        ("<domain><name>x", "domain XML"),
        ("<network><uuid>u</uuid></network>", "not <domain>"),
        ("<domain><name>x</name></domain>", "no <uuid>"),
        (
            "<domain><uuid>u</uuid><devices><vsock><cid address='three'/></vsock></devices>"
            "</domain>",
            "not a number",
        ),
    ],
)
def test_unreadable_domains(xml: str, phrase: str) -> None:
    with pytest.raises(ValueError, match=phrase):
        libvirt.parse_domain(xml)


def test_instances_from_many_domains_and_refresh() -> None:
    broken = "<domain><name>broken</name></domain>"
    xmls = [NOVA_11_FIXED_CID, NOVA_10_AUTO_CID, INACTIVE_AUTO_CID, NO_VSOCK, NOT_NOVA, broken]
    instances, problems = libvirt.instances_from_xml(xmls)
    assert sorted(i.name for i in instances) == ["batch worker 3", "build-runner", "web-1"]
    assert problems == ["domain broken: no <uuid>"]

    table = InstanceTable([Instance("from-config", "t", cids=frozenset({5}))])
    libvirt.refresh(table, xmls)
    found = table.resolve(PeerIdentity("vsock", cid=3))
    assert found is not None and found.tenant == "f47ac10b58cc4372a5670e02b2c3d479"
    # The domain stopped: its instance goes; config's instance stays.
    libvirt.refresh(table, [NOVA_11_FIXED_CID])
    assert table.resolve(PeerIdentity("vsock", cid=3)) is None
    assert {i.uuid for i in table} == {"from-config", "1d7e5c0a-9a0f-4a39-8d0e-6b2f3c4d5e6f"}


def test_virsh_reader(tmp_path: Path) -> None:
    """``virsh -r -c URI list --uuid`` then ``dumpxml`` per domain, through a stand-in virsh."""
    (tmp_path / "1d7e5c0a.xml").write_text(NOVA_11_FIXED_CID)
    fake = tmp_path / "virsh"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {tmp_path}/calls\n'
        '[ "$1 $2 $3" = "-r -c qemu:///system" ] || { echo "error: bad uri" >&2; exit 1; }\n'
        'case "$4" in\n'
        "  list) echo 1d7e5c0a; echo gone; echo ;;\n"
        f'  dumpxml) [ "$5" = gone ] && {{ echo "error: no domain" >&2; exit 1; }};'
        f" cat {tmp_path}/$5.xml ;;\n"
        "esac\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    xmls = libvirt.virsh_domain_xmls("qemu:///system", virsh=str(fake))
    assert xmls == [NOVA_11_FIXED_CID]
    with pytest.raises(OSError, match="bad uri"):
        libvirt.virsh_domain_xmls("qemu:///session", virsh=str(fake))
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[:3] == ["-r -c qemu:///system list --uuid",
                         "-r -c qemu:///system dumpxml 1d7e5c0a",
                         "-r -c qemu:///system dumpxml gone"]  # fmt: skip


def test_no_virsh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", os.devnull)
    with pytest.raises(FileNotFoundError, match="virsh"):
        libvirt.virsh_domain_xmls("qemu:///system")


@pytest.mark.anyio
async def test_follow_refreshes_and_keeps_instances_on_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table = InstanceTable()
    answers: list[list[str] | OSError] = [
        [NOVA_10_AUTO_CID], OSError("libvirt: virsh list: failed to connect"), [],
    ]  # fmt: skip
    seen: list[int] = []

    def read(uri: str) -> list[str]:
        assert uri == "qemu:///system"
        answer = answers[min(len(seen), len(answers) - 1)]
        seen.append(len(table))
        if isinstance(answer, OSError):
            raise answer
        return answer

    with anyio.move_on_after(5):
        async with anyio.create_task_group() as tg:
            # binding=None: polling only (libvirt-python would connect to qemu:///system)
            tg.start_soon(lambda: libvirt.follow(table, "qemu:///system", 0.01, read, binding=None))
            while len(seen) < 4:
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    # before the 1st read: empty; after it: one; the failed read kept it; then it went.
    assert seen[:4] == [0, 1, 1, 0]
    assert "failed to connect" in caplog.text


@pytest.mark.anyio
async def test_gateway_follows_libvirt(
    start_gateway: GatewayFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``libvirt = URI``: a running domain's CID reaches its share by the domain's uuid
    (polling through ``virsh``, as without libvirt-python; events: test_libvirt_events.py)."""
    monkeypatch.setattr(libvirt.Binding, "load", classmethod(lambda cls: None))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "domain.xml").write_text(NOVA_10_AUTO_CID)
    virsh = bin_dir / "virsh"
    virsh.write_text(
        "#!/bin/sh\n"
        f'case "$4" in list) echo 629b29b9 ;; dumpxml) cat {tmp_path}/domain.xml ;; esac\n'
    )
    virsh.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    net = FakeVsockNet(Path(tempfile.mkdtemp(prefix="vs-", dir="/tmp")))
    monkeypatch.setattr(_vsock, "_vsock_socket", net.socket)
    shares = (
        Share("alpha", "shares/alpha", access=(
            AccessRule("instance", "629b29b9-b0fb-4766-b27d-f4a686d5cbda"),
        )),
    )  # fmt: skip
    try:
        async with start_gateway(libvirt="qemu:///system", libvirt_poll=0.05, shares=shares) as gw:
            await gw.gateway.add_listener("vsock://any:564")
            with anyio.fail_after(10):
                while len(gw.gateway.instances) == 0:
                    await anyio.sleep(0.02)
            net.guest_cid = 3
            async with open_client(await connect("vsock://2:564")) as c:
                await c.attach("alpha")
            net.guest_cid = 4
            async with open_client(await connect("vsock://2:564")) as c:
                with pytest.raises(OSError) as info:
                    await c.attach("alpha")
                assert info.value.errno == errno.EACCES
    finally:
        shutil.rmtree(net.dir, ignore_errors=True)
