"""The FUSE device protocol the client speaks (``vshare.fuse.device``).

Layouts are checked against the kernel's own header: ``linux/fuse.h`` compiled by gcc
prints each struct's size and field offsets, and fills requests with known values, whose
bytes our decoder must read back (the golden bytes come from the header, not from our
encoder). Then what taking the kernel's offer changed, through real mounts: set-id bits
dropped by the client as the kernel would (HANDLE_KILLPRIV_V2), writes of 1 MiB; and the
kernel's interrupts answered.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from vshare.fuse.device import EntryAttributes, StatvfsData, wire

from .conftest import GatewayFactory, GatewayProc, MountFactory
from .test_semantics import NOBODY, delta, run_as_nobody, settled

_PROBE = r"""
#include <linux/fuse.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define S(t) printf("\"%s\": %zu,\n", #t, sizeof(struct t))
#define O(t, f) printf("\"%s.%s\": %zu,\n", #t, #f, offsetof(struct t, f))

static void hex(const char *name, const void *p, size_t n) {
    const unsigned char *b = p;
    printf("\"%s\": \"", name);
    for (size_t i = 0; i < n; i++) printf("%02x", b[i]);
    printf("\",\n");
}

int main(void) {
    printf("{\n");
    S(fuse_in_header); S(fuse_out_header); S(fuse_entry_out); S(fuse_attr_out);
    S(fuse_open_out); S(fuse_init_out); S(fuse_statfs_out); S(fuse_write_out);
    S(fuse_setattr_in); S(fuse_read_in); S(fuse_write_in); S(fuse_release_in);
    S(fuse_create_in); S(fuse_notify_inval_inode_out); S(fuse_notify_inval_entry_out);
    O(fuse_entry_out, attr.ino); O(fuse_entry_out, attr.mode); O(fuse_entry_out, attr.mtimensec);
    O(fuse_entry_out, attr.blksize); O(fuse_entry_out, attr_valid);
    O(fuse_attr_out, attr.size); O(fuse_attr_out, attr.gid);
    O(fuse_init_out, flags); O(fuse_init_out, max_write); O(fuse_init_out, max_pages);
    O(fuse_init_out, time_gran); O(fuse_init_out, flags2);
    O(fuse_statfs_out, st.namelen); O(fuse_statfs_out, st.frsize);
    printf("\"name_offset\": %zu,\n", (size_t)FUSE_NAME_OFFSET);
    printf("\"name_offset_plus\": %zu,\n", (size_t)FUSE_NAME_OFFSET_DIRENTPLUS);

    struct fuse_in_header h; memset(&h, 0, sizeof h);
    h.len = 200; h.opcode = FUSE_SETATTR; h.unique = 77; h.nodeid = 1234;
    h.uid = 1000; h.gid = 1001; h.pid = 4242;
    hex("in_header", &h, sizeof h);
    struct fuse_setattr_in s; memset(&s, 0, sizeof s);
    s.valid = FATTR_MODE | FATTR_SIZE | FATTR_MTIME | FATTR_FH | FATTR_KILL_SUIDGID;
    s.fh = 9; s.size = 1ULL << 33; s.mtime = 1600000000; s.mtimensec = 123;
    s.mode = 0100644; s.uid = 5; s.gid = 6;
    hex("setattr_in", &s, sizeof s);
    struct fuse_write_in w; memset(&w, 0, sizeof w);
    w.fh = 3; w.offset = 1ULL << 40; w.size = 4096; w.write_flags = FUSE_WRITE_KILL_SUIDGID;
    hex("write_in", &w, sizeof w);
    struct fuse_create_in c; memset(&c, 0, sizeof c);
    c.flags = 0101; c.mode = 0100620; c.umask = 022; c.open_flags = 0;
    hex("create_in", &c, sizeof c);
    struct fuse_init_in i; memset(&i, 0, sizeof i);
    i.major = 7; i.minor = 41; i.max_readahead = 131072;
    i.flags = FUSE_HANDLE_KILLPRIV_V2 | FUSE_MAX_PAGES | FUSE_INIT_EXT;
    i.flags2 = 1 << 4;  /* bit 36: DIRECT_IO_ALLOW_MMAP, newer than this header */
    hex("init_in", &i, sizeof i);
    hex("init_in_7_35", &i, 16);  /* what kernels before FUSE_INIT_EXT send */
    struct fuse_notify_inval_entry_out e; memset(&e, 0, sizeof e);
    e.parent = 5; e.namelen = 3; e.flags = FUSE_EXPIRE_ONLY;
    hex("inval_entry_expire_only", &e, sizeof e);
    printf("\"has_expire_only\": %llu,\n", (unsigned long long)FUSE_HAS_EXPIRE_ONLY);
    printf("\"end\": 0\n}\n");
    return 0;
}
"""


@pytest.fixture(scope="module")
def header(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Sizes, offsets and filled structs of the kernel's linux/fuse.h, from gcc."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is missing: `make test` installs it (TEST_DEBS)")
    d = tmp_path_factory.mktemp("fuse_h")
    (d / "probe.c").write_text(_PROBE)
    subprocess.run(["gcc", "-o", str(d / "probe"), str(d / "probe.c")], check=True)
    out = subprocess.run([str(d / "probe")], capture_output=True, text=True, check=True)
    parsed: dict[str, object] = json.loads(out.stdout)
    return parsed


def _int(header: dict[str, object], key: str) -> int:
    value = header[key]
    assert isinstance(value, int)
    return value


def _at(raw: bytes, offset: object, size: int) -> int:
    assert isinstance(offset, int)
    return int.from_bytes(raw[offset : offset + size], "little")


def test_replies_have_the_kernel_layout(header: dict[str, object]) -> None:
    e = EntryAttributes(
        st_ino=0x1122334455,
        entry_timeout=1.5,
        attr_timeout=2.25,
        st_mode=0o100644,
        st_size=1 << 35,
        st_blksize=65536,
        st_mtime_ns=1_600_000_000_000_000_123,
        st_gid=4321,
    )
    entry = wire.entry_out(e)
    assert len(entry) == header["fuse_entry_out"]
    assert _at(entry, header["fuse_entry_out.attr.ino"], 8) == e.st_ino
    assert _at(entry, header["fuse_entry_out.attr.mode"], 4) == e.st_mode
    assert _at(entry, header["fuse_entry_out.attr.mtimensec"], 4) == 123
    assert _at(entry, header["fuse_entry_out.attr.blksize"], 4) == 65536
    assert _at(entry, header["fuse_entry_out.attr_valid"], 8) == 2
    attr = wire.attr_out(e)
    assert len(attr) == header["fuse_attr_out"]
    assert _at(attr, header["fuse_attr_out.attr.size"], 8) == 1 << 35
    assert _at(attr, header["fuse_attr_out.attr.gid"], 4) == 4321
    flags = wire.HANDLE_KILLPRIV_V2 | wire.DIRECT_IO_ALLOW_MMAP
    init = wire.init_out(38, 131072, flags, 64, 1 << 20, 256)
    assert len(init) == header["fuse_init_out"]
    assert _at(init, header["fuse_init_out.flags"], 4) == wire.HANDLE_KILLPRIV_V2 | wire.INIT_EXT
    assert _at(init, header["fuse_init_out.flags2"], 4) == 1 << 4
    assert _at(init, header["fuse_init_out.max_write"], 4) == 1 << 20
    assert _at(init, header["fuse_init_out.max_pages"], 2) == 256
    assert _at(init, header["fuse_init_out.time_gran"], 4) == 1
    statfs = wire.statfs_out(StatvfsData(f_bsize=4096, f_frsize=512, f_namemax=255))
    assert len(statfs) == header["fuse_statfs_out"]
    assert _at(statfs, header["fuse_statfs_out.st.namelen"], 4) == 255
    assert _at(statfs, header["fuse_statfs_out.st.frsize"], 4) == 512
    assert len(wire.open_out(1, 0)) == header["fuse_open_out"]
    assert len(wire.write_out(1)) == header["fuse_write_out"]
    assert wire.OUT_HEADER.size == header["fuse_out_header"]
    assert wire.IN_HEADER.size == header["fuse_in_header"]
    plain = wire.dirent(b"name", 7, 0o040755, 3)
    plus = wire.direntplus(b"name", e, 3)
    assert plain[_int(header, "name_offset") :][:4] == b"name"
    assert plus[_int(header, "name_offset_plus") :][:4] == b"name"
    assert len(plain) % 8 == 0 and len(plus) % 8 == 0
    inval = wire.notify_inval_inode(5, -1, 0)
    assert len(inval) == wire.OUT_HEADER.size + _int(header, "fuse_notify_inval_inode_out")
    entry_inval = wire.notify_inval_entry(5, b"abc")
    size = wire.OUT_HEADER.size + _int(header, "fuse_notify_inval_entry_out") + len(b"abc\0")
    assert len(entry_inval) == size
    expire = wire.notify_inval_entry(5, b"abc", expire_only=True)
    fixed = expire[wire.OUT_HEADER.size : size - len(b"abc\0")]
    assert fixed.hex() == header["inval_entry_expire_only"]
    assert _int(header, "has_expire_only") == wire.HAS_EXPIRE_ONLY


def test_requests_filled_by_the_kernel_header_decode(header: dict[str, object]) -> None:
    raw = bytes.fromhex(str(header["in_header"])) + bytes(200)
    h, length = wire.parse_header(raw)
    assert (h.opcode, h.unique, h.nodeid, h.uid, h.gid, h.pid) == (
        wire.SETATTR,
        77,
        1234,
        1000,
        1001,
        4242,
    )
    assert length == 200
    s = wire.setattr_in(bytes.fromhex(str(header["setattr_in"])))
    assert s.valid & wire.FATTR_KILL_SUIDGID and s.valid & wire.FATTR_FH
    assert (s.fh, s.size, s.mtime_ns, s.mode, s.uid, s.gid) == (
        9,
        1 << 33,
        1_600_000_000_000_000_123,
        0o100644,
        5,
        6,
    )
    w = wire.io_in(bytes.fromhex(str(header["write_in"])))
    assert (w.fh, w.offset, w.size, w.flags) == (3, 1 << 40, 4096, wire.WRITE_KILL_SUIDGID)
    create = bytes.fromhex(str(header["create_in"])) + b"file\0"
    assert wire.create_in(create) == (0o101, 0o100620, 0, b"file")
    init = wire.init_in(bytes.fromhex(str(header["init_in"])))
    assert (init.major, init.minor, init.max_readahead) == (7, 41, 131072)
    assert init.flags == (
        wire.HANDLE_KILLPRIV_V2 | wire.MAX_PAGES | wire.INIT_EXT | wire.DIRECT_IO_ALLOW_MMAP
    )
    old = wire.init_in(bytes.fromhex(str(header["init_in_7_35"])))
    assert (old.max_readahead, old.flags) == (131072, init.flags & 0xFFFF_FFFF)


def test_short_or_unterminated_requests_are_wire_errors() -> None:
    with pytest.raises(wire.WireError):
        wire.parse_header(b"\x00" * 10)
    too_long = wire.IN_HEADER.pack(500, wire.LOOKUP, 1, 1, 0, 0, 0, 0, 0)
    with pytest.raises(wire.WireError):
        wire.parse_header(too_long)
    with pytest.raises(wire.WireError):
        wire.names(b"no terminator", 1)
    with pytest.raises(wire.WireError):
        wire.setattr_in(b"\x00" * 40)
    with pytest.raises(wire.WireError):
        wire.write_data(wire.IN_HEADER.pack(0, 0, 0, 0, 0, 0, 0, 0, 0) + b"x" * 8, 4096)


def test_readdir_reply_holds_what_fits() -> None:
    token = wire.ReaddirToken(200, plus=True)
    e = EntryAttributes(st_ino=9, st_mode=0o100644)
    assert token.add(b"a", e, 1)  # 128 + 24 + 1 → 160 bytes
    assert not token.add(b"b", e, 2)  # 40 left
    assert len(b"".join(token.parts)) == 160


# --- through real mounts -------------------------------------------------------------


@pytest.fixture(params=["local", "fuse-none", "fuse-auto"])
def place(
    request: pytest.FixtureRequest, tmp_path: Path, gateway_proc: GatewayProc, mount: MountFactory
) -> tuple[Path, Path]:
    """(where to work, where the bytes land): a local directory (both the same), or a
    mount of share ``alpha`` and the share's directory on the gateway's host."""
    if request.param == "local":
        d = tmp_path / "local"
        d.mkdir()
        return d, d
    m = mount(gateway_proc.uri, "alpha", request.param.removeprefix("fuse-")).path
    return m, gateway_proc.share_dir("alpha")


def test_setid_bits_go_as_on_a_local_disk(place: tuple[Path, Path]) -> None:
    """A write or truncation by a user without CAP_FSETID drops set-user-ID (and
    set-group-ID with group execute); a chown drops them too. The client does it (the
    kernel leaves it to us with HANDLE_KILLPRIV_V2); the ``local`` run shows it is what
    Linux does."""
    where, back = place
    pub = where / "pub"
    pub.mkdir()
    pub.chmod(0o777)
    for name in ("w", "t", "c"):
        (pub / name).write_bytes(b"data")
    os.chmod(pub / "w", 0o6777)  # written to by nobody: both bits go
    os.chmod(pub / "t", 0o4766)  # truncated by nobody: set-user-ID goes
    os.chmod(pub / "c", 0o6755)  # chowned by root: both go
    run_as_nobody(pub, "echo more >> w && truncate -s 1 t")
    os.chown(pub / "c", NOBODY, NOBODY)
    want = {"w": 0o777, "t": 0o766, "c": 0o755}
    seen = {n: stat.S_IMODE(os.stat(pub / n).st_mode) for n in want}
    assert seen == want
    landed = {n: stat.S_IMODE(os.stat(back / "pub" / n).st_mode) for n in want}
    assert landed == want
    assert (back / "pub" / "w").read_bytes() == b"datamore\n"
    assert (back / "pub" / "t").read_bytes() == b"d"


def test_writes_reach_the_gateway_in_1mib(
    gateway_with: GatewayFactory, mount: MountFactory
) -> None:
    """The kernel sends writes as large as one Twrite carries (max_write = msize - 24, the
    MAX_PAGES the client asks for): a 16 MiB write of cache mode ``none`` (direct I/O, so
    the kernel cuts it at max_write, not where its writeback happens to start) arrives as
    16 Twrites of 1 MiB (17 when the buffer does not start on a page), not 128 of the
    kernel's default 128 KiB."""
    gw = gateway_with(metrics=True)
    m = mount(gw.uri, "alpha", "none").path
    data = os.urandom(16 << 20)
    before = settled(gw)
    fd = os.open(m / "big", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        assert os.write(fd, data) == len(data)
    finally:
        os.close(fd)
    spent = delta(before, settled(gw))
    assert (gw.share_dir("alpha") / "big").read_bytes() == data
    assert spent.get("write") in (16, 17), spent


_WAIT_THEN_ASK = r"""
import os, signal, sys, time

class Interrupted(Exception):
    pass

def interrupt(signum, frame):
    raise Interrupted

fd = os.open(sys.argv[1], os.O_RDONLY)
print("open", flush=True)
sys.stdin.readline()
signal.signal(signal.SIGALRM, interrupt)
for ask in (lambda: os.pread(fd, 16, 0), lambda: os.fstat(fd)):
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    start = time.monotonic()
    try:
        ask()
        print("answered", flush=True)
    except Interrupted:
        print(f"interrupted {time.monotonic() - start:.2f}", flush=True)
"""


def test_a_signal_ends_a_read_and_a_stat_the_gateway_does_not_answer(
    gateway_proc: GatewayProc, mount: MountFactory
) -> None:
    """The gateway stops answering (SIGSTOP: a host being failed over): a read and an
    fstat of an open file end with EINTR when the caller takes a signal (the kernel waits
    for our answer to its interrupt; unanswered, not even SIGKILL ended them). Once the
    gateway is back, the mount answers as before."""
    assert gateway_proc.proc is not None
    (gateway_proc.share_dir("alpha") / "f").write_bytes(b"sixteen bytes...")
    m = mount(gateway_proc.uri, "alpha", "none").path
    child = subprocess.Popen(
        [sys.executable, "-c", _WAIT_THEN_ASK, str(m / "f")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == "open\n"
        gateway_proc.proc.send_signal(signal.SIGSTOP)
        child.stdin.write("go\n")
        child.stdin.flush()
        out, _ = child.communicate(timeout=20)
    finally:
        gateway_proc.proc.send_signal(signal.SIGCONT)
        if child.poll() is None:
            child.kill()
            child.wait()
    said = out.split()
    assert said[::2] == ["interrupted", "interrupted"], out
    assert all(float(t) < 3 for t in said[1::2]), out
    assert (m / "f").read_bytes() == b"sixteen bytes..."
    assert os.stat(m / "f").st_size == 16


def test_shared_mmap_and_sqlite_wal_in_cache_none(
    gateway_proc: GatewayProc, mount: MountFactory
) -> None:
    """``--cache none`` opens files FOPEN_DIRECT_IO; the kernel maps them shared only when
    asked for DIRECT_IO_ALLOW_MMAP at INIT (else ENODEV: SQLite in WAL mode failed with
    "disk I/O error"). What is written through the map reaches the gateway."""
    m = mount(gateway_proc.uri, "alpha", "none").path
    fd = os.open(m / "mapped", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.ftruncate(fd, 8192)
        with mmap.mmap(fd, 8192) as mapped:
            mapped[0:5] = b"hello"
            mapped[4096:4101] = b"world"
            mapped.flush()
    finally:
        os.close(fd)
    on_host = (gateway_proc.share_dir("alpha") / "mapped").read_bytes()
    assert (on_host[0:5], on_host[4096:4101], len(on_host)) == (b"hello", b"world", 8192)

    db = sqlite3.connect(m / "wal.db")
    try:
        assert db.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
        db.execute("CREATE TABLE t (x)")
        db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1000)])
        db.commit()
    finally:
        db.close()
    host_db = sqlite3.connect(gateway_proc.share_dir("alpha") / "wal.db")
    try:
        assert host_db.execute("SELECT count(*), sum(x) FROM t").fetchone() == (1000, 499500)
    finally:
        host_db.close()
