"""Serving the API with uvicorn until SIGTERM or SIGINT.

The listening socket is bound here, before uvicorn starts, so that "address in use" is an
``OSError`` the command reports in one line (uvicorn would log it and ``sys.exit(1)``).
Uvicorn catches SIGTERM/SIGINT, stops accepting, finishes the requests in flight and
returns; it then re-raises the signal it caught, which with the default disposition would
kill the process with that signal, so :func:`serve` installs handlers first that make the
re-raised signal harmless: a stopped API exits 0.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
from types import FrameType
from typing import Final

import uvicorn

from vshare.api._app import create_app
from vshare.control import ControlService

log = logging.getLogger("vshare.api")

DEFAULT_LISTEN: Final = "127.0.0.1:8564"


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6addr]:PORT`` for IPv6) → (host, port).

    Raises:
        ValueError: anything else, in one line.
    """
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host, int(port_text)


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), not yet listening.

    Raises:
        OSError: the address cannot be bound (with the address in the message).
    """
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a host name: resolved by bind
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    except BaseException:
        sock.close()
        raise
    return sock


def serve(service: ControlService, sock: socket.socket) -> None:
    """Serve the API on ``sock`` until SIGTERM/SIGINT; returns after a graceful stop.
    The caller closes the service and the store."""
    app = create_app(service)
    config = uvicorn.Config(
        app,
        log_config=None,  # keep the process's logging set-up (text or JSON)
        access_log=False,  # ours is in _app.py: one line per request
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    stopping: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    # Uvicorn puts these back when it returns and then raises the signal again: see above.
    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        host, port = sock.getsockname()[:2]
        log.info(
            "api: listening on http://%s:%d (OpenAPI at /openapi.json)",
            f"[{host}]" if ":" in host else host,
            port,
        )
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("api: stopped")
