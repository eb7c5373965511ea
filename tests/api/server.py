"""A real ``vshare api run`` process for tests (also used by tests/cli): a fresh SQLite
store and POSIX volume in a temporary directory, an admin token made with
``vshare api token create`` as an operator would, and a wait for ``/v1/health``."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.processes import VSHARE, free_port


def vshare(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the ``vshare`` command; its stdout, stderr and exit code."""
    done = subprocess.run([VSHARE, *args], check=False, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise AssertionError(f"vshare {' '.join(args)}: {done.returncode}\n{done.stderr}")
    return done


@dataclass
class ApiServer:
    proc: subprocess.Popen[bytes]
    url: str
    admin_token: str
    store_uri: str
    volume: Path
    log_path: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, name: str, tenant: str | None = None) -> str:
        """A new token made on the store directly, as ``vshare api token create`` does."""
        args = ["api", "token", "create", name, "--store", self.store_uri]
        if tenant is not None:
            args += ["--tenant", tenant]
        secret = vshare(*args).stdout.strip()
        self.tokens[name] = secret
        return secret

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def log_lines(self) -> list[dict[str, object]]:
        """The server's log so far (it runs with --log-format json)."""
        out = []
        for line in self.log_path.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, then the exit code (killed, and the test failed, if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("the API did not stop within 20 s of SIGTERM") from None
        return self.proc.returncode


def start_api(tmp: Path, *, admin: str = "admin") -> ApiServer:
    """Start ``vshare api run`` on a free port of 127.0.0.1 and wait until it answers."""
    volume = tmp / "vol"
    volume.mkdir(parents=True, exist_ok=True)
    store_uri = f"sqlite://{tmp / 'state.db'}"
    admin_token = vshare("api", "token", "create", admin, "--store", store_uri).stdout.strip()
    port = free_port()
    log_path = tmp / "api.log"
    command = [
        VSHARE, "--log-format", "json", "api", "run", "--listen", f"127.0.0.1:{port}",
        "--store", store_uri, "--volume", f"default=posix:{volume}",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    server = ApiServer(proc, f"http://127.0.0.1:{port}", admin_token, store_uri, volume, log_path)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"the API exited ({proc.returncode}):\n{log_path.read_text()}")
        try:
            if httpx.get(f"{server.url}/v1/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"the API did not answer within 30 s:\n{log_path.read_text()}")
        time.sleep(0.05)
