"""The all-in-one node on embedded defaults (``vshare up``).

One process, in the foreground, runs what a single hypervisor needs:

- the control-plane store (SQLite) at ``DATA/state.db`` and the POSIX volume ``DATA/volume``;
- the gateway (in this process), following the store, on ``DATA/run/gateway.sock`` and
  ``tcp://127.0.0.1:PORT``;
- the REST API (a child process: uvicorn runs its own event loop) on ``127.0.0.1:API_PORT``;
- a ``demo`` tenant with a ``demo`` share, the local user allowed rw, and an instance
  ``demo-vm`` known by the loopback address, also allowed (created once, kept after);
- the demo share mounted at ``DATA/mnt/demo`` by the vshare FUSE client (a thread here,
  unmounted on the way out).

The admin token is created on the first run and kept in ``DATA/admin.token`` (mode 0600).
Ctrl-C or SIGTERM stops the API child (by PID) and then the gateway; a second run reuses
everything. :class:`AllInOne` says where everything is; :meth:`AllInOne.prepare` makes
the state, :meth:`AllInOne.start_api` the API child and :meth:`AllInOne.run` serves.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from vshare.gateway import GatewayConfig
from vshare.node.errors import NodeError
from vshare.node.gateway import serve_gateway

log = logging.getLogger("vshare.up")
DEMO: Final = "demo"
DEMO_VM: Final = "demo-vm"


@dataclass(frozen=True, slots=True)
class AllInOne:
    """Where the all-in-one node under ``data`` keeps and serves everything."""

    data: Path  # resolved
    port: int  # the gateway's TCP port on 127.0.0.1
    api_port: int  # the REST API's port on 127.0.0.1

    @property
    def volume(self) -> Path:
        return self.data / "volume"

    @property
    def store_uri(self) -> str:
        return f"sqlite://{self.data / 'state.db'}"

    @property
    def volume_uri(self) -> str:
        return f"posix:{self.volume}"

    @property
    def socket(self) -> Path:
        return self.data / "run" / "gateway.sock"

    @property
    def token_path(self) -> Path:
        return self.data / "admin.token"

    @property
    def mountpoint(self) -> Path:
        return self.data / "mnt" / DEMO

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def gateway_config(self) -> GatewayConfig:
        return GatewayConfig(
            listen=(f"unix://{self.socket}", f"tcp://127.0.0.1:{self.port}"),
            backend=self.volume_uri,
            store=self.store_uri,
        )

    def prepare(self) -> tuple[str, str]:
        """Make the directories, the admin token and the demo share unless they exist.

        Returns:
            The admin token's secret and the demo share's id.
        Raises:
            NodeError: the store or the volume refused (one line).
        """
        self.volume.mkdir(parents=True, exist_ok=True)
        (self.data / "run").mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        try:
            token = self._admin_token()
            share_id = self._demo()
        except (OSError, ValueError) as exc:
            raise NodeError(str(exc)) from exc
        except Exception as exc:  # the store's and the service's errors: one line
            raise NodeError(f"{type(exc).__name__}: {exc}") from exc
        welcome = self.volume / "shares" / share_id / "README.txt"
        if welcome.parent.is_dir() and not welcome.exists():
            welcome.write_text("This is the demo share of your vshare node.\n")
        return token, share_id

    def start_api(self, log_format: str) -> subprocess.Popen[bytes]:
        """The REST API as a child process, in its own session: Ctrl-C reaches us, not it."""
        command = [sys.executable, "-m", "vshare", "--log-format", log_format, "api", "run"]
        command += ["--listen", f"127.0.0.1:{self.api_port}", "--store", self.store_uri]
        command += ["--volume", f"default={self.volume_uri}"]
        return subprocess.Popen(command, start_new_session=True)

    def run(self, api: subprocess.Popen[bytes]) -> None:
        """Serve until Ctrl-C or SIGTERM: the gateway here, the demo share mounted beside it;
        on the way out, unmount and stop ``api``.

        Raises:
            NodeError: the gateway failed (one line).
        """
        mounter = threading.Thread(target=self._mount_demo, daemon=True)
        mounter.start()
        try:
            serve_gateway(self.gateway_config(), self._unmount_demo)
        finally:
            self._unmount_demo()
            _stop(api)

    def _admin_token(self) -> str:
        """The admin token's secret: created on the first run, then read from DATA."""
        if self.token_path.exists():
            return self.token_path.read_text().strip()
        from vshare.control import issue_token
        from vshare.store import open_store

        with open_store(self.store_uri) as store:
            _, secret = issue_token(store, f"admin-{os.urandom(3).hex()}")
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        return secret

    def _demo(self) -> str:
        """Make the demo share, instance and rules unless they exist; the share's id."""
        from vshare.control import ADMIN, ControlService
        from vshare.store import Conflict, open_store

        with open_store(self.store_uri) as store:
            service = ControlService(store, {"default": self.volume_uri})
            try:
                share = store.find_share(DEMO)
                if share is None:
                    share = service.create_share(ADMIN, DEMO, 10, tenant=DEMO)
                    service.allow(ADMIN, DEMO, "user", str(os.getuid()), "rw")
                    with contextlib.suppress(Conflict):
                        service.register_instance(
                            ADMIN, DEMO_VM, tenant=DEMO, name=DEMO_VM, ips=["127.0.0.1"]
                        )
                    service.allow(ADMIN, DEMO, "instance", DEMO_VM, "rw")
                return share.id
            finally:
                service.close()

    def _mount_demo(self) -> None:
        """Mount the demo share once the gateway listens (runs beside the gateway's loop)."""
        from vshare.fuse import mount_main

        for _ in range(200):
            if self.socket.exists():
                break
            time.sleep(0.05)
        if mount_main([f"unix://{self.socket}"], DEMO, str(self.mountpoint)) != 0:
            log.warning("up: the demo share could not be mounted at %s", self.mountpoint)

    def _unmount_demo(self) -> None:
        from vshare.fuse import is_mounted, unmount

        mountpoint = str(self.mountpoint)
        if not is_mounted(mountpoint):
            return
        try:
            unmount(mountpoint)
        except OSError as exc:  # busy: detach lazily rather than leave it behind
            log.warning("up: %s: %s; detaching lazily", mountpoint, exc.strerror)
            subprocess.run(["umount", "-l", mountpoint], check=False)


def _stop(child: subprocess.Popen[bytes]) -> None:
    """Terminate ``child`` (by its PID), then kill it if it does not go in 15 s."""
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(15)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
