"""A real etcd for tests: one member in a temporary directory, on free loopback ports.

::

    with EtcdServer() as etcd:          # started and healthy, or an error saying why
        store = EtcdStore([etcd.endpoint], prefix="/t1/")
        ...
        etcd.restart()                  # same data, same ports (a lost watch, for tests)
    # stopped by its PID, whatever happened inside

The member runs with a short Raft heartbeat (10 ms) and election timeout (100 ms): leases
then honour TTLs down to one second (etcd's floor is 1.5 election timeouts), and a restart
elects itself within a fraction of a second. Everything else is etcd's default.

Only this process's own child is ever signalled, by its PID; the data directory is removed
on exit. The etcd binary is ``$VSHARE_ETCD`` or ``etcd`` on ``PATH`` (Debian
``etcd-server``); :func:`etcd_binary` returns None when there is none, so tests can skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Self

import httpx

from vshare.testing.processes import free_port

__all__ = ["EtcdServer", "etcd_binary", "free_port"]


def etcd_binary() -> str | None:
    """The etcd server binary to run, or None if there is none."""
    given = os.environ.get("VSHARE_ETCD")
    if given:
        return given
    return shutil.which("etcd") or (
        "/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None
    )


class EtcdServer:
    """One etcd member for a test (see the module note).

    Args:
        binary: the etcd executable (default: :func:`etcd_binary`).
        startup_timeout: seconds to wait for ``/health`` before giving up.
        extra_args: more etcd flags.
        client_port: the client port (default: a free one).

    Raises (on start):
        RuntimeError: no etcd binary, or it did not become healthy (with its log's tail).
    """

    def __init__(
        self,
        *,
        binary: str | None = None,
        startup_timeout: float = 20.0,
        extra_args: tuple[str, ...] = (),
        client_port: int = 0,
    ) -> None:
        self.binary = binary or etcd_binary()
        self.startup_timeout = startup_timeout
        self.extra_args = extra_args
        self.client_port = client_port
        self.peer_port = 0
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT``, the client endpoint (as ``etcd://`` URIs name it)."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    # --- life cycle -----------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the member (the first time: a fresh data directory and ports) and wait
        until it is healthy."""
        if self.binary is None:
            raise RuntimeError("no etcd binary (install Debian etcd-server or set VSHARE_ETCD)")
        if self.process is not None:
            raise RuntimeError("etcd is already running")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="vshare-etcd-"))
            self.client_port = self.client_port or free_port()
            self.peer_port = free_port()
            while self.peer_port == self.client_port:
                self.peer_port = free_port()
        client = self.url
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            self.binary, "--name", "n1", "--data-dir", str(self.workdir / "data"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"n1={peer}",
            "--heartbeat-interval", "10", "--election-timeout", "100",
            *self.extra_args,
        ]  # fmt: skip
        self._log = open(self.workdir / "etcd.log", "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer"
        with httpx.Client(timeout=1.0) as http:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"etcd exited with status {self.process.returncode}: {self.log_tail()}"
                    )
                try:
                    reply = http.get(f"{self.url}/health")
                    if reply.status_code == 200 and reply.json().get("health") == "true":
                        return
                    last = reply.text.strip()
                except httpx.HTTPError as exc:
                    last = str(exc) or type(exc).__name__
                time.sleep(0.05)
        raise RuntimeError(f"etcd not healthy after {self.startup_timeout:g} s ({last}): "
                           f"{self.log_tail()}")  # fmt: skip

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the member by its PID (``sig``, then SIGKILL after ``timeout``); the data
        directory stays, so :meth:`start` brings the same data back."""
        process, self.process = self.process, None
        try:
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, sig)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(process.pid, signal.SIGKILL)
                    process.wait()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def restart(self, sig: int = signal.SIGTERM) -> None:
        """Stop (with ``sig``) and start again on the same data and ports."""
        self.stop(sig)
        self.start()

    def close(self) -> None:
        """Stop the member and remove its directory; idempotent."""
        try:
            self.stop()
        finally:
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of etcd's log (for error messages)."""
        if self.workdir is None:
            return ""
        try:
            text = (self.workdir / "etcd.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])
