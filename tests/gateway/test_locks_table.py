"""The lock table against a model that keeps a type per byte (issue 20: the table became
an interval structure; its answers must not change)."""

from __future__ import annotations

import random

import pytest

from vshare.gateway.locks import EOF_END, HeldLock, LockTable, TooManyLocks
from vshare.protocol import LOCK_TYPE_RDLCK, LOCK_TYPE_UNLCK, LOCK_TYPE_WRLCK

SIZE = 96  # model bytes: every finite lock ends below it; "to EOF" covers the rest
TYPES = (LOCK_TYPE_RDLCK, LOCK_TYPE_WRLCK, LOCK_TYPE_UNLCK)


class Model:
    def __init__(self) -> None:
        self.bytes: dict[tuple[int, str, int], list[int | None]] = {}  # None: no lock

    def conflict(self, owner: tuple[int, str, int], kind: int, start: int, end: int) -> bool:
        if kind == LOCK_TYPE_UNLCK:
            return False
        for other, types in self.bytes.items():
            if other == owner:
                continue
            for t in types[start:end]:
                if t == LOCK_TYPE_WRLCK or (t == LOCK_TYPE_RDLCK and kind == LOCK_TYPE_WRLCK):
                    return True
        return False

    def lock(self, owner: tuple[int, str, int], kind: int, start: int, end: int) -> bool:
        if self.conflict(owner, kind, start, end):
            return False
        types = self.bytes.setdefault(owner, [None] * SIZE)
        for i in range(start, end):
            types[i] = None if kind == LOCK_TYPE_UNLCK else kind
        return True

    def held(self) -> list[tuple[tuple[int, str, int], int, int, int]]:
        out = []
        for owner, types in self.bytes.items():
            i = 0
            while i < SIZE:
                kind = types[i]
                if kind is None:
                    i += 1
                    continue
                j = i
                while j < SIZE and types[j] == kind:
                    j += 1
                out.append((owner, kind, i, EOF_END if j == SIZE else j))
                i = j
        return sorted(out, key=lambda h: (h[2], h[3], h[0], h[1]))


def as_tuples(held: list[HeldLock]) -> list[tuple[tuple[int, str, int], int, int, int]]:
    return sorted(((h.owner, h.type, h.start, h.end) for h in held),
                  key=lambda h: (h[2], h[3], h[0], h[1]))  # fmt: skip


@pytest.mark.parametrize("seed", range(40))
def test_the_table_answers_as_the_model(seed: int) -> None:
    rng = random.Random(seed)
    owners = [(rng.randint(1, 3), rng.choice("ab"), rng.randint(1, 2)) for _ in range(4)]
    table, model = LockTable(), Model()
    for _ in range(300):
        owner = rng.choice(owners)
        kind = rng.choice(TYPES)
        start = rng.randrange(SIZE - 16)
        length = rng.choice((0, rng.randint(1, 16)))
        end = SIZE if length == 0 else start + length
        expected = model.conflict(owner, kind, start, end)
        witness = table.conflict(1, owner, kind, start, length)
        assert (witness is not None) == expected, (owner, kind, start, length)
        if witness is not None:  # another owner's, overlapping, and really held as said
            assert witness.owner != owner and witness.start < end and witness.end > start
            assert (witness.owner, witness.type, witness.start, witness.end) in model.held()
            assert LOCK_TYPE_WRLCK in (kind, witness.type)
        assert table.lock(1, owner, kind, start, length) == model.lock(owner, kind, start, end)
        assert as_tuples(table.held(1)) == model.held()
    for session in {o[0] for o in owners}:
        table.release_session(session)
        for owner in [o for o in model.bytes if o[0] == session]:
            del model.bytes[owner]
        assert as_tuples(table.held(1)) == model.held()


class Counter:
    def __init__(self, limit: int) -> None:
        self.used, self.limit = 0, limit

    def take(self, n: int = 1) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int = 1) -> None:
        self.used -= n


def test_lock_count_is_charged_and_refused_over_the_budget() -> None:
    table, charge = LockTable(), Counter(3)
    owner = (1, "a", 1)
    for i in range(3):
        assert table.lock(7, owner, LOCK_TYPE_WRLCK, 10 * i, 5, charge)
    assert charge.used == 3
    with pytest.raises(TooManyLocks):
        table.lock(7, owner, LOCK_TYPE_WRLCK, 100, 5, charge)
    assert table.lock(7, owner, LOCK_TYPE_WRLCK, 5, 5, charge)  # merges two: one fewer
    assert charge.used == 2
    assert table.lock(7, owner, LOCK_TYPE_UNLCK, 2, 1, charge)  # a split: one more
    assert charge.used == 3
    with pytest.raises(TooManyLocks):  # another split is one too many
        table.lock(7, owner, LOCK_TYPE_UNLCK, 7, 1, charge)
    assert table.lock(7, owner, LOCK_TYPE_UNLCK, 0, 0, charge)
    assert charge.used == 0 and table.held(7) == []
