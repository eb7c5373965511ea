"""Every message type round-trips; streams decode however they are chunked."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vshare import protocol as p
from vshare.protocol import MESSAGE_TYPES, Message
from vshare.protocol._codec import wire_fields

from .strategies import any_message, message_strategy, normalized

ALL = sorted(MESSAGE_TYPES.items())


def test_the_table_has_every_9p2000l_message() -> None:
    expected = {7, 8, 12, 14, 16, 18, 20, 22, 24, 26, 30, 32, 40, 50, 52, 54, 70, 72, 74, 76}
    expected |= {100, 102, 104, 108, 110, 116, 118, 120, 122}
    expected |= {n + 1 for n in expected if n != 7}
    expected |= {150, 151}  # vshare's Treaddirplus/Rreaddirplus (VERSION_VSHARE_2)
    expected |= {152, 153}  # vshare's Twatch/Rwatch (VERSION_VSHARE_3)
    expected |= {154, 155}  # vshare's Tgetattrat/Rgetattrat (VERSION_VSHARE_2)
    expected |= {156, 157}  # vshare's Tlcreateat/Rlcreateat (VERSION_VSHARE_4)
    expected |= {158, 159}  # vshare's Twalkopen/Rwalkopen (VERSION_VSHARE_4)
    expected |= {160, 161}  # vshare's Tfallocate/Rfallocate (VERSION_VSHARE_5)
    assert set(MESSAGE_TYPES) == expected
    assert 107 not in MESSAGE_TYPES  # Rerror: 9P2000.L answers with Rlerror only


@pytest.mark.parametrize(("num", "cls"), ALL, ids=[c.__name__ for _, c in ALL])
@settings(max_examples=60)
@given(data=st.data(), tag=st.integers(0, 0xFFFF))
def test_round_trip(num: int, cls: type[Message], data: st.DataObject, tag: int) -> None:
    msg = data.draw(message_strategy(cls))
    frame = p.encode(tag, msg)
    assert p.peek_header(frame) == (len(frame), num, tag)
    got_tag, got = p.decode_frame(frame)
    assert got_tag == tag
    assert normalized(got) == normalized(msg)
    # encode_parts gives the same bytes, with the payload not copied
    head, payload = p.encode_parts(tag, msg)
    assert head + (bytes(payload) if payload is not None else b"") == frame
    if payload is not None:
        assert payload is msg[-1]


def test_rgetattr_exact_layout() -> None:
    # 9P2000.L: valid[8] qid[13] mode[4] uid[4] gid[4] nlink[8] rdev[8] size[8] blksize[8]
    # blocks[8] + 8 timestamps/gen/data_version of 8 bytes = 153 bytes of body.
    msg = p.Rgetattr(p.GETATTR_BASIC, p.Qid(p.QTDIR, 7, 99), 0o40755, 1, 2, 3, 4, 5, 6, 7,
                     8, 9, 10, 11, 12, 13, 14, 15, 16, 17)  # fmt: skip
    frame = p.encode(0x1234, msg)
    assert len(frame) == 7 + 153
    assert frame[:7] == bytes([160, 0, 0, 0, 25, 0x34, 0x12])
    assert frame[7:15] == p.GETATTR_BASIC.to_bytes(8, "little")
    assert frame[15:28] == bytes([0x80, 7, 0, 0, 0, 99, 0, 0, 0, 0, 0, 0, 0])


def test_fields_come_from_annotations() -> None:
    assert wire_fields(p.Tlock) == [
        ("fid", "I"),
        ("type", "B"),
        ("flags", "I"),
        ("start", "Q"),
        ("length", "Q"),
        ("proc_id", "I"),
        ("client_id", "s"),
    ]
    assert wire_fields(p.Rlopen) == [("qid", "qid"), ("iounit", "I")]


@settings(max_examples=100)
@given(msgs=st.lists(st.tuples(st.integers(0, 0xFFFF), any_message), min_size=1, max_size=8),
       cuts=st.lists(st.integers(0, 2000), max_size=10))  # fmt: skip
def test_stream_decoder_any_chunking(msgs: list[tuple[int, Message]], cuts: list[int]) -> None:
    stream = b"".join(p.encode(tag, m) for tag, m in msgs)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    for whole_frames in (False, True):
        dec = p.FrameDecoder(whole_frames=whole_frames)
        out = []
        for a, b in itertools.pairwise(points):
            dec.feed(stream[a:b])
            out.extend(dec)
        assert [(t, normalized(m)) for t, m in out] == [(t, normalized(m)) for t, m in msgs]
        assert dec.buffered == 0


def test_stream_one_byte_at_a_time_and_many_in_one_chunk() -> None:
    msgs = [(i, p.Twalk(i, i + 1, ("a", "b" * i))) for i in range(20)]
    stream = b"".join(p.encode(t, m) for t, m in msgs)
    dec = p.FrameDecoder()
    got = []
    for i in range(len(stream)):
        dec.feed(stream[i : i + 1])
        got.extend(dec)
    assert got == msgs
    dec.feed(stream)
    assert list(dec) == msgs


def test_trailing_partial_frame_stays_buffered() -> None:
    whole = p.encode(1, p.Tclunk(5))
    nxt = p.encode(2, p.Tclunk(6))
    dec = p.FrameDecoder()
    dec.feed(whole + nxt[:3])
    assert list(dec) == [(1, p.Tclunk(5))]
    assert dec.buffered == 3
    dec.feed(nxt[3:])
    assert list(dec) == [(2, p.Tclunk(6))]


def test_payloads_are_views_not_copies() -> None:
    frame = p.encode(9, p.Twrite(1, 2, b"x" * 4096))
    _, msg = p.decode_frame(frame)
    assert isinstance(msg, p.Twrite)
    assert isinstance(msg.data, memoryview)
    assert msg.data.obj is frame


def test_large_read_reply_parts() -> None:
    payload = memoryview(bytearray(1 << 20))
    head, data = p.encode_parts(3, p.Rread(payload), msize=(1 << 20) + p.IOHDRSZ)
    assert data is payload
    assert len(head) == 11
    assert p.peek_header(head) == (11 + (1 << 20), 117, 3)


def test_rread_head_is_the_head_encode_parts_makes() -> None:
    for count in (0, 1, 1 << 20):
        head, _ = p.encode_parts(7, p.Rread(bytes(count)), msize=(1 << 20) + p.IOHDRSZ)
        assert p.rread_head(7, count, (1 << 20) + p.IOHDRSZ) == head
    with pytest.raises(p.LocalProtocolError):
        p.rread_head(7, 1 << 20, msize=1 << 20)


@pytest.mark.parametrize("cut", [3, 4, 11, 5000])
def test_a_large_frame_is_received_into_its_own_buffer(cut: int) -> None:
    """``whole_frames``: once the size field has arrived, the rest of the frame is offered
    to receive into directly (no chunk per receive, none joined), then decoded as fed."""
    data = os.urandom(100_000)
    stream = p.encode(4, p.Rread(data)) + p.encode(5, p.Rclunk())
    dec = p.FrameDecoder(whole_frames=True)
    dec.feed(stream[:cut])
    assert list(dec) == []
    room = dec.room(1024)
    if cut < 4:  # the size is not known yet: feed more
        assert room is None
        dec.feed(stream[cut:50])
        cut = 50
        assert list(dec) == []
        room = dec.room(1024)
    assert room is not None and len(room) == len(data) + 11 - cut
    room[:1000] = stream[cut : cut + 1000]
    dec.received(1000)
    room = dec.room(1024)
    assert room is not None and dec.room(len(room) + 1) is None  # less missing than asked
    room[:] = stream[cut + 1000 : len(data) + 11]
    dec.received(len(room))
    assert dec.room(1) is None  # whole: nothing missing
    dec.feed(stream[len(data) + 11 :])
    ((tag, msg), (tag2, msg2)) = list(dec)
    assert (tag, bytes(msg.data), tag2, msg2) == (4, data, 5, p.Rclunk())
    with pytest.raises(ValueError):
        dec.received(1)


def test_a_gateway_decoder_never_offers_room() -> None:
    """Without ``whole_frames`` (a gateway: a peer's claimed size costs nothing until its
    bytes arrive), a frame grows as it arrives and nothing is offered to receive into."""
    dec = p.FrameDecoder()
    dec.feed(p.encode(1, p.Twrite(1, 0, bytes(50_000)))[:100])
    assert list(dec) == [] and dec.room(1) is None and dec.buffered == 100


def test_dirent_packer_packs_whole_entries_only() -> None:
    q = p.Qid(p.QTFILE, 0, 1)
    entries = [p.Dirent(q, i + 1, 8, f"file-{i:03d}") for i in range(10)]
    one = 24 + len("file-000")
    data, n = p.pack_dirents(entries, one * 3 + one - 1)
    assert n == 3
    assert len(data) == one * 3
    assert p.unpack_dirents(data) == entries[:3]
    packer = p.DirentPacker(10_000)
    for e in entries:
        assert packer.add(e.qid, e.offset, e.type, e.name)
    assert packer.offset == 10
    assert p.unpack_dirents(packer.getvalue()) == entries


def test_dirents_reject_truncated_data() -> None:
    data, _ = p.pack_dirents([p.Dirent(p.Qid(0, 0, 1), 1, 8, "abc")], 100)
    with pytest.raises(p.RemoteProtocolError):
        p.unpack_dirents(data[:-1])
    with pytest.raises(p.RemoteProtocolError):
        p.unpack_dirents(data[:10])


@pytest.mark.parametrize(
    ("dotl", "expected"),
    [
        (p.DOTL_RDONLY, 0),
        (p.DOTL_WRONLY | p.DOTL_CREATE | p.DOTL_TRUNC, 0o1101),
        (p.DOTL_RDWR | p.DOTL_APPEND | p.DOTL_EXCL, 0o2202),
        (p.DOTL_RDONLY | p.DOTL_DIRECTORY | p.DOTL_NOFOLLOW, 0o600000),
    ],
)
def test_open_flags_map_to_os(dotl: int, expected: int) -> None:
    import os

    assert p.dotl_to_os_flags(dotl) == expected
    assert p.os_to_dotl_flags(expected) == dotl
    assert p.dotl_to_os_flags(p.DOTL_SYNC) & os.O_SYNC == os.O_SYNC
