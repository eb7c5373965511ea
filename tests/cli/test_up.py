"""``vshare up`` (what ``make run`` runs): store, gateway, API and the demo share, stopped
cleanly by SIGTERM and reused by a second run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import anyio
import httpx

from tests.processes import VSHARE, free_port
from vshare import protocol as p
from vshare.client import open_client


def start(data: Path, port: int, api_port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [VSHARE, "up", "--data", str(data), "--port", str(port), "--api-port", str(api_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "vshare up did not come up"
        try:
            if httpx.get(f"http://127.0.0.1:{api_port}/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


def test_up_runs_the_node_and_a_second_run_reuses_it(tmp_path: Path) -> None:
    data = tmp_path / "var"
    port, api_port = free_port(), free_port()
    proc = start(data, port, api_port)
    try:
        token = (data / "admin.token").read_text().strip()
        assert oct((data / "admin.token").stat().st_mode & 0o777) == "0o600"
        env = {**os.environ, "VSHARE_ENDPOINT": f"http://127.0.0.1:{api_port}",
               "VSHARE_TOKEN": token}  # fmt: skip
        listed = subprocess.run([VSHARE, "share", "list", "--json"], env=env, text=True,
                                capture_output=True, timeout=60, check=True)  # fmt: skip
        (share,) = json.loads(listed.stdout)["shares"]
        assert share["name"] == "demo" and share["status"] == "available"

        async def read_demo(uri: str) -> bytes:
            async with open_client(uri, 65536) as c:
                root, _ = await c.attach("demo")
                fid = c.new_fid()
                await c.call(p.Twalk(root, fid, ("README.txt",)), p.Rwalk)
                await c.call(p.Tlopen(fid, p.DOTL_RDONLY), p.Rlopen)
                return bytes((await c.call(p.Tread(fid, 0, 200), p.Rread)).data)

        # the FUSE mount of the demo share
        mounted = data / "mnt" / "demo" / "README.txt"
        deadline = time.monotonic() + 20
        while not mounted.exists():
            assert time.monotonic() < deadline, "the demo share was not mounted"
            time.sleep(0.1)
        assert mounted.read_bytes().startswith(b"This is the demo share")
        (data / "mnt" / "demo" / "written-through-fuse").write_bytes(b"via FUSE")
        share_dir = data / "volume" / "shares" / share["id"]
        assert (share_dir / "written-through-fuse").read_bytes() == b"via FUSE"
        # the local user (Unix socket, user rule) and the demo instance (its loopback address)
        for uri in (f"unix://{data}/run/gateway.sock", f"tcp://127.0.0.1:{port}"):
            assert anyio.run(read_demo, uri).startswith(b"This is the demo share")
    finally:
        out = stop(proc)
    assert "admin token" in out and token in out
    assert not os.path.ismount(data / "mnt" / "demo")  # unmounted on the way out
    api_pids = [line.split()[-1] for line in out.splitlines() if "pid" in line and "api" in line]
    assert api_pids and not Path(f"/proc/{api_pids[0]}").exists()  # the API child is gone

    proc = start(data, port, api_port)  # a second run: same token, same share
    try:
        assert (data / "admin.token").read_text().strip() == token
        headers = {"Authorization": f"Bearer {token}"}
        shares = httpx.get(f"http://127.0.0.1:{api_port}/v1/shares", headers=headers, timeout=5)
        assert [s["id"] for s in shares.json()["shares"]] == [share["id"]]
    finally:
        stop(proc)
