"""Change records, the data of Rwatch (``VERSION_VSHARE_3``; docs/changes-feed.md).

One record per changed thing, packed back to back::

    kinds[1] path[8] name[s]

``path`` is a qid.path; ``kinds`` a mask of :data:`CHANGE_ATTR` (the attributes of file
``path``), :data:`CHANGE_DATA` (its contents), :data:`CHANGE_ENTRY` (the name ``name`` in
directory ``path`` was added, removed or now names another file) and :data:`CHANGE_ALL`
(anything may have changed: drop every cache; ``path`` 0, ``name`` empty). ``name`` is
empty but for CHANGE_ENTRY. Bits a client does not know it treats as CHANGE_ALL, so kinds
can be added without a new version.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final, NamedTuple

from vshare.protocol._errors import RemoteProtocolError

CHANGE_ATTR: Final = 0x01
CHANGE_DATA: Final = 0x02
CHANGE_ENTRY: Final = 0x04
CHANGE_ALL: Final = 0x80
#: The kinds this version knows.
CHANGE_KNOWN: Final = CHANGE_ATTR | CHANGE_DATA | CHANGE_ENTRY | CHANGE_ALL

_HEAD: Final = struct.Struct("<BQH")


class Change(NamedTuple):
    kinds: int
    path: int
    name: str = ""


def change_size(change: Change) -> int:
    """Bytes the record takes on the wire."""
    return _HEAD.size + len(change.name.encode("utf-8", "surrogateescape"))


def pack_changes(changes: Iterable[Change], limit: int) -> tuple[bytes, int]:
    """Pack records while they fit in ``limit`` bytes; returns the data and how many were
    packed (the caller keeps the rest for the next reply)."""
    out = bytearray()
    n = 0
    for kinds, path, name in changes:
        raw = name.encode("utf-8", "surrogateescape")
        if len(out) + _HEAD.size + len(raw) > limit:
            break
        out += _HEAD.pack(kinds, path, len(raw))
        out += raw
        n += 1
    return bytes(out), n


def unpack_changes(data: bytes | bytearray | memoryview) -> list[Change]:
    """The records of an Rwatch; RemoteProtocolError if they do not fill it exactly."""
    out: list[Change] = []
    pos, end = 0, len(data)
    while pos < end:
        if pos + _HEAD.size > end:
            raise RemoteProtocolError("Rwatch: a change record runs past the end")
        kinds, path, length = _HEAD.unpack_from(data, pos)
        pos += _HEAD.size
        if pos + length > end:
            raise RemoteProtocolError("Rwatch: a change record's name runs past the end")
        name = str(data[pos : pos + length], "utf-8", "surrogateescape")
        pos += length
        out.append(Change(kinds, path, name))
    return out
