"""``vshare gateway run`` as operators run it: a real process, its metrics endpoint, its
JSON logs, SIGTERM, and one-line errors for configuration mistakes."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tests.processes import VSHARE, free_port
from vshare import protocol as p
from vshare.backend import Backend
from vshare.client import open_client
from vshare.gateway import GatewayConfig
from vshare.node import gateway as gateway_node


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def write_config(tmp: Path, sock: Path) -> Path:
    vol = tmp / "vol"
    (vol / "shares" / "docs").mkdir(parents=True)
    (vol / "shares" / "docs" / "hello.txt").write_bytes(b"hello, metrics\n")
    config = tmp / "gw.toml"
    config.write_text(
        f'listen = ["unix://{sock}"]\nbackend = "posix:{vol}"\n'
        f'[[share]]\nname = "docs"\npath = "shares/docs"\n'
        f'access = [{{ type = "user", to = "{os.getuid()}" }}]\n'
    )
    return config


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, int]]:
    sock = tmp_path / "gw.sock"
    port = free_port()
    config = write_config(tmp_path, sock)
    command = [VSHARE, "--log-format", "json", "gateway", "run",
               "--config", str(config), "--metrics", f"127.0.0.1:{port}"]  # fmt: skip
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.05)
        yield proc, f"unix://{sock}", port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


@pytest.mark.anyio
async def test_metrics_count_what_happened(
    gateway_process: tuple[subprocess.Popen[str], str, int],
) -> None:
    _, uri, port = gateway_process
    async with open_client(uri, 65536) as c:
        root, _ = await c.attach("docs")
        with pytest.raises(OSError):
            await c.attach("no-such-share")
        fid = c.new_fid()
        await c.call(p.Twalk(root, fid, ("hello.txt",)), p.Rwalk)
        for _ in range(5):
            await c.call(p.Tgetattr(fid, p.GETATTR_BASIC), p.Rgetattr)
        await c.call(p.Tlopen(fid, p.DOTL_RDONLY), p.Rlopen)
        data = await c.call(p.Tread(fid, 0, 4096), p.Rread)
        assert bytes(data.data) == b"hello, metrics\n"
        with pytest.raises(OSError):
            await c.call(p.Twalk(root, c.new_fid(), ("missing",)), p.Rwalk)
        live = scrape(port)
        assert live["vshare_sessions"] == 1
        assert live["vshare_fids"] == 2  # root and hello.txt
    m = scrape(port)
    assert m['vshare_requests_total{op="getattr",result="ok"}'] == 5
    assert m['vshare_requests_total{op="walk",result="ENOENT"}'] == 1
    assert m['vshare_request_seconds_count{op="getattr"}'] == 5
    assert m['vshare_request_seconds_bucket{le="+Inf",op="getattr"}'] == 5
    assert m["vshare_read_bytes_total"] == len(b"hello, metrics\n")
    assert m['vshare_attach_total{decision="allow"}'] == 1
    assert m['vshare_attach_total{decision="deny"}'] == 1
    with anyio.fail_after(5):
        while scrape(port)["vshare_sessions"] != 0:
            await anyio.sleep(0.05)
    assert scrape(port)["vshare_fids"] == 0


def test_json_logs_and_graceful_sigterm(
    gateway_process: tuple[subprocess.Popen[str], str, int],
) -> None:
    proc, uri, _ = gateway_process

    async def attach_twice() -> None:
        async with open_client(uri, 65536) as c:
            await c.attach("docs")
            with pytest.raises(OSError):
                await c.attach("nope")

    anyio.run(attach_twice)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert proc.stderr is not None
    lines = [json.loads(line) for line in proc.stderr.read().splitlines()]  # every line is JSON
    audits = [entry for entry in lines if entry.get("event") == "attach"]
    assert [(a["share"], a["decision"]) for a in audits] == [("docs", "allow"), ("nope", "deny")]
    # The granted access level has its own name: "level" is the log line's own severity.
    assert [(a["access"], a["level"]) for a in audits] == [("rw", "info"), (None, "info")]
    assert all(a["logger"] == "vshare.audit" and "identity" in a for a in audits)
    assert any(entry.get("event") == "session-close" for entry in lines)
    assert any("SIGTERM" in entry["msg"] for entry in lines)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("listen = [\n", "vshare: "),
        ('listen = ["unix:///tmp/x.sock"]\nbackend = "posix:/nonexistent-vshare"\nbogus = 1\n',
         "unknown setting(s): bogus"),
        ('listen = ["ftp://host"]\nbackend = "posix:/tmp"\n', "scheme must be one of"),
        ('listen = ["unix:///tmp/x.sock"]\nbackend = "posix:/tmp"\nmsize = 12\n', "msize must"),
        ('listen = ["unix:///tmp/x.sock"]\nbackend = "posix:/tmp"\ncache_memory_mib = 0\n',
         "cache_memory_mib must be a whole number ≥ 1 (MiB), not 0"),
    ],
)  # fmt: skip
def test_config_mistakes_are_one_line(tmp_path: Path, config: str, expected: str) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(config)
    result = subprocess.run([VSHARE, "gateway", "run", "--config", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.anyio
async def test_the_backend_is_opened_with_cache_memory_mib(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[tuple[str, int]] = []

    def open_backend(uri: str, *, cache_bytes: int) -> Backend:
        opened.append((uri, cache_bytes))
        raise OSError(errno.ENOENT, "no volume")

    monkeypatch.setattr(gateway_node, "open_backend", open_backend)
    with pytest.raises(OSError, match="no volume"):
        await gateway_node.run_gateway(GatewayConfig(backend="posix:/vol", cache_memory_mib=8))
    assert opened == [("posix:/vol", 8 * 2**20)]


def test_missing_backend_directory_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [VSHARE, "gateway", "run", "--listen", f"unix://{tmp_path}/s.sock",
         "--backend", f"posix:{tmp_path}/absent"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "absent" in result.stderr and "Traceback" not in result.stderr


DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_example_gateway_toml_is_a_valid_config() -> None:
    from vshare.gateway import load_config

    config = load_config(DEPLOY / "gateway.toml")
    assert config.store and "vsock://any:564" in config.listen and config.tls_client_ca


@pytest.mark.parametrize("name", ["vshare-gateway.service", "vshare-api.service"])
def test_systemd_unit_is_valid(tmp_path: Path, name: str) -> None:
    """The units in deploy/ pass ``systemd-analyze verify`` (with ExecStart pointed at
    this checkout's vshare, which is what differs on a real host)."""
    analyze = "/usr/bin/systemd-analyze"
    if not os.path.exists(analyze):
        pytest.skip("systemd-analyze is not installed (Debian: package systemd)")
    unit = DEPLOY / "systemd" / name
    text = unit.read_text().replace("/usr/local/bin/vshare", VSHARE)
    assert VSHARE in text
    copy = tmp_path / unit.name
    copy.write_text(text)
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert name not in result.stderr, result.stderr


def test_gateway_serves_the_store(tmp_path: Path) -> None:
    from vshare.store import ShareStatus, SqliteStore
    from vshare.testing.store_conformance import make_rule, make_share

    vol = tmp_path / "vol"
    (vol / "shares" / "kept").mkdir(parents=True)
    (vol / "shares" / "kept" / "a.txt").write_bytes(b"from the store\n")
    db = tmp_path / "state.db"
    with SqliteStore(str(db)) as store:
        share = store.create_share(make_share("kept", backend=f"posix:{vol}",
                                              status=ShareStatus.AVAILABLE))  # fmt: skip
        store.add_rule(make_rule(share.id, str(os.getuid()), access_type="user"))
    sock = tmp_path / "gw.sock"
    port = free_port()
    proc = subprocess.Popen([VSHARE, "gateway", "run", "--listen", f"unix://{sock}",
                             "--backend", f"posix:{vol}", "--store", f"sqlite://{db}",
                             "--metrics", f"127.0.0.1:{port}"],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)

        async def read() -> bytes:
            async with open_client(f"unix://{sock}", 65536) as c:
                root, _ = await c.attach(share.id)  # by id as well as by name
                fid = c.new_fid()
                await c.call(p.Twalk(root, fid, ("a.txt",)), p.Rwalk)
                await c.call(p.Tlopen(fid, p.DOTL_RDONLY), p.Rlopen)
                return bytes((await c.call(p.Tread(fid, 0, 100), p.Rread)).data)

        assert anyio.run(read) == b"from the store\n"
        # The follower's own state is on the gateway's metrics endpoint.
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        assert "vshare_store_up 1.0" in text and "vshare_store_failed_closed 0.0" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_store_errors_are_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    (tmp_path / "vol").mkdir()
    result = subprocess.run(
        [VSHARE, "gateway", "run", "--listen", f"unix://{tmp_path}/s.sock",
         "--backend", f"posix:{tmp_path}/vol", "--store", f"sqlite://{garbage}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "store" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    both = tmp_path / "both.toml"
    both.write_text(f'store = "sqlite://{tmp_path}/s.db"\n[[share]]\nname = "x"\npath = "x"\n')
    result = subprocess.run(
        [VSHARE, "gateway", "run", "--config", str(both)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "shares come from the store" in result.stderr
