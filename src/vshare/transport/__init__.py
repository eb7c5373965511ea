"""Transports: addresses, listeners and dialers, and who the peer is.

Schemes: ``vsock://`` (AF_VSOCK), ``hvsock://`` (Firecracker / Cloud Hypervisor hybrid
vsock over Unix sockets), ``unix://``, ``tcp://``, ``tls://`` (URI forms: ``_uri.py``).

A connection's :class:`PeerIdentity` is fixed once, when it is accepted, from facts of the
transport (vsock CID, the hybrid-vsock socket it came in on, Unix peer credentials, peer
address, verified TLS client certificate); nothing the peer sends later changes it.

Modules: ``_uri.py`` (addresses), ``_identity.py`` (:class:`PeerIdentity`),
``_connection.py`` (the :class:`Connection` protocol, :class:`SocketConnection` with
zero-copy ``sendmsg``), ``_tls.py`` (:class:`TlsSettings`, :class:`TlsConnection`, sans-I/O
TLS), ``_vsock.py`` (the one function that makes AF_VSOCK sockets), ``_listen.py``
(:func:`listen`, :func:`connect`, :class:`Listener`), ``_loop.py`` (:func:`run_async`),
``_tasks.py`` (:class:`TaskSet`: tasks with one owner, cheaper than a task group's).
"""

from vshare.transport._connection import Connection, SocketConnection
from vshare.transport._identity import PeerIdentity
from vshare.transport._listen import Handler, Listener, connect, listen
from vshare.transport._loop import run_async
from vshare.transport._tasks import TaskSet
from vshare.transport._tls import TlsConnection, TlsSettings
from vshare.transport._turn import SendTurn
from vshare.transport._uri import DEFAULT_PORT, Address, parse_uri

__all__ = [
    "DEFAULT_PORT",
    "Address",
    "Connection",
    "Handler",
    "Listener",
    "PeerIdentity",
    "SendTurn",
    "SocketConnection",
    "TaskSet",
    "TlsConnection",
    "TlsSettings",
    "connect",
    "listen",
    "parse_uri",
    "run_async",
]
