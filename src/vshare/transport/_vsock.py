"""AF_VSOCK: the one place vsock sockets are made, and the identity an accepted one gives.

Every AF_VSOCK socket of vshare comes from :func:`_vsock_socket`, looked up through this
module at each call (``_vsock._vsock_socket()``), so a test can replace it with a stand-in
(an AF_UNIX socket whose ``accept`` reports a ``(cid, port)`` peer): a development host has
no vsock loopback, and CID 2 is the host's own hypervisor, which tests must never dial.
Everything else here works on any stream socket with ``(cid, port)`` addresses.

Why the CID is an identity: the hypervisor (vhost-vsock, VMware, Hyper-V) assigns each guest
its CID and stamps it on every connection; a guest cannot send from another CID.
"""

from __future__ import annotations

import socket
from typing import Final

from vshare.transport._identity import PeerIdentity

#: The host (hypervisor side) as seen from a guest: what a guest dials.
VMADDR_CID_HOST: Final = 2
_CID_MAX: Final = 0xFFFFFFFF


def _vsock_socket() -> socket.socket:
    """A new AF_VSOCK stream socket. Tests replace this function (see the module note)."""
    return socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)


def vsock_identity(peer: object) -> PeerIdentity:
    """The identity of an accepted vsock connection, from the ``(cid, port)`` peer address
    that ``accept()`` returned.

    Raises:
        ValueError: ``peer`` is not a ``(cid, port)`` pair of integers in range (the socket
            is not a vsock socket): refusing is safer than guessing an identity.
    """
    if (
        not isinstance(peer, tuple)
        or len(peer) != 2
        or not all(type(v) is int and 0 <= v <= _CID_MAX for v in peer)
    ):
        raise ValueError(f"not a vsock peer address: {peer!r}")
    cid, port = peer
    return PeerIdentity("vsock", cid=cid, port=port)
