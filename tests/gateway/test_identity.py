"""Identity → instance → tenant, through a real gateway on every transport.

Two "VMs" of two tenants, each with an ``instance`` rule on its own share, must reach
their own share and get EACCES on the other's, whether they come over vsock (the AF_VSOCK
stand-in of ``tests/transport/fakevsock.py``, with injected CIDs), hybrid vsock (real Unix
sockets at ``<uds_path>_564``) or TLS (trustme certificates). Nothing a guest sends in 9P
(uname, n_uname, attach options) changes who it is.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from tests.transport.certs import Certs, Leaf
from tests.transport.fakevsock import FakeVsockNet
from vshare import protocol as p
from vshare.backend import DEFAULT_CACHE_BYTES
from vshare.client import Client, open_client
from vshare.gateway.config import ConfigError, Share, load_config
from vshare.gateway.context import requester_of
from vshare.gateway.instances import Change, InstanceTable
from vshare.policy import AccessRule, Instance, Level, Requester, decide
from vshare.transport import PeerIdentity, TlsSettings, connect

from .conftest import GatewayFactory, Running
from .helpers import create, read_all, read_file, walk

pytestmark = pytest.mark.anyio

UUID_A = "8a1f7c2e-5b1d-4c3e-9f00-00000000000a"
UUID_B = "8a1f7c2e-5b1d-4c3e-9f00-00000000000b"
UUID_C = "8a1f7c2e-5b1d-4c3e-9f00-00000000000c"


def own_shares() -> tuple[Share, ...]:
    """alpha is A's, gamma is B's, beta is C's (read-only); nobody else has a rule."""
    return (
        Share("alpha", "shares/alpha", access=(AccessRule("instance", UUID_A),)),
        Share("beta", "shares/beta", access=(AccessRule("instance", UUID_C, Level.RO),)),
        Share("gamma", "shares/gamma", access=(AccessRule("instance", UUID_B),)),
    )


async def refused(c: Client, aname: str, uname: str = "", n_uname: int = 0xFFFFFFFF) -> bool:
    with pytest.raises(OSError) as info:
        await c.attach(aname, uname=uname, n_uname=n_uname)
    assert info.value.errno == errno.EACCES, info.value
    return True


def attaches(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    """The structured fields of every attach audit line."""
    out: list[dict[str, object]] = []
    for record in caplog.records:
        fields = getattr(record, "fields", None)
        if not isinstance(fields, dict) or record.name != "vshare.audit":
            continue
        if fields.get("event") == "attach":
            out.append(fields)
    return out


async def check_own_share_only(a: Client, b: Client, gw: Running, beta: bool = False) -> None:
    """A writes and reads alpha and is refused gamma; B reads gamma and is refused alpha
    (and beta, unless ``beta``)."""
    root, _ = await a.attach("alpha")
    fid = await create(a, root, "from-a.txt", b"written by A\n")
    await a.clunk(fid)
    assert await read_file(a, root, "from-a.txt") == b"written by A\n"
    assert await refused(a, "gamma")
    broot, _ = await b.attach("gamma")
    assert await read_file(b, broot, "theirs.txt") == b"gamma's data\n"
    assert await refused(b, "alpha")
    if not beta:
        assert await refused(b, "beta")
    assert (gw.share_dir("alpha") / "from-a.txt").read_bytes() == b"written by A\n"


@asynccontextmanager
async def as_vm(net: FakeVsockNet, cid: int) -> AsyncIterator[Client]:
    """A guest with ``cid`` dialing the host, as a guest does: ``vsock://2:564``."""
    net.guest_cid = cid
    conn = await connect("vsock://2:564")
    async with open_client(conn) as c:
        yield c


# --- vsock ---------------------------------------------------------------------------------


def vsock_instances() -> tuple[Instance, ...]:
    return (
        Instance(UUID_A, "tenant-a", "vm-a", cids=frozenset({3})),
        Instance(UUID_B, "tenant-b", "vm-b", cids=frozenset({4})),
    )


async def test_vsock_vms_reach_only_their_own_share(
    start_gateway: GatewayFactory, fake_vsock: FakeVsockNet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "vshare.audit")
    async with start_gateway(instances=vsock_instances(), shares=own_shares()) as gw:
        bound = await gw.gateway.add_listener("vsock://any:564")
        assert str(bound) == "vsock://any:564"
        async with as_vm(fake_vsock, 3) as a, as_vm(fake_vsock, 4) as b:
            await check_own_share_only(a, b, gw)
        # A CID nobody registered is nobody: every share is refused.
        async with as_vm(fake_vsock, 9) as stranger:
            for aname in ("alpha", "beta", "gamma"):
                assert await refused(stranger, aname)
        # The host-local Unix socket (this uid) has no rule on these shares either.
        async with gw.client() as local:
            assert await refused(local, "alpha")
    who = {(f["identity"], f["instance"], f["tenant"], f["share"], f["decision"])
           for f in attaches(caplog)}  # fmt: skip
    assert ("vsock cid=3", UUID_A, "tenant-a", "alpha", "allow") in who
    assert ("vsock cid=3", UUID_A, "tenant-a", "gamma", "deny") in who
    assert ("vsock cid=4", UUID_B, "tenant-b", "gamma", "allow") in who
    assert ("vsock cid=9", None, None, "alpha", "deny") in who


@pytest.mark.parametrize(
    ("uname", "n_uname", "aname"),
    [
        (UUID_A, 0xFFFFFFFF, "alpha"),
        ("tenant-a", 0, "alpha"),
        ("root", 0, "alpha"),
        ("", 3, "alpha"),  # A's CID as n_uname
        ("", 0xFFFFFFFF, f"alpha;uuid={UUID_A}"),
        ("", 0xFFFFFFFF, f"alpha;instance={UUID_A};tenant=tenant-a"),
        (UUID_A, 3, f"alpha;uname={UUID_A};cid=3;uid=0"),
    ],
)
async def test_spoofing_grants_nothing(
    start_gateway: GatewayFactory, fake_vsock: FakeVsockNet, uname: str, n_uname: int, aname: str
) -> None:
    """B (CID 4) claims to be A in every field a guest controls: refused alpha; and the
    same claims do not cost B its own share."""
    async with start_gateway(instances=vsock_instances(), shares=own_shares()) as gw:
        await gw.gateway.add_listener("vsock://any:564")
        async with as_vm(fake_vsock, 4) as b:
            assert await refused(b, aname, uname=uname, n_uname=n_uname)
            own = aname.replace("alpha", "gamma", 1)
            root, _ = await b.attach(own, uname=uname, n_uname=n_uname)
            assert await read_file(b, root, "theirs.txt") == b"gamma's data\n"


async def test_removing_an_instance_cuts_its_sessions(
    start_gateway: GatewayFactory, fake_vsock: FakeVsockNet
) -> None:
    async with start_gateway(instances=vsock_instances(), shares=own_shares()) as gw:
        await gw.gateway.add_listener("vsock://any:564")
        async with as_vm(fake_vsock, 3) as a, as_vm(fake_vsock, 4) as b:
            root, _ = await a.attach("alpha")
            broot, _ = await b.attach("gamma")
            gw.gateway.instances.remove(UUID_A)
            with anyio.fail_after(5), pytest.raises(OSError) as info:
                while True:
                    await walk(a, root)
                    await anyio.sleep(0.01)
            assert info.value.errno == errno.ECONNRESET
            await walk(b, broot)  # B is untouched
        async with as_vm(fake_vsock, 3) as again:  # CID 3 is nobody now
            assert await refused(again, "alpha")


# --- hybrid vsock --------------------------------------------------------------------------


async def test_hvsock_vms_get_their_own_identity_and_listeners_follow_instances(
    start_gateway: GatewayFactory, short_dir: Path
) -> None:
    vm_a, vm_b, vm_c = (short_dir / f"vm-{n}.vsock" for n in "abc")
    instances = (
        Instance(UUID_A, "tenant-a", "fc-a", sockets=frozenset({str(vm_a)})),
        Instance(UUID_B, "tenant-b", "fc-b", sockets=frozenset({str(vm_b)})),
    )
    async with start_gateway(instances=instances, shares=own_shares()) as gw:
        # The VMM forwards a guest's connection to host port 564 to <uds_path>_564.
        assert {p.name for p in short_dir.iterdir()} == {"vm-a.vsock_564", "vm-b.vsock_564"}
        async with (
            open_client(f"unix://{vm_a}_564") as a,
            open_client(f"unix://{vm_b}_564") as b,
        ):
            await check_own_share_only(a, b, gw)

        # A third VM registered while serving gets its listener at once ...
        gw.gateway.instances.add(Instance(UUID_C, "tenant-c", sockets=frozenset({str(vm_c)})))
        assert (short_dir / "vm-c.vsock_564").exists()
        async with open_client(f"unix://{vm_c}_564") as c:
            root, _ = await c.attach("beta")
            assert await read_file(c, root, "readme.txt") == b"read only\n"
            assert await refused(c, "alpha")
            # ... and removing it removes the socket file and cuts its session.
            gw.gateway.instances.remove(UUID_C)
            assert not (short_dir / "vm-c.vsock_564").exists()
            with anyio.fail_after(5), pytest.raises(OSError) as info:
                while True:
                    await walk(c, root)
                    await anyio.sleep(0.01)
            assert info.value.errno == errno.ECONNRESET
        with pytest.raises(OSError):
            await connect(f"unix://{vm_c}_564")
        # The others are untouched.
        async with open_client(f"unix://{vm_a}_564") as a:
            await a.attach("alpha")
    assert not list(short_dir.iterdir())  # shutdown removed every socket file


async def test_hvsock_listener_api(start_gateway: GatewayFactory, short_dir: Path) -> None:
    vm = short_dir / "vm.vsock"
    instance = Instance(UUID_A, "tenant-a", sockets=frozenset({str(vm)}))
    async with start_gateway(instances=(instance,), shares=own_shares(), hvsock_port=1024) as gw:
        assert (short_dir / "vm.vsock_1024").exists()
        async with open_client(f"unix://{vm}_1024") as a:
            await a.attach("alpha")
            await gw.gateway.remove_listener(f"hvsock://{vm}?port=1024")
            assert not gw.gateway.sessions  # remove_listener returned after they ended
        with pytest.raises(KeyError):
            await gw.gateway.remove_listener(f"hvsock://{vm}?port=1024")
        bound = await gw.gateway.add_listener(f"hvsock://{vm}?port=1024")
        assert bound.listen_path == f"{vm}_1024"
        async with open_client(f"unix://{vm}_1024") as a:
            await a.attach("alpha")


# --- TLS -----------------------------------------------------------------------------------


@asynccontextmanager
async def tls_client(port: int, certs: Certs, leaf: Leaf | None) -> AsyncIterator[Client]:
    settings = TlsSettings(
        cert=leaf.cert if leaf else None, key=leaf.key if leaf else None, ca=certs.ca
    )
    conn = await connect(f"tls://127.0.0.1:{port}", tls=settings)
    async with open_client(conn) as c:
        yield c


async def test_tls_certificates_name_instances_and_match_cert_rules(
    start_gateway: GatewayFactory, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    fp_a, fp_b = certs.client_a.fingerprint, certs.client_b.fingerprint
    instances = (
        Instance(UUID_A, "tenant-a", "vm-a", certs=frozenset({fp_a})),
        Instance(UUID_B, "tenant-b", "vm-b", certs=frozenset({fp_b.upper()})),
    )
    colons = ":".join(fp_a[i : i + 2] for i in range(0, 64, 2)).upper()
    shares = (
        Share("alpha", "shares/alpha", access=(AccessRule("instance", UUID_A),)),
        Share("gamma", "shares/gamma", access=(AccessRule("instance", UUID_B),)),
        # cert rules: by fingerprint (any spelling) and, as in Manila, by common name.
        Share("beta", "shares/beta", access=(
            AccessRule("cert", colons, Level.RO), AccessRule("cert", "vm-b", Level.RO),
        )),
    )  # fmt: skip
    caplog.set_level(logging.INFO, "vshare.audit")
    async with start_gateway(
        instances=instances, shares=shares,
        tls_cert=certs.server.cert, tls_key=certs.server.key, tls_client_ca=certs.ca,
    ) as gw:  # fmt: skip
        port = (await gw.gateway.add_listener("tls://127.0.0.1:0")).port
        async with tls_client(port, certs, certs.client_a) as a:
            async with tls_client(port, certs, certs.client_b) as b:
                await check_own_share_only(a, b, gw, beta=True)
                broot, _ = await b.attach("beta")  # CN rule
                assert await read_file(b, broot, "readme.txt") == b"read only\n"
            # Read and write a file bigger than one record over TLS.
            root, _ = await a.attach("alpha")
            blob = os.urandom(300 * 1024)
            fid = await create(a, root, "blob.bin", blob)
            await a.clunk(fid)
            rfid = await walk(a, root, "blob.bin")
            await a.rpc(p.Tlopen(rfid, p.DOTL_RDONLY))
            assert await read_all(a, rfid, chunk=256 * 1024) == blob
            assert (gw.share_dir("alpha") / "blob.bin").read_bytes() == blob
            # beta through the fingerprint rule: read-only.
            beta, _ = await a.attach("beta")
            with pytest.raises(OSError) as info:
                await create(a, beta, "nope.txt", b"x")
            assert info.value.errno == errno.EROFS

        # No certificate, or one from a CA the gateway does not trust: no session at all.
        for leaf in (None, certs.stranger):
            with anyio.fail_after(10), pytest.raises(OSError):
                async with tls_client(port, certs, leaf) as c:
                    await c.attach("alpha")
        assert not gw.gateway.sessions
    audit = attaches(caplog)
    assert {(f["instance"], f["tenant"]) for f in audit} == {
        (UUID_A, "tenant-a"), (UUID_B, "tenant-b"),
    }  # fmt: skip
    assert len(audit) == 7  # A: 2 + 2 later, B: 3; none by the refused clients


async def test_tls_listener_without_certificate_is_a_config_error(
    start_gateway: GatewayFactory,
) -> None:
    with pytest.raises(ConfigError, match="tls_cert"):
        async with start_gateway(listen=("tls://127.0.0.1:0",)):
            pass


# --- resolution rules (units) --------------------------------------------------------------


def test_requester_takes_each_fact_only_from_its_transport() -> None:
    inst = Instance(UUID_A, "tenant-a", cids=frozenset({3}))
    # A vsock or hvsock peer is never an address, a certificate or a uid.
    spoofy = PeerIdentity("vsock", cid=3, address="127.0.0.1", uid=0, cert_fingerprint="ab")
    assert requester_of(spoofy, inst) == Requester(instance_id=UUID_A, tenant="tenant-a")
    hv = PeerIdentity("hvsock", socket_path="/run/vm.vsock", uid=0, address="10.0.0.1")
    assert requester_of(hv) == Requester()
    unix = PeerIdentity("unix", uid=1000, gid=1000, pid=1, address="127.0.0.1")
    assert requester_of(unix) == Requester(uid=1000)
    tcp = PeerIdentity("tcp", address="192.0.2.1", port=1, cert_fingerprint="ab", uid=0)
    assert requester_of(tcp) == Requester(address="192.0.2.1")
    tls = PeerIdentity("tls", address="192.0.2.1", cert_fingerprint="ab" * 32, cert_cn="x")
    assert requester_of(tls) == Requester(address="192.0.2.1", cert_fingerprint="ab" * 32,
                                          cert_cn="x")  # fmt: skip
    # An instance without a tenant (a libvirt domain without Nova metadata).
    assert requester_of(spoofy, Instance(UUID_B, cids=frozenset({4}))).tenant is None


def test_ip_rule_still_matches_the_address_and_instance_rule_only_an_instance() -> None:
    rules = [AccessRule("ip", "192.0.2.0/24", Level.RO), AccessRule("instance", UUID_A)]
    assert decide(Requester(address="192.0.2.9"), rules) is Level.RO
    assert decide(Requester(instance_id=UUID_A), rules) is Level.RW
    assert decide(Requester(instance_id=UUID_B, address="198.51.100.1"), rules) is None
    assert decide(Requester(), [AccessRule("instance", UUID_A)]) is None


def test_table_resolves_each_kind() -> None:
    fp = "0f" * 32
    table = InstanceTable([
        Instance(UUID_A, "t", cids=frozenset({3}), ips=frozenset({"192.0.2.7"})),
        Instance(UUID_B, "t", sockets=frozenset({"/run/vshare//vm-b.vsock"})),
        Instance(UUID_C, "t", certs=frozenset({fp.upper()})),
    ])  # fmt: skip
    r = table.resolve
    assert r(PeerIdentity("vsock", cid=3)).uuid == UUID_A  # type: ignore[union-attr]
    assert r(PeerIdentity("vsock", cid=4)) is None
    assert r(PeerIdentity("hvsock", socket_path="/run/vshare/vm-b.vsock")).uuid == UUID_B  # type: ignore[union-attr]
    assert r(PeerIdentity("tcp", address="192.0.2.7")).uuid == UUID_A  # type: ignore[union-attr]
    assert r(PeerIdentity("tcp", address="::ffff:192.0.2.7")).uuid == UUID_A  # type: ignore[union-attr]
    assert r(PeerIdentity("tls", address="192.0.2.7", cert_fingerprint=fp)).uuid == UUID_C  # type: ignore[union-attr]
    # A fact from the wrong transport names nobody.
    assert r(PeerIdentity("unix", uid=0, address="192.0.2.7")) is None
    assert r(PeerIdentity("tcp", address="192.0.2.8", cert_fingerprint=fp)) is None
    assert r(PeerIdentity("hvsock", socket_path="relative/vm-b.vsock")) is None


def test_table_changes_conflicts_and_sync() -> None:
    seen: list[tuple[str, str]] = []
    table = InstanceTable([Instance(UUID_A, "t", cids=frozenset({3}))])
    unsubscribe = table.subscribe(lambda ch: seen.append((ch.action, ch.instance.uuid)))
    with pytest.raises(ValueError, match="registered already"):
        table.add(Instance(UUID_A, "t", cids=frozenset({5})))
    with pytest.raises(ValueError, match="cid 3 belongs to"):
        table.add(Instance(UUID_B, "t", cids=frozenset({3})))
    assert len(table) == 1 and seen == []
    # A source replaces its own set; another source's instances stay.
    problems = table.sync("libvirt", [
        Instance(UUID_B, "t", cids=frozenset({4})),
        Instance(UUID_C, "t", cids=frozenset({3})),  # conflicts with config's A: left out
    ])  # fmt: skip
    assert len(problems) == 1 and "cid 3" in problems[0]
    assert table.source_of(UUID_B) == "libvirt" and table.get(UUID_C) is None
    table.sync("libvirt", [Instance(UUID_B, "t2", cids=frozenset({4}))])  # changed: replaced
    table.sync("libvirt", [])
    assert [i.uuid for i in table] == [UUID_A]
    assert seen == [("added", UUID_B), ("removed", UUID_B), ("added", UUID_B),
                    ("removed", UUID_B)]  # fmt: skip
    unsubscribe()
    table.remove(UUID_A)
    assert len(seen) == 4
    with pytest.raises(KeyError):
        table.remove(UUID_A)


def test_a_failing_observer_does_not_undo_the_change(caplog: pytest.LogCaptureFixture) -> None:
    table = InstanceTable()

    def boom(change: Change) -> None:
        raise RuntimeError("observer bug")

    table.subscribe(boom)
    table.add(Instance(UUID_A, "t", cids=frozenset({3})))
    assert table.get(UUID_A) is not None
    assert "observer failed" in caplog.text


# --- configuration -------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_instance_tables_load(tmp_path: Path, certs: Certs) -> None:
    fp = certs.client_a.fingerprint
    config = load_config(
        write(
            tmp_path,
            f"""
listen = ["vsock://any:564", "tls://0.0.0.0:5640"]
tls_cert = "{certs.server.cert}"
tls_key = "{certs.server.key}"
tls_client_ca = "{certs.ca}"
hvsock_port = 1024

[[instance]]
uuid = "{UUID_A}"
tenant = "tenant-a"
name = "web-1"
cid = 3

[[instance]]
uuid = "{UUID_B}"
tenant = "tenant-b"
socket = ["/run/vshare/vm-b.vsock"]
ip = "192.0.2.7"
cert = "{fp.upper()}"
""",
        )
    )
    a, b = config.instances
    assert (a.uuid, a.tenant, a.name, a.cids) == (UUID_A, "tenant-a", "web-1", frozenset({3}))
    assert b.sockets == frozenset({"/run/vshare/vm-b.vsock"}) and b.certs == frozenset({fp})
    assert config.hvsock_port == 1024
    tls = config.tls_settings()
    assert tls is not None and tls.ca == certs.ca
    tls.server_context()  # the files are usable


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ('[[instance]]\ntenant = "t"\ncid = 3\n', "needs uuid"),
        ('[[instance]]\nuuid = "u"\ncid = 3\n', "needs tenant"),
        ('[[instance]]\nuuid = "u"\ntenant = "t"\n', "at least one of cid, socket, ip, cert"),
        ('[[instance]]\nuuid = "u"\ntenant = "t"\ncid = "three"\n', "cid must be a number"),
        ('[[instance]]\nuuid = "u"\ntenant = "t"\ncid = true\n', "cid must be a number"),
        ('[[instance]]\nuuid = "u"\ntenant = "t"\ncid = 2\n', "not a guest CID"),
        ('[[instance]]\nuuid = "u"\ntenant = "t"\nsocket = "vm.sock"\n', "absolute path"),
        ('[[instance]]\nuuid = "u"\ntenant = "t"\nip = "10.0.0.0/8"\n', "does not appear"),
        ('[[instance]]\nuuid = "u"\ntenant = "t"\ncert = "abcd"\n', "SHA-256 fingerprint"),
        ('[[instance]]\nuuid = "u"\ntenant = "t"\ncid = 3\nflavor = "m1"\n', "unknown key"),
        (
            '[[instance]]\nuuid = "u"\ntenant = "t"\ncid = 3\n'
            '[[instance]]\nuuid = "u"\ntenant = "t"\ncid = 4\n',
            "two instances have the uuid u",
        ),
        (
            '[[instance]]\nuuid = "u"\ntenant = "t"\ncid = 3\n'
            '[[instance]]\nuuid = "v"\ntenant = "t"\ncid = 3\n',
            "both claim cid 3",
        ),
        ('instance = "x"\n', "list of tables"),
        ('instance = ["x"]\n', "must be a table"),
        ('listen = ["tls://127.0.0.1:5640"]\n', "tls:// listener needs a certificate"),
        ('tls_client_ca = "/ca.pem"\n', "no tls_cert"),
        ("hvsock_port = -1\n", "hvsock_port"),
        ('listen = ["hvsock:///run/vm.sock?cid=3"]\n', "only hvsock option"),
        (
            '[[share]]\nname = "s"\npath = "s"\ncache = "fast"\n',
            "share 's': cache must be one of none, meta, all, not 'fast'",
        ),
        ('[[share]]\nname = "s"\npath = "s"\ncache = 1\n', "cache must be one of"),
        ("cache_memory_mib = 0\n", "cache_memory_mib must be a whole number ≥ 1 (MiB), not 0"),
        ("cache_memory_mib = -5\n", "cache_memory_mib must be a whole number"),
        ("cache_memory_mib = 1.5\n", "cache_memory_mib must be a whole number"),
        ('cache_memory_mib = "64"\n', "cache_memory_mib must be a whole number"),
        ("cache_memory_mib = true\n", "cache_memory_mib must be a whole number"),
    ],
)
def test_config_mistakes_are_one_line(tmp_path: Path, text: str, phrase: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert phrase in str(info.value)
    assert "\n" not in str(info.value)


def test_cache_settings_load(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
cache_memory_mib = 256

[[share]]
name = "strict"
path = "shares/strict"
cache = "none"

[[share]]
name = "plain"
path = "shares/plain"
""",
        )
    )
    assert (config.cache_memory_mib, config.cache_bytes) == (256, 256 * 2**20)
    assert [(s.name, s.cache) for s in config.shares] == [("strict", "none"), ("plain", "meta")]
    default = load_config(None)
    assert (default.cache_memory_mib, default.cache_bytes) == (64, DEFAULT_CACHE_BYTES)
    assert Share(name="x", path="x").cache == "meta"
    with pytest.raises(ConfigError, match="cache must be one of"):
        Share(name="x", path="x", cache="most")  # type: ignore[arg-type]


def test_flags_complete_the_file(tmp_path: Path, certs: Certs) -> None:
    """A tls:// listener in the file and its certificate from flags (or the reverse)."""
    path = write(tmp_path, 'listen = ["tls://127.0.0.1:5640"]\n')
    config = load_config(path, tls_cert=certs.server.cert, tls_key=certs.server.key)
    assert config.tls_cert == certs.server.cert
    config = load_config(None, listen=("tls://127.0.0.1:5640",), tls_cert=certs.server.cert)
    assert config.listen == ("tls://127.0.0.1:5640",)
