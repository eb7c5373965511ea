"""``vshare up``: the all-in-one node on embedded defaults.

One command, in the foreground, runs what a single hypervisor needs:

- the control-plane store (SQLite) at ``DATA/state.db`` and the POSIX volume ``DATA/volume``;
- the gateway (in this process), following the store, on ``DATA/run/gateway.sock`` and
  ``tcp://127.0.0.1:PORT``;
- the REST API (a child process: uvicorn runs its own event loop) on ``127.0.0.1:API_PORT``;
- a ``demo`` tenant with a ``demo`` share, the local user allowed rw, and an instance
  ``demo-vm`` known by the loopback address, also allowed (created once, kept after);
- the demo share mounted at ``DATA/mnt/demo`` by the vshare FUSE client (a child process,
  unmounted on the way out).

The admin token is created on the first run and kept in ``DATA/admin.token`` (mode 0600).
Ctrl-C or SIGTERM stops the API child (by PID) and then the gateway; a second run reuses
everything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Final

import click

from vshare.cli._gateway import fail, run_gateway
from vshare.cli._logging import default_format, setup_logging
from vshare.gateway.config import GatewayConfig
from vshare.transport import run_async

log = logging.getLogger("vshare.up")
DEMO: Final = "demo"
DEMO_VM: Final = "demo-vm"


def _admin_token(data: Path, store_uri: str) -> str:
    """The admin token's secret: created on the first run, then read from DATA."""
    path = data / "admin.token"
    if path.exists():
        return path.read_text().strip()
    from vshare.control import issue_token
    from vshare.store import open_store

    with open_store(store_uri) as store:
        _, secret = issue_token(store, f"admin-{os.urandom(3).hex()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def _demo(store_uri: str, volume_uri: str) -> str:
    """Make the demo share, instance and rules unless they exist; the share's id."""
    from vshare.control import ADMIN, ControlService
    from vshare.store import Conflict, open_store

    with open_store(store_uri) as store:
        service = ControlService(store, {"default": volume_uri})
        try:
            share = store.find_share(DEMO)
            if share is None:
                share = service.create_share(ADMIN, DEMO, 10, tenant=DEMO)
                service.allow(ADMIN, DEMO, "user", str(os.getuid()), "rw")
                with contextlib.suppress(Conflict):
                    service.register_instance(ADMIN, DEMO_VM, tenant=DEMO, name=DEMO_VM,
                                              ips=["127.0.0.1"])  # fmt: skip
                service.allow(ADMIN, DEMO, "instance", DEMO_VM, "rw")
            return share.id
        finally:
            service.close()


def _mount_demo(sock: Path, mountpoint: Path) -> None:
    """Mount the demo share once the gateway listens (runs beside the gateway's loop)."""
    from vshare.fuse import mount_main

    for _ in range(200):
        if sock.exists():
            break
        time.sleep(0.05)
    if mount_main([f"unix://{sock}"], DEMO, str(mountpoint)) != 0:
        log.warning("up: the demo share could not be mounted at %s (see above)", mountpoint)


def _unmount_demo(mountpoint: Path) -> None:
    from vshare.fuse import is_mounted, unmount

    if not is_mounted(str(mountpoint)):
        return
    try:
        unmount(str(mountpoint))
    except OSError as exc:  # busy: detach lazily rather than leave it behind
        log.warning("up: %s: %s; detaching lazily", mountpoint, exc.strerror)
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


@click.command()
@click.option("--data", default="./var", show_default=True, type=click.Path(path_type=Path),
              help="Directory for all state; reused on the next run.")  # fmt: skip
@click.option("--port", default=5640, show_default=True, help="Gateway TCP port on 127.0.0.1.")
@click.option("--api-port", default=8564, show_default=True, help="REST API port on 127.0.0.1.")
def up(data: Path, port: int, api_port: int) -> None:
    """Run the all-in-one node: store, gateway, REST API and a demo share under --data.

    Stop it with Ctrl-C.
    """
    data = data.resolve()
    volume = data / "volume"
    volume.mkdir(parents=True, exist_ok=True)
    (data / "run").mkdir(parents=True, exist_ok=True)
    store_uri = f"sqlite://{data / 'state.db'}"
    volume_uri = f"posix:{volume}"
    setup_logging(0)
    try:
        token = _admin_token(data, store_uri)
        share_id = _demo(store_uri, volume_uri)
    except (OSError, ValueError) as exc:
        fail(str(exc), 1)
    except Exception as exc:  # the store's and the service's errors: one line, not a trace
        fail(f"{type(exc).__name__}: {exc}", 1)
    welcome = volume / "shares" / share_id / "README.txt"
    if welcome.parent.is_dir() and not welcome.exists():
        welcome.write_text("This is the demo share of your vshare node.\n")
    sock = data / "run" / "gateway.sock"
    config = GatewayConfig(
        listen=(f"unix://{sock}", f"tcp://127.0.0.1:{port}"),
        backend=volume_uri,
        store=store_uri,
    )
    api_command = [sys.executable, "-m", "vshare", "--log-format", default_format, "api", "run",
                   "--listen", f"127.0.0.1:{api_port}", "--store", store_uri,
                   "--volume", f"default={volume_uri}"]  # fmt: skip
    api = subprocess.Popen(api_command, start_new_session=True)  # Ctrl-C reaches us, not it
    endpoint = f"http://127.0.0.1:{api_port}"
    click.echo(f"vshare node: data in {data}")
    click.echo(f"  store     {store_uri}")
    click.echo(f"  gateway   unix://{sock}  and  tcp://127.0.0.1:{port}  (9P2000.L)")
    click.echo(f"  api       {endpoint}  (OpenAPI: {endpoint}/openapi.json), pid {api.pid}")
    click.echo(f"  share     {DEMO!r} (id {share_id}) -> {volume / 'shares' / share_id}")
    click.echo(f"  admin token (also in {data / 'admin.token'}):")
    click.echo(f"    {token}")
    click.echo("Try:")
    click.echo(f"  VSHARE_ENDPOINT={endpoint} VSHARE_TOKEN=$(cat {data / 'admin.token'}) "
               "vshare share list")  # fmt: skip
    click.echo(f"  diodcat -s 127.0.0.1:{port} -a {DEMO} README.txt")
    click.echo(f"  mount -t 9p -o trans=tcp,port={port},version=9p2000.L,aname={DEMO}"
               " 127.0.0.1 /mnt   # from a guest with the 9P client")  # fmt: skip
    mountpoint = data / "mnt" / DEMO
    mountpoint.mkdir(parents=True, exist_ok=True)
    click.echo(f"  mount     {mountpoint}  (the demo share, vshare FUSE client)")
    click.echo("Ctrl-C stops everything.")
    sys.stdout.flush()
    mounter = threading.Thread(target=_mount_demo, args=(sock, mountpoint), daemon=True)
    mounter.start()
    try:
        run_async(run_gateway, config, lambda: _unmount_demo(mountpoint))
    except OSError as exc:
        fail(exc.strerror or str(exc), 1)
    except ValueError as exc:
        fail(str(exc), 1)
    except KeyboardInterrupt:
        pass
    finally:
        _unmount_demo(mountpoint)
        if api.poll() is None:
            api.terminate()
            try:
                api.wait(15)
            except subprocess.TimeoutExpired:
                api.kill()
                api.wait()
