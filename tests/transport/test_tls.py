"""TLS: sans-I/O TlsConnection over real loopback sockets, certificates from trustme.

What must hold: a client certificate is required when a client CA is configured (none, or
one from another CA, is refused); the identity carries the verified certificate's
fingerprint, subject and CN; large and concurrent transfers arrive intact; a silent client
cannot hold the handshake; bad settings are one-line errors.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest

from vshare.transport import Connection, Listener, PeerIdentity, TlsSettings, connect, listen
from vshare.transport._tls import common_name, rfc4514_subject

from .certs import Certs

pytestmark = pytest.mark.anyio


def server_settings(certs: Certs, *, client_ca: bool = True, timeout: float = 10.0) -> TlsSettings:
    return TlsSettings(
        cert=certs.server.cert,
        key=certs.server.key,
        ca=certs.ca if client_ca else None,
        handshake_timeout=timeout,
    )


@asynccontextmanager
async def echo_server(settings: TlsSettings) -> AsyncIterator[tuple[int, list[PeerIdentity]]]:
    """A TLS listener on 127.0.0.1 whose handler records identities and echoes."""
    lst: Listener = listen("tls://127.0.0.1:0", tls=settings)
    seen: list[PeerIdentity] = []

    async def echo(conn: Connection) -> None:
        seen.append(conn.identity)
        try:
            while data := await conn.receive(1 << 20):
                await conn.send([data])
        finally:
            await conn.aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lst.serve, echo, tg)
        try:
            yield lst.bound.port, seen
        finally:
            tg.cancel_scope.cancel()
            lst.close()


def client(certs: Certs, leaf: str | None = "a", **kw: object) -> TlsSettings:
    chosen = {"a": certs.client_a, "b": certs.client_b, "stranger": certs.stranger}.get(leaf or "")
    return TlsSettings(
        cert=chosen.cert if chosen else None,
        key=chosen.key if chosen else None,
        ca=certs.ca,
        **kw,  # type: ignore[arg-type]
    )


async def test_verified_client_identity_and_echo(certs: Certs) -> None:
    async with echo_server(server_settings(certs)) as (port, seen):
        conn = await connect(f"tls://127.0.0.1:{port}", tls=client(certs, "a"))
        await conn.send([b"head", b"", memoryview(b"payload")])
        got = b""
        while len(got) < 11:
            got += await conn.receive(100)
        assert got == b"headpayload"
        await conn.aclose()
    (ident,) = seen
    assert ident.kind == "tls" and ident.address == "127.0.0.1" and ident.port
    assert ident.cert_fingerprint == certs.client_a.fingerprint
    assert ident.cert_cn == "vm-a"
    assert ident.cert_subject is not None and ident.cert_subject.startswith("CN=vm-a,")
    assert "cert=" + certs.client_a.fingerprint[:16] in str(ident)


async def test_large_transfers_both_ways_at_once(certs: Certs) -> None:
    """Sending 4 MiB while the echo comes back: the send and receive paths interleave on
    one TLS state machine and one socket, and every byte arrives in order."""
    blob = os.urandom(4 << 20)
    async with echo_server(server_settings(certs)) as (port, _):
        conn = await connect(f"tls://127.0.0.1:{port}", tls=client(certs, "b"))
        received = bytearray()

        async def reader() -> None:
            while len(received) < len(blob):
                data = await conn.receive(1 << 20)
                assert data, "the server closed early"
                received.extend(data)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                view = memoryview(blob)
                for offset in range(0, len(blob), 1 << 20):  # 1 MiB parts, as Rread sends
                    await conn.send(
                        [view[offset : offset + 11], view[offset + 11 : offset + (1 << 20)]]
                    )
        await conn.aclose()
    assert bytes(received) == blob


@pytest.mark.parametrize("leaf", [None, "stranger"])
async def test_client_without_a_trusted_certificate_is_refused(
    certs: Certs, leaf: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    async with echo_server(server_settings(certs)) as (port, seen):
        with caplog.at_level(logging.WARNING, "vshare.transport"), anyio.fail_after(10):
            # With TLS 1.3 the client may finish its side before the server refuses the
            # certificate; then the refusal arrives as the end of the stream.
            try:
                conn = await connect(f"tls://127.0.0.1:{port}", tls=client(certs, leaf))
            except OSError:
                pass
            else:
                await conn.send([b"hello?"])
                assert await conn.receive(100) == b""
                await conn.aclose()
            while "TLS handshake" not in caplog.text:
                await anyio.sleep(0.01)
    assert seen == []  # the handler never ran
    assert "certificate" in caplog.text


async def test_client_checks_the_server(certs: Certs) -> None:
    async with echo_server(server_settings(certs)) as (port, seen):
        # A client that trusts another CA refuses this server.
        settings = TlsSettings(cert=certs.client_a.cert, key=certs.client_a.key, ca=certs.other_ca)
        with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
            await connect(f"tls://127.0.0.1:{port}", tls=settings)
        # ... and so does one expecting another name.
        with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
            await connect(f"tls://127.0.0.1:{port}", tls=client(certs, "a", server_name="other"))
    assert seen == []


async def test_without_a_client_ca_no_certificate_is_asked(certs: Certs) -> None:
    async with echo_server(server_settings(certs, client_ca=False)) as (port, seen):
        conn = await connect(f"tls://127.0.0.1:{port}", tls=client(certs, None))
        await conn.send([b"x"])
        assert await conn.receive(10) == b"x"
        await conn.aclose()
    assert seen[0].cert_fingerprint is None and seen[0].cert_cn is None


@pytest.mark.parametrize("garbage", [b"", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"])
async def test_silent_or_garbage_client_cannot_hold_the_handshake(
    certs: Certs, garbage: bytes
) -> None:
    async with echo_server(server_settings(certs, timeout=0.3)) as (port, seen):
        raw = socket.create_connection(("127.0.0.1", port))
        raw.sendall(garbage)
        raw.settimeout(5)
        start = anyio.current_time()
        data = await anyio.to_thread.run_sync(raw.recv, 4096)
        while data:  # an alert, then the end
            data = await anyio.to_thread.run_sync(raw.recv, 4096)
        assert anyio.current_time() - start < 4
        raw.close()
    assert seen == []


def test_settings_mistakes_are_one_line(certs: Certs, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    cases = [
        (TlsSettings(), "needs a certificate"),
        (TlsSettings(cert="/nonexistent.pem", key=certs.server.key), "/nonexistent.pem"),
        (TlsSettings(cert=str(junk), key=certs.server.key), "not usable PEM"),
        (TlsSettings(cert=certs.server.cert, key=certs.client_a.key), "not usable PEM"),
        (TlsSettings(cert=certs.server.cert, key=certs.server.key, ca="/no-ca.pem"), "client CA"),
    ]
    for settings, phrase in cases:
        with pytest.raises(ValueError) as info:
            settings.server_context()
        assert phrase in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="key without a certificate"):
        TlsSettings(key=certs.client_a.key).client_context()


async def test_tls_listen_without_settings_is_refused() -> None:
    with pytest.raises(ValueError, match="certificate"):
        listen("tls://127.0.0.1:0")


def test_rfc4514_subject() -> None:
    subject = (
        (("countryName", "DE"),),
        (("organizationName", "Acme, Inc."),),
        (("organizationalUnitName", "a+b"), ("userId", "7")),
        (("commonName", " lead#"),),
    )
    assert rfc4514_subject(subject) == "CN=\\ lead#,OU=a\\+b+UID=7,O=Acme\\, Inc.,C=DE"
    assert common_name(subject) == " lead#"
    assert common_name(((("countryName", "DE"),),)) is None
