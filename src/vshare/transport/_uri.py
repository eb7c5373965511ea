"""Transport URIs.

==================================================  =====================================
``unix:///run/vshare/gateway.sock``                 a Unix socket (host-local tools)
``tcp://HOST:PORT``                                 TCP (default port 564)
``tls://HOST:PORT``                                 TLS over TCP (default port 564)
``vsock://CID:PORT``                                AF_VSOCK; listen on ``vsock://any:564``;
                                                    a guest dials ``vsock://2:564``
``hvsock:///run/vshare/vm-1.vsock``                 hybrid vsock (Firecracker, Cloud
                                                    Hypervisor): the VM's ``uds_path``
``hvsock:///run/vshare/vm-1.vsock?port=1234``       the same, with a vsock port other
                                                    than 564
==================================================  =====================================

An ``hvsock`` URI names the VM's *own* socket (the VMM's ``uds_path``), not the socket the
gateway binds: the VMM forwards a guest's connection to host port P to the Unix socket
``<uds_path>_<P>``, so a gateway listening on ``hvsock:///run/vm-1.vsock`` binds
``/run/vm-1.vsock_564`` (:attr:`Address.listen_path`), and a host tool dialing it connects
to ``/run/vm-1.vsock`` and asks the VMM for guest port 564.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, urlsplit

DEFAULT_PORT: Final = 564
SCHEMES: Final = ("unix", "tcp", "vsock", "hvsock", "tls")
#: ``socket.VMADDR_CID_ANY``: listen on every CID of this host.
VMADDR_CID_ANY: Final = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Address:
    scheme: str
    host: str = ""  # tcp/tls host, vsock CID ("any" to listen on all)
    port: int = DEFAULT_PORT  # tcp/tls port, vsock port, hvsock guest port
    path: str = ""  # unix socket path; hvsock: the VM's uds_path

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        if self.scheme == "hvsock":
            query = "" if self.port == DEFAULT_PORT else f"?port={self.port}"
            return f"hvsock://{self.path}{query}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def cid(self) -> int:
        """A vsock address's CID (:data:`VMADDR_CID_ANY` for ``any``)."""
        if self.scheme != "vsock":
            raise ValueError(f"{self}: not a vsock address")
        return VMADDR_CID_ANY if self.host == "any" else int(self.host)

    @property
    def listen_path(self) -> str:
        """The Unix socket a listener binds: ``path`` itself for unix, and for hvsock the
        ``<uds_path>_<port>`` socket the VMM forwards the guest's connections to."""
        if self.scheme == "hvsock":
            return f"{self.path}_{self.port}"
        if self.scheme == "unix":
            return self.path
        raise ValueError(f"{self}: not a Unix socket address")


def _port(uri: str, text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 0xFFFFFFFF:
        raise ValueError(f"{uri!r}: the port {text!r} is not a number from 0 to 4294967295")
    return int(text)


def parse_uri(uri: str) -> Address:
    """Parse a transport URI (forms: see the module docstring).

    Raises:
        ValueError: with a one-line message saying what is wrong.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"{uri!r}: scheme must be one of {', '.join(SCHEMES)}")
    if parts.fragment:
        raise ValueError(f"{uri!r}: a transport address has no '#' part")
    if parts.query and scheme != "hvsock":
        raise ValueError(f"{uri!r}: a {scheme} address takes no '?' options")
    if scheme in ("unix", "hvsock"):
        path = parts.path if not parts.netloc else "/" + parts.netloc + parts.path
        if not path:
            raise ValueError(f"{uri!r}: a {scheme} address needs a socket path")
        if "\0" in path:
            raise ValueError(f"{uri!r}: a socket path cannot contain NUL")
        port = DEFAULT_PORT
        for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
            if key != "port":
                raise ValueError(f"{uri!r}: the only hvsock option is port=N, not {key!r}")
            port = _port(uri, value)
        return Address(scheme, path=path, port=port)
    if not parts.hostname:
        raise ValueError(f"{uri!r}: needs a host (for vsock: a CID or 'any')")
    host = parts.hostname
    if scheme == "vsock":
        # urlsplit's .port stops at 65535; vsock ports are 32-bit.
        _, sep, port_text = parts.netloc.rpartition(":")
        port = _port(uri, port_text) if sep else DEFAULT_PORT
        if host != "any" and not (host.isdigit() and int(host) < VMADDR_CID_ANY):
            raise ValueError(f"{uri!r}: a vsock host is a CID number (below 2**32-1) or 'any'")
        return Address(scheme, host=host, port=port)
    try:
        port = parts.port if parts.port is not None else DEFAULT_PORT
    except ValueError:
        raise ValueError(f"{uri!r}: the port is not a number from 0 to 65535") from None
    return Address(scheme, host=host, port=port)
