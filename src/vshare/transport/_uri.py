"""Transport URIs: ``unix:///path``, ``tcp://host:port``, ``vsock://cid:port``, ..."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

DEFAULT_PORT: Final = 564
SCHEMES: Final = ("unix", "tcp", "vsock", "hvsock", "tls")


@dataclass(frozen=True, slots=True)
class Address:
    scheme: str
    host: str = ""  # tcp/tls host, vsock CID ("any" to listen on all)
    port: int = DEFAULT_PORT
    path: str = ""  # unix / hvsock socket path

    def __str__(self) -> str:
        if self.scheme in ("unix", "hvsock"):
            return f"{self.scheme}://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_uri(uri: str) -> Address:
    """Parse a transport URI.

    Raises:
        ValueError: with a one-line message saying what is wrong.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"{uri!r}: scheme must be one of {', '.join(SCHEMES)}")
    if scheme in ("unix", "hvsock"):
        path = parts.path if not parts.netloc else "/" + parts.netloc + parts.path
        if not path:
            raise ValueError(f"{uri!r}: a {scheme} address needs a socket path")
        return Address(scheme, path=path)
    if not parts.hostname:
        raise ValueError(f"{uri!r}: needs a host (for vsock: a CID or 'any')")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError(f"{uri!r}: the port is not a number from 0 to 65535") from None
    host = parts.hostname
    if scheme == "vsock" and host != "any" and not host.isdigit():
        raise ValueError(f"{uri!r}: a vsock host is a CID number or 'any'")
    return Address(scheme, host=host, port=port)
