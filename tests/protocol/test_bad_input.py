"""Bad input: the decoder yields valid messages or raises RemoteProtocolError; the encoder
refuses impossible requests with LocalProtocolError."""

from __future__ import annotations

import os
import struct
import tracemalloc

import pytest

from vshare import protocol as p


def frame(msg_type: int, body: bytes, tag: int = 1, size: int | None = None) -> bytes:
    return struct.pack("<IBH", 7 + len(body) if size is None else size, msg_type, tag) + body


def s(text: bytes) -> bytes:
    return struct.pack("<H", len(text)) + text


def walk_body(names: list[bytes]) -> bytes:
    return struct.pack("<IIH", 1, 2, len(names)) + b"".join(s(n) for n in names)


BAD_FRAMES = {
    "size below header": frame(120, b"", size=6),
    "size zero": frame(120, b"", size=0),
    "size above msize": frame(120, struct.pack("<I", 1), size=70_000),
    "unknown type": frame(99, b""),
    "Rerror is not 9P2000.L": frame(107, s(b"nope")),
    "body too short": frame(120, b"\x01\x00"),
    "trailing bytes": frame(120, struct.pack("<I", 1) + b"x"),
    "string past frame": frame(104, struct.pack("<II", 1, 2) + struct.pack("<H", 50) + b"ab"),
    "string length past frame": frame(104, struct.pack("<II", 1, 2) + b"\x05"),
    "17 walk names": frame(110, walk_body([b"a"] * 17)),
    "walk count lies": frame(110, struct.pack("<IIH", 1, 2, 3) + s(b"a")),
    "17 qids": frame(111, struct.pack("<H", 17) + b"\x00" * 13 * 17),
    "qids past frame": frame(111, struct.pack("<H", 2) + b"\x00" * 13),
    "write count above data": frame(118, struct.pack("<IQI", 1, 0, 10) + b"abc"),
    "write count below data": frame(118, struct.pack("<IQI", 1, 0, 1) + b"abc"),
    "read reply count lies": frame(117, struct.pack("<I", 0xFFFFFFFF) + b"abc"),
    "count field cut": frame(117, b"\x01\x00"),
}


@pytest.mark.parametrize("data", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_bad_frame_is_a_remote_protocol_error(data: bytes) -> None:
    with pytest.raises(p.RemoteProtocolError):
        p.decode_frame(data, msize=65536)
    dec = p.FrameDecoder(msize=65536)
    dec.feed(data)
    with pytest.raises(p.RemoteProtocolError):
        dec.next_message()


def test_size_field_disagreeing_with_the_frame() -> None:
    good = p.encode(1, p.Tclunk(3))
    with pytest.raises(p.RemoteProtocolError):
        p.decode_frame(good + b"\x00")
    with pytest.raises(p.RemoteProtocolError):
        p.decode_frame(good[:-1])


def test_a_frame_claiming_4_gib_is_refused_before_buffering() -> None:
    dec = p.FrameDecoder(msize=65536)
    tracemalloc.start()
    try:
        dec.feed(struct.pack("<IBH", 0xFFFFFFFF, 118, 1))
        with pytest.raises(p.RemoteProtocolError, match="exceeds msize"):
            dec.next_message()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_side_filter() -> None:
    reply = p.encode(1, p.Rclunk())
    request = p.encode(1, p.Tclunk(1))
    with pytest.raises(p.RemoteProtocolError, match="unexpected reply"):
        p.decode_frame(reply, accept="T")
    with pytest.raises(p.RemoteProtocolError, match="unexpected request"):
        p.decode_frame(request, accept="R")
    assert p.decode_frame(request, accept="T") == (1, p.Tclunk(1))


def test_negotiated_msize_is_enforced_on_decode() -> None:
    big = p.encode(1, p.Twrite(1, 0, b"x" * 9000))
    dec = p.FrameDecoder()
    dec.msize = 8192
    dec.feed(big)
    with pytest.raises(p.RemoteProtocolError):
        dec.next_message()


@pytest.mark.parametrize(
    "msg",
    [
        p.Twalk(1, 2, tuple("a" * 17)),
        p.Rwalk(tuple(p.Qid(0, 0, i) for i in range(17))),
        p.Tattach(1, 2, "x" * 70_000, "", 0),
        p.Tclunk(2**32),
        p.Tclunk(-1),
        p.Rlock(256),
        p.Tlcreate(1, "\ud800", 0, 0, 0),  # a surrogate that stands for no byte
        p.Rread("text"),  # type: ignore[arg-type]
    ],
)
def test_encoder_refuses_what_cannot_be_said(msg: p.Message) -> None:
    with pytest.raises(p.LocalProtocolError):
        p.encode(1, msg)


def test_encoder_enforces_msize() -> None:
    msg = p.Rread(b"x" * 100)
    with pytest.raises(p.LocalProtocolError, match="exceeds msize"):
        p.encode_parts(1, msg, msize=100)
    with pytest.raises(p.LocalProtocolError, match="exceeds msize"):
        p.encode(1, msg, msize=100)
    assert len(p.encode(1, msg, msize=111)) == 111


def test_errors_carry_an_errno() -> None:
    import errno

    with pytest.raises(p.ProtocolError) as info:
        p.decode_frame(b"\x00" * 7)
    assert info.value.errno == errno.EPROTO


@pytest.mark.parametrize("raw", [b"caf\xe9", b"\xff\xfe", b"\xc0\xaf", b"ok\x80x"])
def test_names_are_bytes(raw: bytes) -> None:
    """A name that is not UTF-8 is a valid Linux name: it decodes (to lone surrogates)
    and encodes back to the very bytes sent."""
    wire = frame(110, walk_body([raw]))
    dec = p.FrameDecoder(msize=8192, accept="T")
    dec.feed(wire)
    tag, msg = dec.next_message()  # type: ignore[misc]
    assert isinstance(msg, p.Twalk)
    assert os.fsencode(msg.wnames[0]) == raw
    assert p.encode(tag, msg) == wire
