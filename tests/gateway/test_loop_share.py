"""Where a turn on the loop counts from (loop_share.py): what the loop did between two
turns of one identity, with no one else's between, is that identity's."""

from __future__ import annotations

import time

import anyio
import pytest

from vshare.gateway.loop_share import ADJACENT, SHARE, LoopShare

pytestmark = pytest.mark.anyio


def test_a_turn_right_after_the_same_identitys_counts_from_its_end() -> None:
    share = LoopShare()
    share.charge("a", time.perf_counter())
    ended = share._last[1]
    assert share.start("a", ended + ADJACENT / 2) == ended


def test_a_turn_after_another_identitys_or_a_pause_counts_from_now() -> None:
    share = LoopShare()
    share.charge("a", time.perf_counter())
    ended = share._last[1]
    assert share.start("a", ended + 2 * ADJACENT) == ended + 2 * ADJACENT
    share.charge("b", time.perf_counter())
    now = time.perf_counter()
    assert share.start("a", now) == now


async def test_a_turn_waited_for_counts_from_when_it_was_given() -> None:
    share = LoopShare()
    share.charge("b", time.perf_counter())  # another identity wants the loop
    share.charge("a", time.perf_counter() - SHARE)  # and "a" has had its share
    assert share.must_wait("a")
    before = time.perf_counter()
    with anyio.fail_after(5):
        given = await share.turn("a")  # given when the window turns
    woke = time.perf_counter()
    assert before < given <= woke
