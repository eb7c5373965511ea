"""An async 9P2000.L client over one connection.

One reader task routes replies to waiting requests by tag, so many requests can be in
flight at once. Errors come back as ``OSError`` with the server's errno; a lost connection
is :class:`ConnectionLost` (an ``OSError`` with ECONNRESET), so that callers that can
reconnect (:mod:`._share`) tell "the server said no" from "we do not know what happened".
Fids are numbers handed out by :meth:`Client.new_fid` and recycled after Tclunk/Tremove.

A request abandoned before its reply (its task was cancelled) keeps its tag reserved until
the reply arrives, so a late reply can never be taken for the answer to a newer request.

A reply the client cannot use fails its request, never leaves it waiting: 9P2000's
``Rerror`` (NFS-Ganesha's 9P server answers some 9P2000.L requests so) becomes the
``OSError`` of the errno it carries; a reply we cannot decode, or of the wrong type for its
request, becomes EIO, and a reply to no request is dropped. Each of those but Rerror is a
protocol violation, logged; after :data:`MAX_VIOLATIONS` of them the connection is closed
as broken, so that a caller that reconnects (:mod:`._share`) does.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from typing import TypeVar

import anyio
import anyio.abc

from vshare.protocol import (
    MESSAGE_TYPES,
    NOFID,
    NOTAG,
    RERROR,
    TYPE_NUMBERS,
    VERSION_9P2000_L,
    VERSION_VSHARE,
    VERSION_VSHARE_2,
    VERSION_VSHARE_3,
    VERSION_VSHARE_4,
    VERSION_VSHARE_5,
    FrameDecoder,
    Message,
    Qid,
    Rattach,
    RemoteProtocolError,
    Rlerror,
    Rversion,
    Tattach,
    Tclunk,
    Tflush,
    Tversion,
    Undecodable,
    encode_parts,
    rerror_errno,
)
from vshare.transport import Connection, SendTurn, TlsSettings, connect

M = TypeVar("M", bound=Message)
log = logging.getLogger("vshare.client")
#: Requests in flight at most, by default (see ``Client.max_inflight``).
MAX_INFLIGHT = 128
#: Bytes a receive asks for when no large reply is being received into its own frame: many
#: small replies at once, or the start of a large one.
_RECEIVE = 64 * 1024
#: Times a request refused with EAGAIN is sent again (pauses of 1, 2, 4... ms: 0.25 s).
_EAGAIN_TRIES = 8
#: Protocol violations (replies undecodable, of the wrong type, or to no request) a
#: connection survives: one may be a server bug on one odd request, and failing that request
#: is enough; a server that keeps doing it is not speaking our protocol, and a fresh
#: connection (or the next gateway) is the best chance left.
MAX_VIOLATIONS = 8


class ConnectionLost(ConnectionResetError):
    """The connection died with this request in flight or before it was sent: its fate
    on the server is unknown."""

    def __init__(self, detail: str) -> None:
        super().__init__(errno.ECONNRESET, f"connection lost: {detail}")


class _Failed:
    """The reply to one request was an error other than Rlerror (``error``): that request
    fails with it, the connection stays."""

    __slots__ = ("error",)

    def __init__(self, error: OSError) -> None:
        self.error = error


class _Pending:
    __slots__ = ("event", "expect", "reply")

    def __init__(self, event_type: type[anyio.Event], expect: type[Message] | None = None) -> None:
        self.event = event_type()
        #: The reply type the request calls for (None: any).
        self.expect = expect
        #: The reply; a BaseException when the connection died first.
        self.reply: Message | _Failed | BaseException | None = None


#: The vshare versions, each implying those before it.
_VSHARE = (VERSION_VSHARE_5, VERSION_VSHARE_4, VERSION_VSHARE_3, VERSION_VSHARE_2, VERSION_VSHARE)


def _reply_type(msg: Message) -> type[Message] | None:
    """The R-message that answers ``msg`` (type number one above it), besides Rlerror."""
    return MESSAGE_TYPES.get(TYPE_NUMBERS[type(msg)] + 1)


class Client:
    def __init__(self, conn: Connection, msize: int) -> None:
        self.conn = conn
        self.msize = msize
        self._pending: dict[int, _Pending] = {}
        self._free_tags = list(range(0xFFFE, -1, -1))
        self._next_fid = 0
        self._free_fids: list[int] = []
        self._send_turn = SendTurn()  # no getpid() per send, as anyio.Lock makes
        self._dead: BaseException | None = None
        #: Tags of requests whose caller gave up (cancelled): reserved until their reply.
        self._abandoned: set[int] = set()
        #: Tags of Tclunks sent without waiting → their fid, free again at the reply.
        self._unwaited_clunks: dict[int, int] = {}
        #: The server keeps requests on one fid in order (see ``VERSION_VSHARE``): only
        #: then does :meth:`pipeline` send dependent requests without waiting.
        self.ordered = False
        #: Whether the server answers Treaddirplus (it agreed to ``VERSION_VSHARE_2``).
        self.readdirplus = False
        #: Whether the server offers the change feed, Twatch (``VERSION_VSHARE_3``).
        self.feed = False
        #: Whether the server answers Tlcreateat and Twalkopen (``VERSION_VSHARE_4``).
        self.opens_new_fids = False
        #: Whether the server answers Tfallocate (``VERSION_VSHARE_5``).
        self.fallocates = False
        #: Requests this client has in flight at most (waited, unwaited and abandoned
        #: alike): under the gateway's bound per session (256), which answers EAGAIN past
        #: it — an unwaited Tclunk refused so would leave its fid open there.
        self.max_inflight = MAX_INFLIGHT
        self._slot_freed: anyio.Event | None = None
        #: Fids whose unwaited Tclunk was refused (EAGAIN): clunked again before the next
        #: request.
        self._clunk_again: list[int] = []
        self._clunks_refused = anyio.Event()
        #: The running event loop's Event class: made directly, an Event per request
        #: costs a third of ``anyio.Event()``, which looks the loop up each time.
        self._event_type = type(self._clunks_refused)
        #: Replies since the last EAGAIN: each 64 lets :attr:`max_inflight` grow by one.
        self._calm = 0
        #: Protocol violations seen on this connection (see :data:`MAX_VIOLATIONS`).
        self.violations = 0

    @property
    def alive(self) -> bool:
        return self._dead is None

    # --- plumbing ----------------------------------------------------------------------

    async def _reader(self) -> None:
        # A large reply (a read's data) is received into its own frame, allocated whole
        # once its size is read: no chunk allocated per receive, no chunks joined.
        decoder = FrameDecoder(msize=self.msize, accept="R", whole_frames=True)
        try:
            while True:
                room = decoder.room(_RECEIVE)
                if room is not None:
                    n = await self.conn.receive_into(room)
                    room.release()
                    if n:
                        decoder.received(n)
                else:
                    data = await self.conn.receive(_RECEIVE)
                    n = len(data)
                    decoder.feed(data)
                if not n:
                    raise ConnectionResetError(errno.ECONNRESET, "the server closed the connection")
                for tag, frame in decoder.frames():
                    msg = self._usable(tag, frame)
                    refused = (isinstance(msg, Rlerror) and msg.ecode == errno.EAGAIN) or (
                        isinstance(msg, _Failed) and msg.error.errno == errno.EAGAIN
                    )
                    self._pace(refused)
                    pending = self._pending.get(tag)
                    if pending is None and tag in self._unwaited_clunks:
                        fid = self._unwaited_clunks.pop(tag)
                        self._free_tags.append(tag)
                        if refused:
                            self._clunk_again.append(fid)  # not carried out: still open
                            self._clunks_refused.set()
                        else:
                            self.release_fid(fid)
                        continue
                    if pending is None and tag in self._abandoned:
                        self._abandoned.discard(tag)
                        self._free_tags.append(tag)
                        continue
                    if pending is None:
                        self._violation(f"reply {_name(frame)} for tag {tag}, which no request has")
                        continue
                    if (
                        pending.expect is not None
                        and isinstance(msg, Message)
                        and type(msg) is not pending.expect
                        and type(msg) is not Rlerror
                    ):
                        self._violation(
                            f"{type(msg).__name__} answers a request that wants "
                            f"{pending.expect.__name__} (tag {tag})"
                        )
                        msg = _Failed(OSError(errno.EIO, f"unexpected {type(msg).__name__}"))
                    pending.reply = msg
                    pending.event.set()
                self._freed()
        except (OSError, RemoteProtocolError) as exc:
            self._fail(exc)
        except BaseException as exc:
            self._fail(ConnectionAbortedError(errno.ECONNABORTED, "client closed"))
            raise exc

    def _usable(self, tag: int, frame: Message | Undecodable) -> Message | _Failed:
        """A decoded reply as it is; an undecodable one as the error its request gets."""
        if not isinstance(frame, Undecodable):
            return frame
        if frame.msg_type == RERROR:
            code = rerror_errno(frame.body)
            # Not counted as a violation: an error reply in 9P2000's form still says what
            # went wrong, and servers that send it (NFS-Ganesha) send it for ordinary errors.
            log.debug("tag %d: Rerror (9P2000) with errno %d", tag, code)
            return _Failed(OSError(code, os.strerror(code)))
        self._violation(f"undecodable reply for tag {tag}: {frame.error}")
        return _Failed(OSError(errno.EIO, f"undecodable reply: {frame.error}"))

    def _violation(self, what: str) -> None:
        """Log a reply we cannot use; past :data:`MAX_VIOLATIONS`, give up on the server."""
        self.violations += 1
        log.warning(
            "9P server broke the protocol (%d/%d): %s", self.violations, MAX_VIOLATIONS, what
        )
        if self.violations >= MAX_VIOLATIONS:
            raise RemoteProtocolError(
                f"closing the connection: {self.violations} replies broke the protocol"
                f" (last: {what})"
            )

    def _fail(self, exc: BaseException) -> None:
        self._dead = exc
        for pending in self._pending.values():
            pending.reply = exc
            pending.event.set()
        self._freed()
        self._clunks_refused.set()  # its task ends with the connection

    def _pace(self, refused: bool) -> None:
        """A server that refuses requests for having too many in flight (EAGAIN) gets
        half as many from now on; it gets one more after every 64 replies that were not
        refusals, up to ``MAX_INFLIGHT``."""
        if refused:
            self.max_inflight = max(1, self.max_inflight // 2)
            self._calm = 0
        elif self.max_inflight < MAX_INFLIGHT:
            self._calm += 1
            if self._calm >= 64:
                self.max_inflight += 1
                self._calm = 0

    async def _resend_clunks(self) -> None:
        """Send again the unwaited Tclunks the server refused (EAGAIN), so that no fid we
        gave back stays open there. Runs beside :meth:`_reader`, as long as it does."""
        while self.alive:
            await self._clunks_refused.wait()
            self._clunks_refused = anyio.Event()
            await anyio.sleep(0.001)  # let what is in flight drain first
            while self._clunk_again and self.alive:
                await self.clunk_nowait(self._clunk_again.pop())

    def _in_flight(self) -> int:
        return len(self._pending) + len(self._unwaited_clunks) + len(self._abandoned)

    def _freed(self) -> None:
        event, self._slot_freed = self._slot_freed, None
        if event is not None:
            event.set()

    async def _room_for(self, count: int) -> None:
        """Wait until ``count`` more requests stay within :attr:`max_inflight`, then send
        the Tclunks refused earlier."""
        count = min(count, self.max_inflight)
        while self._dead is None and self._in_flight() + count > self.max_inflight:
            if self._slot_freed is None:
                self._slot_freed = anyio.Event()
            await self._slot_freed.wait()
        while self._clunk_again and self._dead is None:
            await self.clunk_nowait(self._clunk_again.pop())

    async def send_frame(self, parts: tuple[bytes | bytearray | memoryview, ...]) -> None:
        """Send encoded requests in one write; a failed send is :class:`ConnectionLost`."""
        await self._send_turn.acquire()
        try:
            await self.conn.send(parts)
        except OSError as exc:
            # What was sent of the frame is unknown: the connection is no longer usable.
            # Failing it ends its reader, so the session's keeper reconnects (a send
            # error alone used to leave a live-looking connection nobody used again).
            lost = ConnectionLost(str(exc))
            self._fail(lost)
            sock = getattr(self.conn, "socket", None)
            if isinstance(sock, socket.socket):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # the reader sees the end
            raise lost from exc
        finally:
            self._send_turn.release()

    def _check_alive(self) -> None:
        if self._dead is not None:
            raise ConnectionLost(str(self._dead))

    def _end_wait(self, tag: int, pending: _Pending) -> None:
        """A request's wait is over (answered, failed or cancelled): its tag is free again,
        unless the reply may still come (cancelled on a live connection): then the tag
        stays reserved until it does (:meth:`_reader` frees it)."""
        del self._pending[tag]
        if pending.reply is None and self._dead is None:
            self._abandoned.add(tag)
        else:
            self._free_tags.append(tag)

    async def rpc(self, msg: Message, tag: int | None = None) -> Message:
        """Send a request, wait for its reply. Rlerror becomes ``OSError``. EAGAIN (a
        server's bound on requests in flight: it did not carry the request out) is tried
        again after a pause, a few times."""
        delay = 0.001
        for _ in range(_EAGAIN_TRIES):
            try:
                return await self._rpc_once(msg, tag)
            except BlockingIOError:
                await anyio.sleep(delay)
                delay *= 2
        return await self._rpc_once(msg, tag)

    async def _rpc_once(self, msg: Message, tag: int | None) -> Message:
        self._check_alive()
        if tag is None:
            await self._room_for(1)
            if not self._free_tags:
                raise OSError(errno.EAGAIN, "no free tag")
            tag = self._free_tags.pop()
            recycle = True
        else:
            recycle = False
        pending = self._pending[tag] = _Pending(self._event_type, _reply_type(msg))
        try:
            head, payload = encode_parts(tag, msg, self.msize)
            await self.send_frame((head,) if payload is None else (head, payload))
            await pending.event.wait()
        finally:
            if recycle:
                self._end_wait(tag, pending)
            else:
                del self._pending[tag]
        reply = pending.reply
        if isinstance(msg, Tflush):
            # A flushed request that got no reply before Rflush never will: end it.
            flushed = self._pending.get(msg.oldtag)
            if flushed is not None and flushed.reply is None:
                flushed.reply = OSError(errno.EINTR, "request flushed")
                flushed.event.set()
        if isinstance(reply, OSError) and reply.errno == errno.EINTR:
            raise reply
        result = _outcome(reply)
        if isinstance(result, OSError):
            raise result
        return result

    async def pipeline(self, msgs: Sequence[Message]) -> list[Message | OSError]:
        """Send ``msgs`` back to back in one send, then wait for every reply: a request
        that depends on an earlier one (a Tgetattr of the fid a Twalk makes) costs no
        round trip of its own, because the gateway answers a session's requests on one
        fid in the order they were sent (:attr:`ordered`). A server that does not promise
        that gets them one after the other. Each result is the reply, or the ``OSError``
        of its Rlerror; a lost connection raises :class:`ConnectionLost`."""
        self._check_alive()
        if not self.ordered and len(msgs) > 1:
            return [await self._rpc_or_error(msg) for msg in msgs]
        await self._room_for(len(msgs))
        if len(self._free_tags) < len(msgs):
            raise OSError(errno.EAGAIN, "no free tag")
        tags = [self._free_tags.pop() for _ in msgs]
        pendings = [_Pending(self._event_type, _reply_type(msg)) for msg in msgs]
        parts: list[bytes | bytearray | memoryview] = []
        for tag, pending, msg in zip(tags, pendings, msgs, strict=True):
            self._pending[tag] = pending
            head, payload = encode_parts(tag, msg, self.msize)
            parts.append(head)
            if payload is not None:
                parts.append(payload)
        try:
            await self.send_frame(tuple(parts))
            for pending in pendings:
                await pending.event.wait()
        finally:
            for tag, pending in zip(tags, pendings, strict=True):
                self._end_wait(tag, pending)
        out = [_outcome(pending.reply) for pending in pendings]
        # Refused (EAGAIN: a bound on requests in flight) means not carried out, and the
        # requests after it that needed it failed for want of it (EBADF): those are sent
        # again, one by one. The others stand.
        refused = [i for i, r in enumerate(out) if isinstance(r, BlockingIOError)]
        if refused:
            for i in range(refused[0], len(out)):
                r = out[i]
                if isinstance(r, OSError) and r.errno in (errno.EAGAIN, errno.EBADF):
                    out[i] = await self._rpc_or_error(msgs[i])
        return out

    async def _rpc_or_error(self, msg: Message) -> Message | OSError:
        try:
            return await self.rpc(msg)
        except ConnectionLost:
            raise
        except OSError as exc:
            return exc

    async def call(self, msg: Message, expect: type[M]) -> M:
        """:meth:`rpc`, checking the reply's type."""
        reply = await self.rpc(msg)
        if not isinstance(reply, expect):
            raise OSError(errno.EPROTO, f"expected {expect.__name__}, got {type(reply).__name__}")
        return reply

    # --- session -----------------------------------------------------------------------

    def new_fid(self) -> int:
        if self._free_fids:
            return self._free_fids.pop()
        fid = self._next_fid
        self._next_fid += 1
        return fid

    def release_fid(self, fid: int) -> None:
        self._free_fids.append(fid)

    async def version(self, msize: int) -> int:
        """Negotiate, asking for the most first: ``VERSION_VSHARE_5`` (Tfallocate,
        :attr:`fallocates`), ``VERSION_VSHARE_4`` (Tlcreateat and Twalkopen,
        :attr:`opens_new_fids`), ``VERSION_VSHARE_3`` (the change feed, :attr:`feed`),
        ``VERSION_VSHARE_2`` (Treaddirplus, :attr:`readdirplus`), then ``VERSION_VSHARE``
        (requests on one fid kept in order, :attr:`ordered`), then plain 9P2000.L. A
        gateway that knows less answers "9P2000.L" (the prefix) and is asked for the next;
        diod answers an error to every vshare version."""
        reply = None
        for version in _VSHARE:
            reply = await self._ask_version(msize, version)
            if reply is not None and reply.version in _VSHARE:
                break
        if reply is None:
            plain = await self.rpc(Tversion(msize, VERSION_9P2000_L), tag=NOTAG)
            if not isinstance(plain, Rversion):
                raise OSError(errno.EPROTONOSUPPORT, f"server answered Tversion with {plain!r}")
            reply = plain
        if reply.version not in (*_VSHARE, VERSION_9P2000_L):
            raise OSError(errno.EPROTONOSUPPORT, f"server speaks {reply.version!r}")
        self.ordered = reply.version in _VSHARE
        self.readdirplus = reply.version in _VSHARE[:4]
        self.feed = reply.version in _VSHARE[:3]
        self.opens_new_fids = reply.version in _VSHARE[:2]
        self.fallocates = reply.version == VERSION_VSHARE_5
        self.msize = reply.msize
        return reply.msize

    async def _ask_version(self, msize: int, version: str) -> Rversion | None:
        """The server's Rversion to ``version``; None if it answered an error (diod: EIO
        for a version it does not know) or something else."""
        try:
            reply = await self.rpc(Tversion(msize, version), tag=NOTAG)
        except ConnectionLost:
            raise
        except OSError:
            return None
        if not isinstance(reply, Rversion):
            return None
        if reply.version not in (*_VSHARE, VERSION_9P2000_L):
            return None
        return reply

    async def attach(
        self, aname: str, uname: str = "", n_uname: int = 0xFFFFFFFF
    ) -> tuple[int, Qid]:
        fid = self.new_fid()
        reply = await self.call(Tattach(fid, NOFID, uname, aname, n_uname), Rattach)
        return fid, reply.qid

    async def clunk(self, fid: int) -> None:
        try:
            await self.rpc(Tclunk(fid))
        finally:
            self.release_fid(fid)

    async def clunk_nowait(self, fid: int) -> None:
        """Send Tclunk and return without waiting for Rclunk: a fid is gone after Tclunk
        whatever the answer, so waiting would only add a round trip to the caller's
        operation. The fid and the tag are reused only once the reply has come."""
        if self._dead is not None:
            self.release_fid(fid)  # the session, and every fid with it, is gone
            return
        if not self._free_tags:
            await self.clunk(fid)
            return
        while self._dead is None and self._in_flight() >= self.max_inflight:
            if self._slot_freed is None:
                self._slot_freed = anyio.Event()
            await self._slot_freed.wait()
        if not self.alive:  # it died while we waited: the fid went with the session
            self.release_fid(fid)
            return
        tag = self._free_tags.pop()
        self._unwaited_clunks[tag] = fid
        head, _ = encode_parts(tag, Tclunk(fid), self.msize)
        await self.send_frame((head,))


def _outcome(reply: Message | _Failed | BaseException | None) -> Message | OSError:
    """What a request's reply means to its caller: the reply, or the ``OSError`` of an
    Rlerror or of a reply that could not be used; a connection that died first (the
    reply is its exception) raises :class:`ConnectionLost`."""
    if isinstance(reply, _Failed):
        return reply.error
    if isinstance(reply, BaseException):
        raise ConnectionLost(str(reply))
    if isinstance(reply, Rlerror):
        return OSError(reply.ecode, os.strerror(reply.ecode))
    assert reply is not None
    return reply


def _name(frame: Message | Undecodable) -> str:
    if isinstance(frame, Undecodable):
        return f"of type {frame.msg_type}"
    return type(frame).__name__


@asynccontextmanager
async def open_client(
    target: str | Connection, msize: int = 512 * 1024 + 24, *, tls: TlsSettings | None = None
) -> AsyncIterator[Client]:
    """Connect (to a URI, or over an existing connection), negotiate the version, and
    yield a :class:`Client` whose reader runs until the block ends. ``tls``: the CA and
    client certificate for a ``tls://`` URI (see :func:`vshare.transport.connect`)."""
    conn = await connect(target, tls=tls) if isinstance(target, str) else target
    client = Client(conn, msize)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client._reader)
            tg.start_soon(client._resend_clunks)
            try:
                await client.version(msize)
                yield client
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # One failure (the usual case) reaches the caller as itself, not as a group.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        await conn.aclose()
