"""Certificates for TLS tests, made with trustme: one CA for servers and clients, another
CA nobody trusts, a server certificate for 127.0.0.1, and client certificates."""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Leaf:
    cert: str  # PEM certificate chain
    key: str  # PEM private key
    fingerprint: str  # SHA-256 of the DER certificate, lowercase hex
    common_name: str


@dataclass(frozen=True)
class Certs:
    ca: str  # the CA everyone here trusts (servers and client certificates)
    server: Leaf
    client_a: Leaf
    client_b: Leaf
    stranger: Leaf  # a client certificate from a CA nobody trusts
    other_ca: str


def _leaf(ca: trustme.CA, directory: Path, name: str, *identities: str) -> Leaf:
    issued = ca.issue_cert(*identities, common_name=name)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    der = ssl.PEM_cert_to_DER_cert(issued.cert_chain_pems[0].bytes().decode())
    return Leaf(str(cert), str(key), hashlib.sha256(der).hexdigest(), name)


def make_certs(directory: Path) -> Certs:
    ca, other = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    other.cert_pem.write_to_path(str(directory / "other-ca.pem"))
    return Certs(
        ca=str(directory / "ca.pem"),
        server=_leaf(ca, directory, "gateway", "127.0.0.1", "localhost"),
        client_a=_leaf(ca, directory, "vm-a", "vm-a.example"),
        client_b=_leaf(ca, directory, "vm-b", "vm-b.example"),
        stranger=_leaf(other, directory, "stranger", "stranger.example"),
        other_ca=str(directory / "other-ca.pem"),
    )
