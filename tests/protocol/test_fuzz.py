"""Fuzzing the decoder: random and mutated frames give messages or RemoteProtocolError,
nothing else, in bounded time and memory."""

from __future__ import annotations

import random
import struct
import time
import tracemalloc

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vshare import protocol as p

from .strategies import any_message

MSIZE = 65536


def decode_all(data: bytes) -> None:
    dec = p.FrameDecoder(msize=MSIZE)
    dec.feed(data)
    try:
        for _ in dec:
            pass
    except p.RemoteProtocolError:
        pass
    try:
        p.decode_frame(data, msize=MSIZE)
    except p.RemoteProtocolError:
        pass


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    decode_all(data)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.sampled_from(sorted(p.MESSAGE_TYPES)))
def test_random_bodies_behind_a_valid_header(body: bytes, msg_type: int) -> None:
    decode_all(struct.pack("<IBH", 7 + len(body), msg_type, 1) + body)


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(any_message, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
       st.integers(0, 50))  # fmt: skip
def test_mutated_valid_frames(msg: p.Message, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(p.encode(7, msg))
    for pos, value in flips:
        data[pos % len(data)] = value
    decode_all(bytes(data))
    decode_all(bytes(data[: max(0, len(data) - cut)]))


def test_many_mutations_stay_bounded() -> None:
    """A plain loop (no Hypothesis) for volume: bounded time and peak memory."""
    rng = random.Random(1234)
    seeds = [
        p.encode(1, m)
        for m in (
            p.Twalk(1, 2, ("a", "bb", "ccc")),
            p.Tattach(1, p.NOFID, "user", "share", 0),
            p.Twrite(1, 0, b"x" * 100),
            p.Rreaddir(b"y" * 50),
            p.Tlock(1, 1, 0, 0, 10, 42, "client"),
            p.Rgetattr(1, p.Qid(0, 0, 0), *range(18)),
        )
    ]
    tracemalloc.start()
    start = time.monotonic()
    n = 0
    try:
        while time.monotonic() - start < 3.0:
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            decode_all(bytes(data))
            n += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n > 1000
    assert peak < 2 * 1024 * 1024
