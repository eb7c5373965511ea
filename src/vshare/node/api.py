"""The REST API process, composed (``vshare api run``): the volume table checked, the
control-plane store opened, a :class:`~vshare.control.ControlService` on it, served over
HTTP until SIGTERM or Ctrl-C.
"""

from __future__ import annotations

from collections.abc import Sequence

from vshare.api import bind, serve
from vshare.control import ControlService, Volumes, parse_volume
from vshare.node.errors import NodeError
from vshare.store import StoreError, open_store


def volume_table(texts: Sequence[str]) -> Volumes:
    """The volumes of ``--volume NAME=URI`` options (none: the default one), checked
    before anything is opened, so a refused start leaves no database behind.

    Raises:
        ValueError: a malformed option, a name given twice, a local volume that is missing.
    """
    table: dict[str, str] = {}
    for text in texts:
        name, uri = parse_volume(text)
        if name in table:
            raise ValueError(f"--volume {name} is given twice")
        table[name] = uri
    volumes = Volumes(table or None)
    volumes.check_local()
    return volumes


def run_api(store: str, volumes: Volumes, host: str, port: int, *, max_share_gib: int) -> None:
    """Serve the REST API on ``host:port`` over the store at ``store`` until SIGTERM.

    Raises:
        ValueError: ``store`` is not a store URI.
        NodeError: the store refused, or the address cannot be bound (one line).
    """
    try:
        state = open_store(store)
    except StoreError as exc:
        raise NodeError(str(exc)) from exc
    service = ControlService(state, volumes, max_share_gib=max_share_gib)
    try:
        sock = bind(host, port)
        try:
            serve(service, sock)
        finally:
            sock.close()
    except OSError as exc:
        raise NodeError(exc.strerror or str(exc)) from exc
    except KeyboardInterrupt:
        pass
    finally:
        service.close()
        state.close()
