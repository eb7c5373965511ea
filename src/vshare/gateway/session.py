"""One connection: decode frames, answer requests concurrently, send replies.

Structure: the session owns its request tasks (a :class:`~vshare.transport.TaskSet`, not an
anyio task group: a task group's task costs ~20 µs more, once per request on GlusterFS); the
reader loop feeds a :class:`~vshare.protocol.FrameDecoder` and answers each request in one
of two ways.

- On the loop, before reading the next frame, when the request makes no backend call or
  only cheap metadata calls (``Operations.runs_inline``): no task, no thread hand-off, and
  the replies to one read's worth of requests leave in a single send. This is what makes a
  getattr cost microseconds rather than a hundred.
- As its own task (tags make requests concurrent), for data and anything that may block:
  each such task owns a cancel scope kept in ``_inflight[tag]``; Tflush cancels that scope,
  waits for the task to end, and only then answers Rflush — so Rflush always follows the
  original reply if that reply was sent. A handler that completed always has its reply
  sent (the operation took effect; the client must learn its result). A Tflush for a
  request answered on the loop finds nothing in flight and is answered at once, after it.

Requests on one fid keep their order. Answered on the loop they are in order already; a
request that runs as a task and creates or changes fid F (``FID_CHANGES``: attach, walk to a
new fid or in place, lopen, lcreate, clunk...) makes every later request naming F wait until
it has finished, and a later request that changes F also waits for the earlier ones still
using F. So a client may pipeline ``Twalk(newfid=F)`` and ``Tgetattr(F)`` without waiting
for Rwalk, a second creation onto F answers EBADF as it would one round trip later (three
pipelined Tattach on one fid: one attachment, two EBADF), and no handler ever finds its fid
replaced or closed under it. ``_order`` holds, per fid number, the requests in flight as
tasks that change it (the latest) and that use it; it is empty when nothing runs as a task,
and a request is checked against it only then.

What closes a session: EOF, a malformed frame (``RemoteProtocolError``), a duplicate tag,
the handshake timeout (Tversion and a successful Tattach within ``handshake_timeout``), the
idle timeout, or gateway shutdown. Nothing a peer sends can raise out of :meth:`run`.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel

from vshare.backend._handle import FileSpan
from vshare.gateway.context import GatewayContext, audit_log
from vshare.gateway.feed import describe
from vshare.gateway.ops import Operations, WouldBlock, fids_of
from vshare.gateway.workers import CALLER
from vshare.protocol import (
    IOHDRSZ,
    MAX_MSIZE,
    MESSAGE_TYPES,
    VERSION_9P2000_L,
    VERSION_UNKNOWN,
    VERSION_VSHARE,
    VERSION_VSHARE_2,
    VERSION_VSHARE_3,
    VERSION_VSHARE_4,
    VERSION_VSHARE_5,
    FrameDecoder,
    LocalProtocolError,
    Message,
    Rattach,
    Rclunk,
    RemoteProtocolError,
    Rflush,
    Rlerror,
    Rversion,
    Tclunk,
    Tflush,
    Tread,
    Treaddir,
    Treaddirplus,
    Tversion,
    encode_parts,
    rread_head,
)
from vshare.transport import Connection, SendTurn, TaskSet

log = logging.getLogger("vshare.gateway")
_session_ids = itertools.count(1)
#: The smallest msize we agree to: room for a Rgetattr and a useful read.
MIN_MSIZE = 4096
#: Reply parts (one or two per reply) gathered on the loop before the session sends them
#: and yields to other sessions; well under IOV_MAX (1024) for one sendmsg.
_BATCH_PARTS = 128
#: Seconds of requests answered on the loop by one session before it sends what it has and
#: lets the other sessions in: what one busy session can add to another's latency.
_SLICE = 0.0002
#: The least a session is read at a time, even with its identity at its partial-frame bound
#: (whole small frames still get through).
_MIN_RECEIVE = 4096
#: Reply bytes a batch gathers before it is sent (reads answered on the loop hold buffers).
_BATCH_BYTES = 1 << 20
#: The least data of a read sent from the file's page cache (sendfile) rather than copied:
#: below it a copy costs less than a system call of its own, and joins the batch.
_SPAN_LEAST = 64 * 1024
#: What a reply other than read and readdir data is charged (with its task).
_SMALL_REPLY = 512
#: Seconds a reply still being sent gets once its session has ended.
_SEND_GRACE = 2.0
Buffer = bytes | bytearray | memoryview
#: Metric label of each request type: Tgetattr → "getattr".
#: The versions this gateway agrees to as asked (a test plays an older gateway by
#: narrowing it); any other "9P2000.L..." is answered "9P2000.L".
VSHARE_VERSIONS: frozenset[str] = frozenset(
    {VERSION_VSHARE, VERSION_VSHARE_2, VERSION_VSHARE_3, VERSION_VSHARE_4, VERSION_VSHARE_5}
)
_OP_NAMES: dict[type, str] = {t: t.__name__[1:] for t in MESSAGE_TYPES.values()}


@dataclass(eq=False, slots=True)
class _Request:
    scope: anyio.CancelScope
    done: asyncio.Event
    fids: frozenset[int] = frozenset()  # where it is entered in Session._order
    cost: int = 0  # charged to Session._replies while it runs


@dataclass(eq=False, slots=True)
class _FidOrder:
    """The requests in flight as tasks on one fid number: the latest that creates or
    changes it, and those started after that one which only use it."""

    changer: _Request | None = None
    users: set[_Request] = field(default_factory=set)


class Session:
    def __init__(self, ctx: GatewayContext, conn: Connection) -> None:
        self.ctx = ctx
        self.conn = conn
        self.id = next(_session_ids)
        #: Whom this session's use of the gateway's budgets is charged to (context.py).
        self.key = ctx.identity_key(conn.identity)
        self.ops = Operations(ctx, conn.identity, self.id, self.key)
        self.negotiated = False
        self._inflight: dict[int, _Request] = {}
        #: The tasks of the requests in _inflight, ended by their scopes (see run).
        self._tasks = TaskSet(on_error=self._task_failed)
        self._failed = False  # a request's task raised: a bug of ours, the session ends
        self._order: dict[int, _FidOrder] = {}  # see the module's docstring
        self._send_turn = SendTurn()
        self._slice_end = 0.0  # see _SLICE
        self._turn_start = 0.0  # when this session's turn on the loop began
        self._turn_open = False  # begun and not charged yet
        #: The slice ran out at a read's last request: the others are let in before this
        #: session's next read is answered, unless that read waited (the loop ran them).
        self._yield_owed = False
        self._decoder: FrameDecoder | None = None
        #: Bytes of a frame received in part (budget "partial_frame_bytes", per identity).
        self._partial = ctx.budgets.partial.account(self.key, self.id, str(conn.identity))
        #: Bytes of replies being made or waiting to be sent by tasks (budget "reply_bytes").
        self._replies = ctx.budgets.replies.account(self.key, self.id, str(conn.identity))
        self._sending: set[anyio.CancelScope] = set()  # shielded sends of replies
        self._ending = False  # the read loop has ended: sends get _SEND_GRACE seconds
        self._batch_bytes = 0  # payload bytes in the batch being gathered
        #: A send failed: the peer cannot receive replies any more, so the requests it left
        #: in the socket are not answered (reading and answering them cost other tenants).
        self._peer_gone = False
        #: The whole read loop until the first Tattach succeeds (config.handshake_timeout):
        #: it covers waiting for bytes and waiting to send alike.
        self._handshake = anyio.CancelScope()
        self._closed = False
        self.requests = 0  # answered, for logs
        self.reads = 0  # receives that returned data: requests / reads is the batching
        #: Why the session lost access (live enforcement); every request is refused from then on.
        self.revoked: str | None = None
        self._released = False  # revoked, and its fids and locks released

    def reevaluate(self) -> None:
        """Apply changed shares and rules (see ``Operations.reevaluate``): a session that
        lost access gets EACCES for every request from then on (see :meth:`_refuse`)."""
        if self.revoked is not None:
            return
        reason = self.ops.reevaluate()
        if reason is not None:
            self.revoked = reason
            self.ops.end_feed()  # no change of the share reaches it from now on
            identity = self.conn.identity
            fields = {"event": "revoke", "session": self.id, "identity": str(identity)}
            fields["reason"] = reason
            audit_log.info(
                "revoke: session %d of %s: %s", self.id, identity, reason, extra={"fields": fields}
            )

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def run(self) -> None:
        """Serve the connection until it ends. Never raises for anything the peer does."""
        CALLER.set(self.key)  # its tasks' backend calls are this identity's (workers.py)
        metrics = self.ctx.metrics
        metrics.sessions.inc()
        identity = self.conn.identity
        fields = {"event": "session-open", "session": self.id, "identity": str(identity)}
        log.info("session %d: open from %s", self.id, identity, extra={"fields": fields})
        reason = "closed by peer"
        handshake = self._handshake
        handshake.deadline = anyio.current_time() + self.ctx.config.handshake_timeout
        try:
            with handshake:
                reason = await self._read_loop()
            if self._failed:
                reason = "internal error"
            elif handshake.cancelled_caught:
                limit = self.ctx.config.handshake_timeout
                reason = f"no Tversion and Tattach within {limit:g} s"
                metrics.timeouts.labels(kind="handshake").inc()
        except Exception:  # a bug of ours: log it, close this session only
            log.exception("session %d: internal error", self.id)
            reason = "internal error"
        finally:
            self._ending = True
            for scope in self._sending:
                scope.deadline = min(scope.deadline, anyio.current_time() + _SEND_GRACE)
            for request in list(self._inflight.values()):
                request.scope.cancel()
            with anyio.CancelScope(shield=True):
                # A hundred sessions of one identity ending at once take their turns too,
                # their whole ends counted: from the wake-up that saw the end to the log
                # line (200 ends, four fifths of each unmetered, held another tenant's
                # getattr 15-38 ms). An end seen with nothing in flight goes on in the
                # turn it began with; otherwise the requests finish outside it.
                if self._tasks or not self._turn_open:
                    self._end_turn()
                    await self._tasks.wait()
                    await self._take_turn()
                self._tasks.close()  # none left, none to come
                if self._failed:
                    reason = "internal error"
                try:
                    await self.ops.close_all(self._pause)
                    await self.conn.aclose()
                    self._partial.close()
                    self._replies.close()
                    metrics.sessions.dec()
                    requests, reads = self.requests, self.reads
                    closed: dict[str, object] = {"event": "session-close", "session": self.id}
                    closed.update(reason=reason, requests=requests, reads=reads)
                    said = (self.id, reason, requests, reads)
                    log.info(
                        "session %d: %s after %d requests in %d reads",
                        *said,
                        extra={"fields": closed},
                    )
                finally:
                    self._end_turn()

    def _task_failed(self, exc: BaseException) -> None:
        """A request's task raised (handlers answer errors themselves: a bug of ours): log
        it and end the session, as the exception would end a task group's owner."""
        log.error("session %d: internal error", self.id, exc_info=exc)
        self._failed = True
        self._handshake.cancel()

    async def _read_loop(self) -> str:
        config = self.ctx.config
        decoder = self._decoder = FrameDecoder(msize=config.msize, accept="T")
        conn = self.conn
        idle = config.idle_timeout or None
        ops = self.ops
        chunk = max(config.msize, 256 * 1024)
        partial = self._partial
        partial_limit = partial.budget.limits["identity"]
        by_identity = partial.budget.by_identity
        partial_since = 0.0  # when the partial frame buffered now began
        replies = self._replies
        while True:
            want = chunk
            if partial.used or by_identity:  # someone has a partial frame: mind the budget
                room = partial_limit - by_identity.get(self.key, 0)
                if room < chunk:
                    want = max(room, _MIN_RECEIVE)
                    if partial.used and room < _MIN_RECEIVE and not partial.fits(_MIN_RECEIVE):
                        # the identity's partial frames are at their bound: read no more of
                        # this session until one of them completes or goes
                        if not await self._wait_for(partial.budget.freed(self.key), partial_since):
                            self.ctx.metrics.timeouts.labels(kind="frame").inc()
                            return f"a frame incomplete for {idle:g} s"
                        continue
            # its waits for data so far, needed only while a yield is owed
            waits = getattr(conn, "waits", None) if self._yield_owed else None
            if idle is None and not partial.used:  # no timer: a scope per read costs µs
                data = await conn.receive(want)
            else:
                deadline = math.inf if idle is None else anyio.current_time() + idle
                if partial.used and idle is not None:
                    deadline = min(deadline, partial_since + idle)
                with anyio.CancelScope(deadline=deadline) as timer:
                    data = await conn.receive(want)
                if timer.cancelled_caught:
                    kind = "frame" if partial.used else "idle"
                    self.ctx.metrics.timeouts.labels(kind=kind).inc()
                    if partial.used:
                        return f"a frame incomplete for {idle:g} s"
                    return f"idle for {idle:g} s"
            if not data:
                # The end takes its turn before anything else (run's finally goes on in
                # it): 200 sessions of one identity that end at once wake in one loop
                # iteration, and each used to go on to its next await first.
                await self._take_turn()
                return "closed by peer"
            self.reads += 1
            if self._yield_owed:
                self._yield_owed = False
                now_waits = getattr(conn, "waits", None)
                if now_waits is None or now_waits == waits:  # it did not wait: let them in
                    await anyio.lowlevel.checkpoint()
            if self.ctx.loop_share.must_wait(self.key):  # no coroutine per read otherwise
                self._begin_turn(await self.ctx.loop_share.turn(self.key))
            else:
                self._begin_turn()
            decoder.feed(data)
            # Replies answered here, on the loop, go out together in one send.
            batch: list[Buffer] = []
            try:
                for tag, msg in decoder:
                    if self._peer_gone:
                        return "closed by peer (a reply could not be sent)"
                    if isinstance(msg, Tversion):
                        await self._send_batch(batch)
                        await self._version(tag, msg, decoder)
                    elif tag in self._inflight:
                        raise RemoteProtocolError(f"tag {tag} is already in use")
                    elif isinstance(msg, Tflush):
                        if msg.oldtag in self._inflight:
                            self._start(tag, self._flush, tag, msg)
                        else:  # answered already (or never asked): nothing to wait for
                            await self._add_to_batch(batch, tag, Rflush())
                    elif self.revoked is not None:
                        await self._add_to_batch(batch, tag, await self._refuse(msg))
                    elif (
                        type(msg) is Tread
                        and self.conn.sends_files
                        and self.negotiated
                        and not (self._order and self._waits(msg))
                        and (span := self._read_span(msg)) is not None
                    ):
                        await self._send_span(batch, tag, span)
                    elif (
                        (not self.negotiated or ops.runs_inline(msg))
                        and not (self._order and self._waits(msg))
                        and (reply := await self._answer(msg, inline=True)) is not None
                    ):
                        await self._add_to_batch(batch, tag, reply)
                        if ops.put_off:  # a deep chain of links: let go of after the reply
                            await self._send_batch(batch)
                            await ops.let_go_of_put_off(self._pause)
                    elif len(self._inflight) >= config.max_inflight:
                        await self._add_to_batch(batch, tag, Rlerror(errno.EAGAIN))
                    else:
                        cost = self._reply_cost(msg)
                        if replies.used and replies.budget.over(replies, cost) is not None:
                            # Replies not drained (the peer does not read them): read no
                            # more of this session until they are; nobody else waits.
                            replies.fits(cost)  # counted and logged as a refusal
                            await self._send_batch(batch)
                            await replies.wait_until_fits(cost)
                        self._serve_in_order(tag, msg, cost)
            except RemoteProtocolError as exc:
                self.ctx.metrics.protocol_errors.inc()
                log.warning(
                    "session %d: protocol error from %s: %s", self.id, self.conn.identity, exc
                )
                await self._send_batch(batch)
                return "closed: protocol error"
            # What is left is (the start of) one frame, bytes received: charged as they are.
            left = decoder.buffered
            if left != partial.used:
                if not partial.used:
                    partial_since = anyio.current_time()
                if left > partial.used:
                    partial.force(left - partial.used)
                else:
                    partial.give(partial.used - left)
            await self._send_batch(batch)
            self._end_turn()

    async def _take_turn(self) -> None:
        """Wait while this identity has had its share of the loop and another wants it
        (loop_share.py); then a turn of ``_SLICE`` begins."""
        if self.ctx.loop_share.must_wait(self.key):
            self._begin_turn(await self.ctx.loop_share.turn(self.key))
        else:
            self._begin_turn()

    def _begin_turn(self, since: float | None = None) -> None:
        """A turn begins: charged from ``since`` (or :meth:`LoopShare.start`), which may
        be a moment ago; its slice is from now, so that replies to one read still go out
        together."""
        now = time.perf_counter()
        self._turn_start = self.ctx.loop_share.start(self.key, now) if since is None else since
        self._slice_end = now + _SLICE
        self._turn_open = True

    def _end_turn(self) -> None:
        """The turn begun last is over: its time is charged to the identity (once)."""
        if self._turn_open:
            self._turn_open = False
            self.ctx.loop_share.charge(self.key, self._turn_start)

    async def _wait_for(self, event: anyio.Event, since: float) -> bool:
        """Wait for ``event`` (a budget freed); False if, with an idle timeout, a partial
        frame begun at ``since`` ran out of time meanwhile (the session closes)."""
        idle = self.ctx.config.idle_timeout
        with anyio.CancelScope(deadline=since + idle if idle else math.inf) as timer:
            await event.wait()
        return not timer.cancelled_caught

    async def _refuse(self, msg: Message) -> Message:
        """The answer of a session that lost access: EACCES to everything but Tclunk, which
        is acknowledged (nothing is applied), so that an unmount completes. The connection
        stays open: the Linux client does not survive a server closing it under a mount (a
        request sent after the close can wait forever). The fids and locks go at the first
        refusal with nothing in flight; the session ends when the client disconnects."""
        if not self._released and not self._inflight:
            self._released = True
            await self.ops.close_all(self._pause)
        return Rclunk() if isinstance(msg, Tclunk) else Rlerror(errno.EACCES)

    def _waits(self, msg: Message) -> bool:
        """Whether ``msg`` must wait for a request in flight (see the module docstring)."""
        used, changed = fids_of(msg)
        order = self._order
        for number in used:
            entry = order.get(number)
            if entry is not None and entry.changer is not None:
                return True
        return any(number in order for number in changed)

    def _reply_cost(self, msg: Message) -> int:
        """What answering ``msg`` in a task is charged to the reply budget until its reply
        is sent: the data a read or readdir may return, else a small reply and its task."""
        if isinstance(msg, (Tread, Treaddir, Treaddirplus)):
            return min(msg.count, self.ops.msize - IOHDRSZ) + IOHDRSZ
        return _SMALL_REPLY

    def _serve_in_order(self, tag: int, msg: Message, cost: int = 0) -> None:
        """Answer ``msg`` in a task, after the requests in flight it must follow, and enter
        it in ``_order`` for the requests after it. ``cost`` is charged to the session's
        reply budget until the task ends."""
        used, changed = fids_of(msg)
        request = _Request(anyio.CancelScope(), asyncio.Event(), used | changed, cost)
        after: list[_Request] = []
        order = self._order
        for number in used:
            entry = order.get(number)
            if entry is None:
                entry = order[number] = _FidOrder()
            elif entry.changer is not None:
                after.append(entry.changer)
            entry.users.add(request)
        for number in changed:
            entry = order.get(number)
            if entry is None:
                entry = order[number] = _FidOrder()
            else:
                if entry.changer is not None:
                    after.append(entry.changer)
                after.extend(entry.users)
                entry.users.clear()
            entry.changer = request
        self._start(tag, self._serve, tag, msg, after, request=request)

    def _start(
        self,
        tag: int,
        fn: Callable[..., Awaitable[None]],
        *args: Any,
        request: _Request | None = None,
    ) -> None:
        if request is None:
            request = _Request(anyio.CancelScope(), asyncio.Event())
        self._inflight[tag] = request
        if request.cost:
            self._replies.force(request.cost)

        async def runner() -> None:
            try:
                with request.scope:
                    await fn(*args)
            finally:
                if self._inflight.get(tag) is request:
                    del self._inflight[tag]
                for number in request.fids:
                    entry = self._order.get(number)
                    if entry is None:
                        continue
                    if entry.changer is request:
                        entry.changer = None
                    entry.users.discard(request)
                    if entry.changer is None and not entry.users:
                        del self._order[number]
                if request.cost:
                    self._replies.give(request.cost)
                request.done.set()

        self._tasks.start_soon(runner)

    async def _version(self, tag: int, msg: Tversion, decoder: FrameDecoder) -> None:
        """Tversion resets the session: every request is aborted, every fid clunked."""
        for request in list(self._inflight.values()):
            request.scope.cancel()
        for request in list(self._inflight.values()):
            await request.done.wait()
        await self.ops.close_all(self._pause)
        if msg.msize < MIN_MSIZE:
            await self._reply(tag, Rlerror(errno.EINVAL))
            return
        msize = min(msg.msize, self.ctx.config.msize)
        if msg.version in VSHARE_VERSIONS:
            # Their promise, order per fid, is what _order keeps; vshare.2 adds messages
            # (Treaddirplus, Tgetattrat), vshare.3 Twatch (the change feed), vshare.4
            # Tlcreateat and Twalkopen, vshare.5 Tfallocate, which this gateway answers
            # whatever was agreed.
            version = msg.version
        elif msg.version.startswith(VERSION_9P2000_L):
            version = VERSION_9P2000_L
        else:
            version = VERSION_UNKNOWN
        self.negotiated = version != VERSION_UNKNOWN
        if self.negotiated:
            self.ops.msize = msize
            decoder.msize = msize
        await self._reply(tag, Rversion(msize, version), msize=msize)

    async def _answer(self, msg: Message, *, inline: bool) -> Message | None:
        """The reply to ``msg``: the handler's, or Rlerror with the right errno; None when
        answering on the loop would have to wait (:class:`WouldBlock`)."""
        if not self.negotiated:
            return Rlerror(errno.EPROTO)  # Tversion first
        handler = self.ops.handler(type(msg))
        if handler is None:
            return Rlerror(errno.EOPNOTSUPP)
        name = _OP_NAMES[type(msg)]
        start = time.perf_counter()
        # The change feed: what msg changes, described before the handler changes its fids;
        # only while someone subscribes (one attribute test per request otherwise).
        feed = self.ctx.feed
        changes = describe(self.ops.fids, msg) if feed.active else None
        reply: Message
        try:
            reply = await (self.ops.inline(msg) if inline else handler(self.ops, msg))
            if changes is not None and type(reply) is not Rlerror:
                feed.publish(changes[0], changes[1], origin=self.id)
            if type(reply) is Rattach:  # the handshake is complete: no deadline from now on
                self._handshake.deadline = math.inf
        except WouldBlock:
            return None
        except OSError as exc:
            reply = Rlerror(exc.errno or errno.EIO)
        except (ValueError, OverflowError) as exc:
            log.debug("session %d: %s: %s", self.id, name, exc)
            reply = Rlerror(errno.EINVAL)
        except Exception:
            self.ctx.metrics.internal_errors.inc()
            log.exception("session %d: %s failed (%r)", self.id, name, msg)
            reply = Rlerror(errno.EIO)
        result = "ok" if not isinstance(reply, Rlerror) else errno.errorcode.get(reply.ecode, "E?")
        self.ctx.metrics.observe(name, result, time.perf_counter() - start, on_loop=inline)
        return reply

    async def _serve(self, tag: int, msg: Message, after: Sequence[_Request] = ()) -> None:
        for earlier in after:  # the requests on its fids it must follow
            await earlier.done.wait()
        reply = await self._answer(msg, inline=False)
        assert reply is not None  # only answers on the loop may be put off
        # The operation has happened: its reply goes out even if a Tflush arrives now; but
        # once the session ends, a peer that does not read gets _SEND_GRACE seconds.
        scope = anyio.CancelScope(shield=True)
        if self._ending:
            scope.deadline = anyio.current_time() + _SEND_GRACE
        self._sending.add(scope)
        try:
            with scope:
                await self._reply(tag, reply)
        finally:
            self._sending.discard(scope)

    async def _flush(self, tag: int, msg: Tflush) -> None:
        target = self._inflight.get(msg.oldtag)
        if target is not None and msg.oldtag != tag:
            target.scope.cancel()
            await target.done.wait()
        await self._reply(tag, Rflush())

    def _encode(self, tag: int, reply: Message, msize: int | None = None) -> tuple[Buffer, ...]:
        try:
            head, payload = encode_parts(tag, reply, msize or self.ops.msize)
        except LocalProtocolError:
            log.exception("session %d: cannot encode %r", self.id, reply)
            head, payload = encode_parts(tag, Rlerror(errno.EIO), MAX_MSIZE)
        return (head,) if payload is None else (head, payload)

    async def _add_to_batch(self, batch: list[Buffer], tag: int, reply: Message) -> None:
        parts = self._encode(tag, reply)
        batch.extend(parts)
        self.requests += 1
        if len(parts) > 1:
            self._batch_bytes += len(parts[1])
        if (
            len(batch) >= _BATCH_PARTS
            or self._batch_bytes >= _BATCH_BYTES
            or time.perf_counter() > self._slice_end
        ):
            await self._send_batch(batch)  # send what we have and let other sessions in
            await self._let_others_in_before_more()

    def _read_span(self, msg: Tread) -> FileSpan | None:
        """A large read answered on the loop from the file's page cache, or None: then
        as any other read (:meth:`IoOps.read_span`)."""
        start = time.perf_counter()
        try:
            span = self.ops.read_span(msg, _SPAN_LEAST)
        except (OSError, ValueError, OverflowError):
            return None  # read() meets it again and answers the error
        if span is not None:
            self.ctx.metrics.observe("read", "ok", time.perf_counter() - start, on_loop=True)
        return span

    async def _send_span(self, batch: list[Buffer], tag: int, span: FileSpan) -> None:
        """Send the batch, this Rread's head, then its data from the file (its count is
        within msize: :meth:`IoOps.read_span`)."""
        batch.append(rread_head(tag, span.count, self.ops.msize))
        self.requests += 1
        await self._send_batch(batch, span)
        if time.perf_counter() > self._slice_end:
            await self._let_others_in_before_more()

    async def _send_batch(self, batch: list[Buffer], span: FileSpan | None = None) -> None:
        if batch:
            self._batch_bytes = 0
            await self._send(batch, span)
            batch.clear()

    async def _let_others_in_before_more(self) -> None:
        """The slice is over: let the others in before this session's next request. If
        the read holds none, that is owed to the next read (``_read_loop``): a read that
        waits for data lets the loop run the others anyway, and one yield more per
        request was a loop iteration of ~20 µs for each request of a client that sends
        one at a time."""
        decoder = self._decoder
        if decoder is not None and not decoder.buffered:
            self._yield_owed = True
        else:
            await self._let_others_in()

    async def _pause(self) -> None:
        """A point in a long piece of work on the loop (``ops.close_all``) where the
        others go first if this turn's slice is over."""
        if time.perf_counter() >= self._slice_end:
            await self._let_others_in()

    async def _let_others_in(self) -> None:
        """End this session's turn on the loop: its time charged, the others' turns first."""
        self._end_turn()
        await anyio.lowlevel.checkpoint()
        await self._take_turn()

    async def _reply(self, tag: int, reply: Message, msize: int | None = None) -> None:
        await self._send(self._encode(tag, reply, msize))
        self.requests += 1

    async def _send(self, parts: Sequence[Buffer], span: FileSpan | None = None) -> None:
        """Send ``parts``, then ``span``'s bytes from its file; the span is released (its
        file may close) once sent, or not, whatever happens."""
        turn = self._send_turn
        try:
            await turn.acquire()
            try:
                await self.conn.send(parts)
                if span is not None:
                    await self.conn.send_file(span)
            except OSError as exc:  # the peer went away: the read loop stops (_peer_gone)
                # (or a cached page could not be read mid-frame: the stream cannot go on)
                log.debug("session %d: send failed: %s", self.id, exc)
                self._peer_gone = True
            finally:
                turn.release()
        finally:
            if span is not None:
                span.release()
        pool = self.ctx.read_buffers
        for part in parts:  # Rread payloads view pooled buffers: sent, they are free again
            if isinstance(part, memoryview):
                pool.give(part.obj)
