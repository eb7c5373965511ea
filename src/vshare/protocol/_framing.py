"""Frames: ``size[4] type[1] tag[2] body``, little-endian, ``size`` counting itself.

:func:`encode` and :func:`encode_parts` turn a message into bytes; :func:`decode_frame`
turns one whole frame into ``(tag, message)``; :class:`FrameDecoder` is fed arbitrary
chunks of a byte stream and yields whole messages. None of them does I/O.

A client talking to a looser peer reads with :meth:`FrameDecoder.next_frame`: a frame
whose size is sound but whose body is not 9P2000.L (9P2000's ``Rerror``, type 107, from
NFS-Ganesha; a type we do not know; a short body) comes out as :class:`Undecodable`,
so that only the request it answers fails, not the whole stream.
"""

from __future__ import annotations

import errno as _errno
import struct
from collections.abc import Iterator
from typing import Final, Literal, NamedTuple

from vshare.protocol._codec import DECODERS, ENCODERS, Buffer, nbytes
from vshare.protocol._constants import HEADER_SIZE
from vshare.protocol._errors import LocalProtocolError, RemoteProtocolError
from vshare.protocol._messages import MESSAGE_TYPES, TYPE_NUMBERS, Message, Rread

#: The largest frame anyone may send before Tversion/Rversion have agreed on an msize.
#: 9P2000.L puts no bound on Tversion's msize; we never accept frames above this.
MAX_MSIZE: Final = 16 * 1024 * 1024 + HEADER_SIZE
_HEADER: Final = struct.Struct("<IBH")

Side = Literal["T", "R"]

#: 9P2000's error reply (not part of 9P2000.L, which has Rlerror only).
RERROR: Final = 107


class Undecodable(NamedTuple):
    """A frame with a sound size and tag whose body could not be decoded.

    Attributes:
        msg_type: the frame's type byte.
        body: the bytes after the header (a copy).
        error: why it could not be decoded.
    """

    msg_type: int
    body: bytes
    error: RemoteProtocolError


def rerror_errno(body: bytes) -> int:
    """The errno an ``Rerror`` body carries, EIO if none can be told.

    Three shapes are seen: ``ecode[4]`` alone (NFS-Ganesha answers 9P2000.L requests so),
    9P2000.u's ``ename[s] errno[4]``, and plain 9P2000's ``ename[s]`` (no number: EIO).
    """
    code = 0
    if len(body) == 4:
        code = int.from_bytes(body, "little")
    elif len(body) >= 2:
        n = int.from_bytes(body[:2], "little")
        if len(body) == 2 + n + 4:
            code = int.from_bytes(body[2 + n :], "little")
    # 0 is no error and Linux errnos stay below 4096: anything else is not a number to trust.
    return code if 0 < code < 4096 else _errno.EIO


def _encode(tag: int, msg: Message) -> tuple[bytes, Buffer | None]:
    try:
        return ENCODERS[type(msg)](tag, msg)
    except KeyError:
        raise LocalProtocolError(f"not a 9P2000.L message: {type(msg).__name__}") from None
    except (struct.error, ValueError, TypeError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode {type(msg).__name__}: {exc}") from None


def encode_parts(tag: int, msg: Message, msize: int = MAX_MSIZE) -> tuple[bytes, Buffer | None]:
    """Encode ``msg`` as a frame split in two: the head, and the payload of Rread, Twrite
    or Rreaddir (``None`` for other messages). The payload is the caller's own buffer, not
    a copy: hand both to ``socket.sendmsg``.

    Raises:
        LocalProtocolError: a field is out of range, or the frame exceeds ``msize``.
    """
    head, payload = _encode(tag, msg)
    size = len(head) if payload is None else len(head) + nbytes(payload)
    if size > msize:
        raise LocalProtocolError(f"{type(msg).__name__} of {size} bytes exceeds msize {msize}")
    return head, payload


_RREAD_HEAD: Final = struct.Struct("<IBHI")
_RREAD: Final = TYPE_NUMBERS[Rread]


def rread_head(tag: int, count: int, msize: int = MAX_MSIZE) -> bytes:
    """The head of an Rread whose ``count`` bytes of data the caller sends after it (from a
    file, with ``sendfile``): what :func:`encode_parts` makes of ``Rread(data)``.

    Raises:
        LocalProtocolError: the frame would exceed ``msize``.
    """
    size = _RREAD_HEAD.size + count
    if count < 0 or size > msize:
        raise LocalProtocolError(f"Rread of {size} bytes exceeds msize {msize}")
    return _RREAD_HEAD.pack(size, _RREAD, tag, count)


def encode(tag: int, msg: Message, msize: int = MAX_MSIZE) -> bytes:
    """Encode ``msg`` as one frame (copies the payload; see :func:`encode_parts`).

    Raises:
        LocalProtocolError: a field is out of range, or the frame exceeds ``msize``.
    """
    head, payload = _encode(tag, msg)
    if payload is not None:
        head += payload
    if len(head) > msize:
        raise LocalProtocolError(f"{type(msg).__name__} of {len(head)} bytes exceeds msize {msize}")
    return head


def peek_header(buf: Buffer) -> tuple[int, int, int]:
    """``(size, type, tag)`` of the frame at the start of ``buf`` (at least 7 bytes)."""
    size, msg_type, tag = _HEADER.unpack_from(buf)
    return size, msg_type, tag


def decode_frame(
    frame: Buffer, msize: int = MAX_MSIZE, accept: Side | None = None
) -> tuple[int, Message]:
    """Decode exactly one whole frame into ``(tag, message)``.

    Variable-size payloads (Rread, Twrite, Rreaddir data) are memoryviews into ``frame``:
    keep ``frame`` unchanged while they are in use.

    Args:
        accept: "T" to accept only requests (a server), "R" only replies (a client).

    Raises:
        RemoteProtocolError: the bytes are not one valid 9P2000.L frame.
    """
    if type(frame) is memoryview and frame.format != "B":
        frame = frame.cast("B")
    end = len(frame)
    if end < HEADER_SIZE:
        raise RemoteProtocolError(f"frame of {end} bytes is shorter than a header")
    size, msg_type, tag = _HEADER.unpack_from(frame)
    if size != end:
        raise RemoteProtocolError(f"frame says {size} bytes but has {end}")
    if size > msize:
        raise RemoteProtocolError(f"frame size {size} exceeds msize {msize}")
    decoder = DECODERS.get(msg_type)
    if decoder is None:
        raise RemoteProtocolError(f"unknown message type {msg_type}")
    if accept is not None and (msg_type % 2 == 0) != (accept == "T"):
        kind = "reply" if msg_type % 2 else "request"
        raise RemoteProtocolError(f"unexpected {kind} {MESSAGE_TYPES[msg_type].__name__}")
    return tag, decoder(frame, HEADER_SIZE, end)


def _check_size(size: int, msize: int) -> None:
    if size < HEADER_SIZE:
        raise RemoteProtocolError(f"frame size {size} is smaller than a header")
    if size > msize:
        raise RemoteProtocolError(f"frame size {size} exceeds msize {msize}")


class FrameDecoder:
    """Incremental decoder: feed it any chunks of the stream, take out whole messages.

    >>> dec = FrameDecoder()
    >>> dec.feed(data)
    >>> for tag, msg in dec: ...

    The buffered bytes never exceed one frame of at most ``msize`` plus one chunk: a size
    field above ``msize`` is refused before any of the frame is stored. A frame spread over
    chunks is stored as its bytes arrive, never at the size its header claims: a peer that
    announces a megabyte and sends a hundred bytes costs a hundred bytes. Once
    :meth:`next_message` has returned None, no chunk fed is referenced any more (what is
    left of them has been copied), so a small partial frame never holds a large receive
    buffer.
    """

    def __init__(
        self, msize: int = MAX_MSIZE, accept: Side | None = None, *, whole_frames: bool = False
    ) -> None:
        """``whole_frames``: a frame spread over chunks is given its whole size as soon as
        its size field is read, and :meth:`room` offers the rest of it to receive into
        (no chunk, no copy). For a peer trusted with ``msize`` bytes of our memory (a
        client's server); a gateway keeps the default."""
        self.msize = msize
        self.accept: Side | None = accept
        self.whole_frames = whole_frames
        self._chunks: list[memoryview] = []
        self._head = bytearray()  # the first bytes of a size field split across chunks
        self._frame: bytearray | None = None  # a frame being assembled, as it arrives
        self._filled = 0  # bytes of it that have arrived
        self._size = 0  # the size its header says

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as messages."""
        partial = len(self._frame) if self._frame is not None else len(self._head)
        return partial + sum(c.nbytes for c in self._chunks)

    def room(self, least: int) -> memoryview | None:
        """With ``whole_frames``: where the rest of the frame being assembled can be received
        directly, when at least ``least`` bytes of it are missing and nothing is fed
        ahead of them; then call :meth:`received`. Else None: receive a chunk and feed it."""
        frame = self._frame
        if frame is None or not self.whole_frames or self._chunks:
            return None
        if self._size - self._filled < least:
            return None
        return memoryview(frame)[self._filled : self._size]

    def received(self, n: int) -> None:
        """``n`` bytes were received into the view :meth:`room` gave."""
        if self._frame is None or not 0 <= n <= self._size - self._filled:
            raise ValueError(f"{n} bytes received where {self._size - self._filled} fit")
        self._filled += n

    def feed(self, data: Buffer) -> None:
        """Add bytes received from the peer. ``data`` must not change afterwards."""
        if data:
            view = data if isinstance(data, memoryview) else memoryview(data)
            self._chunks.append(view.cast("B") if view.format != "B" else view)

    def _consume(self, n: int) -> None:
        if n == self._chunks[0].nbytes:
            self._chunks.pop(0)
        else:
            self._chunks[0] = self._chunks[0][n:]

    def next_message(self) -> tuple[int, Message] | None:
        """The next whole message, or None if more bytes are needed.

        Raises:
            RemoteProtocolError: the stream is not valid 9P2000.L; the decoder is then
                unusable (close the session).
        """
        frame = self._take_frame()
        return None if frame is None else decode_frame(frame, self.msize, self.accept)

    def next_frame(self) -> tuple[int, Message | Undecodable] | None:
        """Like :meth:`next_message`, but a frame whose size is sound and whose body is
        not comes out as ``(tag, Undecodable)``: the stream stays usable after it.

        Raises:
            RemoteProtocolError: the framing itself is broken (a size below a header or
                above ``msize``): nothing after it can be trusted.
        """
        frame = self._take_frame()
        if frame is None:
            return None
        try:
            return decode_frame(frame, self.msize, self.accept)
        except RemoteProtocolError as exc:
            _, msg_type, tag = _HEADER.unpack_from(frame)
            return tag, Undecodable(msg_type, bytes(frame[HEADER_SIZE:]), exc)

    def frames(self) -> Iterator[tuple[int, Message | Undecodable]]:
        """:meth:`next_frame` until more bytes are needed."""
        while (item := self.next_frame()) is not None:
            yield item

    def _take_frame(self) -> memoryview | None:
        """The bytes of the next whole frame (size checked), or None."""
        if self._frame is None and not self._head and self._chunks:
            # Fast path: a chunk holds a whole frame; decode straight out of the caller's
            # bytes, no copy.
            chunk = self._chunks[0]
            if chunk.nbytes >= 4:
                size = chunk[0] | chunk[1] << 8 | chunk[2] << 16 | chunk[3] << 24
                _check_size(size, self.msize)
                if chunk.nbytes >= size:
                    self._consume(size)
                    return chunk[:size]
        # Slow path: a frame spread over chunks (a 1 MiB Twrite arrives in many) is copied
        # into a buffer that grows as its bytes arrive (not allocated at the size claimed).
        if self._frame is None:
            while len(self._head) < 4:
                if not self._chunks:
                    return None
                need = min(4 - len(self._head), self._chunks[0].nbytes)
                self._head += self._chunks[0][:need]
                self._consume(need)
            size = int.from_bytes(self._head, "little")
            _check_size(size, self.msize)
            self._size = size
            if self.whole_frames:
                self._frame = bytearray(size)
                self._frame[:4] = self._head
            else:
                self._frame = self._head
            self._filled = 4
            self._head = bytearray()
        frame = self._frame
        while self._filled < self._size:
            if not self._chunks:
                return None
            n = min(self._chunks[0].nbytes, self._size - self._filled)
            if self.whole_frames:
                frame[self._filled : self._filled + n] = self._chunks[0][:n]
            else:
                frame += self._chunks[0][:n]
            self._filled += n
            self._consume(n)
        self._frame = None
        return memoryview(frame)

    def __iter__(self) -> Iterator[tuple[int, Message]]:
        while (item := self.next_message()) is not None:
            yield item
