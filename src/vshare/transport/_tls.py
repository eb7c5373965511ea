"""TLS: settings, contexts, and a :class:`Connection` that runs TLS sans-I/O.

Why not ``ssl.SSLSocket``: :class:`SocketConnection` sends replies with ``sendmsg`` of the
caller's buffers (no copy in Python), which an SSL socket cannot do, and an SSL socket's
blocking-style API fits poorly with anyio's readiness waits. :class:`TlsConnection` keeps
the TLS state machine (``ssl.SSLObject`` from ``SSLContext.wrap_bio``) apart from the I/O:
ciphertext goes between the socket and two ``ssl.MemoryBIO`` buffers, and the connection
moves it when the state machine asks (``SSLWantReadError``: read more from the socket).

Concurrency: one task receives while another sends (a session's reader and its reply
tasks). Both may produce ciphertext (a receive can produce a TLS 1.3 KeyUpdate reply), so
all writes to the socket go through one lock, and whoever holds it drains the outgoing BIO
in order: records leave in the order the state machine made them. Renegotiation is off
and TLS 1.2 is the minimum, so a send never has to wait for a receive.

The server handshake runs in the listener's per-connection task (never in the accept
loop), bounded by :attr:`TlsSettings.handshake_timeout`, so a silent client cannot hold a
connection slot. When a client CA is configured, a client certificate is required and
verified (``CERT_REQUIRED``); the connection's identity then carries the certificate's
SHA-256 fingerprint, subject and common name.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, TypeVar

import anyio

from vshare.transport._connection import FileRange
from vshare.transport._identity import PeerIdentity

log = logging.getLogger("vshare.transport")

Buffer = bytes | bytearray | memoryview
T = TypeVar("T")
#: ``anyio.wait_readable`` or ``anyio.wait_writable``.
_Wait = Callable[[socket.socket], Awaitable[None]]

#: Bytes read from the socket per refill of the incoming BIO.
_RECV_CHUNK: Final = 256 * 1024
#: Parts up to this size are joined into one record; larger ones are written as they are.
_JOIN_BELOW: Final = 16 * 1024

#: getpeercert() attribute names → RFC 4514 short names.
_SHORT_NAMES: Final = {
    "commonName": "CN",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Files and limits of one side of a TLS connection (PEM files; paths, not contents).

    Server (``listen("tls://...")``): ``cert`` is required, and ``key`` unless the key is
    in the ``cert`` file; with ``ca`` (the client CA), every client must present a
    certificate that CA signed.
    Client (``connect("tls://...")``): ``ca`` verifies the server (the system's CAs when
    None); ``cert`` and ``key`` are the client's own certificate, when the server asks for
    one; ``server_name`` is the name the server certificate must carry (default: the host
    of the URI, an IP address included).
    """

    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    server_name: str | None = None
    handshake_timeout: float = 10.0

    def server_context(self) -> ssl.SSLContext:
        """A server context: TLS 1.2+, no renegotiation, client certificates required when
        a client CA is set.

        Raises:
            ValueError: a file is missing or unreadable, or holds no usable PEM data
                (one line, naming the file).
        """
        if not self.cert:
            raise ValueError("tls: a TLS listener needs a certificate (tls_cert)")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._harden(ctx)
        self._load_own_certificate(ctx)
        if self.ca:
            _load(ctx.load_verify_locations, "client CA", self.ca, self.ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A client context that verifies the server's certificate and name.

        Raises:
            ValueError: as :meth:`server_context`.
        """
        if self.ca:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
            _load(ctx.load_verify_locations, "CA", self.ca, self.ca)
        else:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self._harden(ctx)
        if self.key and not self.cert:
            raise ValueError("tls: a key without a certificate")
        if self.cert:
            self._load_own_certificate(ctx)
        return ctx

    def _load_own_certificate(self, ctx: ssl.SSLContext) -> None:
        where = f"{self.cert} (key {self.key})" if self.key else f"{self.cert}"
        _load(ctx.load_cert_chain, "certificate", where, self.cert, self.key)

    @staticmethod
    def _harden(ctx: ssl.SSLContext) -> None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.options |= ssl.OP_NO_RENEGOTIATION


def _load(fn: Callable[..., Any], what: str, path: str, *args: Any) -> None:
    try:
        fn(*args)
    except ssl.SSLError as exc:
        raise ValueError(f"tls: {what} {path}: not usable PEM ({exc.reason or exc})") from None
    except OSError as exc:
        raise ValueError(f"tls: {what} {path}: {exc.strerror or exc}") from None


def _escape_rdn_value(value: str) -> str:
    out = "".join("\\" + ch if ch in '\\,+"<>;=' else ch for ch in value).replace("\0", "\\00")
    if out.startswith(("#", " ")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def rfc4514_subject(subject: Sequence[Sequence[tuple[str, str]]]) -> str:
    """``getpeercert()["subject"]`` as an RFC 4514 string (most specific RDN first)."""
    rdns = []
    for rdn in reversed(subject):
        rdns.append("+".join(f"{_SHORT_NAMES.get(k, k)}={_escape_rdn_value(v)}" for k, v in rdn))
    return ",".join(rdns)


def common_name(subject: Sequence[Sequence[tuple[str, str]]]) -> str | None:
    """The most specific commonName of a subject, or None."""
    for rdn in reversed(subject):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


class TlsConnection:
    """TLS over a connected non-blocking stream socket (see the module note).

    Call :meth:`handshake` before anything else. ``identity`` is the transport's; on the
    server side the handshake adds the client certificate's facts to it.
    """

    #: The bytes are encrypted in this process: a file is read, not handed to the kernel.
    sends_files = False

    def __init__(
        self,
        sock: socket.socket,
        context: ssl.SSLContext,
        identity: PeerIdentity,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=None if server_side else server_hostname,
        )
        self._server_side = server_side
        self._wire = anyio.Lock()  # one writer of ciphertext at a time, in BIO order
        self._closed = False
        self.identity = identity

    @property
    def socket(self) -> socket.socket:
        return self._sock

    @property
    def peer_certificate(self) -> bytes | None:
        """The peer's certificate (DER) after the handshake, if it sent one."""
        return self._tls.getpeercert(binary_form=True)

    async def handshake(self) -> None:
        """Run the TLS handshake; on the server side, fill in the certificate facts.

        Raises:
            ssl.SSLError: the peer was refused (no certificate, an unknown CA, a bad name,
                no common protocol) or spoke something else than TLS.
            OSError: the connection failed (``ConnectionResetError`` on EOF).
        """
        await self._until_done(self._tls.do_handshake)
        if self._server_side:
            der = self._tls.getpeercert(binary_form=True)
            if der is not None:
                subject = self._tls.getpeercert().get("subject", ())  # type: ignore[union-attr]
                self.identity = PeerIdentity(
                    "tls",
                    address=self.identity.address,
                    port=self.identity.port,
                    cert_fingerprint=hashlib.sha256(der).hexdigest(),
                    cert_subject=rfc4514_subject(subject),  # type: ignore[arg-type]
                    cert_cn=common_name(subject),  # type: ignore[arg-type]
                )

    async def receive_into(self, buf: memoryview) -> int:
        """Plaintext is decrypted into a buffer of ssl's first: copied into ``buf``."""
        data = await self.receive(len(buf))
        buf[: len(data)] = data
        return len(data)

    async def receive(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of plaintext; ``b""`` when the peer closed (cleanly or not)
        or broke the TLS protocol: either way the stream is over."""
        while True:
            try:
                data = self._tls.read(max_bytes)
                break
            except ssl.SSLWantReadError:
                try:
                    await self._flush()  # e.g. the reply to a KeyUpdate
                    await self._fill()
                except OSError:
                    return b""
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            except ssl.SSLError as exc:
                log.debug("tls: %s: receive: %s", self.identity, exc)
                return b""
        # Take whatever else is already decryptable, so one receive carries many records.
        chunks = [data]
        total = len(data)
        while total < max_bytes and (self._tls.pending() or self._incoming.pending):
            try:
                more = self._tls.read(max_bytes - total)
            except ssl.SSLError:
                break  # WantRead, EOF or an error: the next receive() sees it
            if not more:
                break
            chunks.append(more)
            total += len(more)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def send_file(self, span: FileRange) -> None:
        """The span's bytes are encrypted here, so read here (callers send only spans
        whose pages are cached: no wait), then zeros to its count if the file shrank."""
        data = os.pread(span.fd, span.count, span.offset)
        await self.send([data, bytes(span.count - len(data))])

    async def send(self, parts: Sequence[Buffer]) -> None:
        """Encrypt and send all of ``parts`` in order. Callers serialize their sends.

        Raises:
            OSError: the connection is broken (``ssl.SSLError`` is an ``OSError``).
        """
        live = [p for p in parts if len(p)]
        if len(live) > 1 and sum(len(p) for p in live) <= _JOIN_BELOW:
            live = [b"".join(live)]  # one record instead of several small ones
        for part in live:
            try:
                self._tls.write(part)
            except ssl.SSLWantReadError:
                # Cannot happen without renegotiation (TLS 1.2+ with it disabled).
                raise ConnectionResetError("tls: a send needed a receive") from None
        await self._flush()

    async def aclose(self) -> None:
        """Send close_notify if the socket takes it at once, then close. Never blocks."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ssl.SSLError, OSError, ValueError):
            self._tls.unwrap()  # WantRead: the peer's close_notify is not awaited
        data = self._outgoing.read()
        with contextlib.suppress(OSError):
            if data:
                self._sock.send(data)
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    # --- moving ciphertext ----------------------------------------------------------

    async def _until_done(self, op: Callable[[], T]) -> T:
        while True:
            try:
                result = op()
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()
                continue
            await self._flush()
            return result

    async def _when_ready(self, op: Callable[[], T], wait: _Wait) -> T:
        """``op()`` on the non-blocking socket, retried after ``wait(socket)`` (readable,
        writable) for as long as it would block."""
        while True:
            try:
                return op()
            except (BlockingIOError, InterruptedError):
                await wait(self._sock)

    async def _fill(self) -> None:
        """Read ciphertext from the socket into the incoming BIO (EOF marks it)."""
        if self._incoming.eof:
            raise ConnectionResetError("tls: the peer closed the connection")
        try:
            data = await self._when_ready(
                partial(self._sock.recv, _RECV_CHUNK), anyio.wait_readable
            )
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            data = b""
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    async def _flush(self) -> None:
        """Send everything the state machine has produced, in order."""
        async with self._wire:
            data = self._outgoing.read()
            view = memoryview(data)
            while view:
                sent = await self._when_ready(partial(self._sock.send, view), anyio.wait_writable)
                view = view[sent:]
