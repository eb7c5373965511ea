"""Who is at the other end of a connection, as the transport (not the peer) says.

How each transport fills it in (once, when the connection is accepted):

========  ====================================================================
vsock     ``cid`` (and ``port``): the peer address of the accepted socket, which
          the hypervisor assigns; a guest cannot choose it
hvsock    ``socket_path``: the VM's ``uds_path`` whose ``<uds_path>_<port>``
          listener accepted the connection; only that VM's VMM can connect there
unix      ``uid``, ``gid``, ``pid``: SO_PEERCRED, from the kernel
tcp       ``address``, ``port``: the peer address
tls       ``address``, ``port``, and when the client presented a certificate that
          the configured client CA verified: ``cert_fingerprint`` (SHA-256 of the
          DER certificate, lowercase hex, no colons), ``cert_subject`` (RFC 4514
          string) and ``cert_cn`` (the subject's last commonName)
========  ====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """The transport's facts about a peer. ``kind`` is the transport scheme."""

    kind: str
    cid: int | None = None  # vsock
    socket_path: str | None = None  # hybrid vsock: the VM's socket
    uid: int | None = None  # unix: SO_PEERCRED
    gid: int | None = None
    pid: int | None = None
    address: str | None = None  # tcp/tls peer address
    port: int | None = None
    cert_fingerprint: str | None = None  # tls: SHA-256 of the client certificate
    cert_subject: str | None = None
    cert_cn: str | None = None

    def __str__(self) -> str:
        if self.kind == "vsock":
            return f"vsock cid={self.cid}"
        if self.kind == "hvsock":
            return f"hvsock {self.socket_path}"
        if self.kind == "unix":
            return f"unix uid={self.uid} gid={self.gid} pid={self.pid}"
        text = f"{self.kind} {self.address}:{self.port}"
        if self.cert_fingerprint:
            text += f" cert={self.cert_fingerprint[:16]}…"
        return text
