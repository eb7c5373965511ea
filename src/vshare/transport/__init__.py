"""Transports: addresses, listeners and dialers, and who the peer is.

A connection's :class:`PeerIdentity` is fixed once, when it is accepted, from facts of the
transport (vsock CID, Unix peer credentials, peer address); nothing the peer sends later
changes it.
"""

from vshare.transport._connection import Connection, SocketConnection
from vshare.transport._identity import PeerIdentity
from vshare.transport._listen import Listener, connect, listen
from vshare.transport._uri import Address, parse_uri

__all__ = [
    "Address",
    "Connection",
    "Listener",
    "PeerIdentity",
    "SocketConnection",
    "connect",
    "listen",
    "parse_uri",
]
