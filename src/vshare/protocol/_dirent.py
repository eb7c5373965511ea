"""Directory entries inside Rreaddir's data: ``qid[13] offset[8] type[1] name[s]``.

``offset`` is the cookie a client passes in its next Treaddir to continue *after* this
entry; ``type`` is the ``d_type`` of ``readdir(3)`` (DT_DIR, DT_REG, ...).

Rreaddirplus (vshare's extension, ``VERSION_VSHARE_2``) packs each entry followed by its
attributes: Rgetattr's fields after its qid (which the entry has already), ``valid[8]
mode[4] uid[4] gid[4] nlink[8] rdev[8] size[8] blksize[8] blocks[8]`` and the times,
``gen[8] data_version[8]`` (144 bytes). ``valid`` 0 means "no attributes": ``.`` and
``..``, or a name removed between the listing and its stat; the client asks for those.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final, NamedTuple

from vshare.protocol._errors import RemoteProtocolError
from vshare.protocol._messages import Qid, Rgetattr

_ENTRY_HEAD: Final = struct.Struct("<BIQQBH")  # qid, offset, type, name length
_ENTRY_FIXED: Final = _ENTRY_HEAD.size  # 24
#: Rgetattr's fields after its qid: valid, mode, uid, gid, nlink ... data_version.
_ATTRS: Final = struct.Struct("<QIIIQQQQQ" + "Q" * 10)
ATTRS_SIZE: Final = _ATTRS.size  # 144
NO_ATTRS: Final = bytes(ATTRS_SIZE)  # valid 0


class Dirent(NamedTuple):
    qid: Qid
    offset: int
    type: int
    name: str


class DirentPacker:
    """Packs whole entries into at most ``count`` bytes (a Treaddir's count).

    >>> packer = DirentPacker(count)
    >>> for entry in entries:
    ...     if not packer.add(entry.qid, entry.cookie, entry.d_type, entry.name):
    ...         break          # did not fit: resume from packer.offset next time
    >>> data = packer.getvalue()
    """

    __slots__ = ("_parts", "count", "offset", "size")

    def __init__(self, count: int) -> None:
        self.count = count
        self.size = 0
        #: The offset of the last entry added: where the next Treaddir continues.
        self.offset = 0
        self._parts: list[bytes] = []

    def add(self, qid: Qid, offset: int, d_type: int, name: str, attrs: bytes = b"") -> bool:
        """Add one entry if it fits whole; return False (and add nothing) if not.
        ``attrs``: Rreaddirplus's attribute block (:func:`pack_attrs`), after the name."""
        raw = name.encode("utf-8", "surrogateescape")  # names are bytes: see _codec
        need = _ENTRY_FIXED + len(raw) + len(attrs)
        if self.size + need > self.count:
            return False
        head = _ENTRY_HEAD.pack(qid[0], qid[1], qid[2], offset, d_type, len(raw))
        self._parts.append(head + raw + attrs)
        self.size += need
        self.offset = offset
        return True

    def __len__(self) -> int:
        return len(self._parts)

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


def pack_dirents(entries: Iterable[Dirent], count: int) -> tuple[bytes, int]:
    """Pack as many whole entries as fit in ``count`` bytes.

    Returns:
        The packed bytes and the number of entries packed.
    """
    packer = DirentPacker(count)
    for entry in entries:
        if not packer.add(entry.qid, entry.offset, entry.type, entry.name):
            break
    return packer.getvalue(), len(packer)


def unpack_dirents(data: bytes | bytearray | memoryview) -> list[Dirent]:
    """Decode Rreaddir data into entries.

    Raises:
        RemoteProtocolError: the data does not hold whole, valid entries.
    """
    view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
    end = view.nbytes
    pos = 0
    out = []
    while pos < end:
        if pos + _ENTRY_FIXED > end:
            raise RemoteProtocolError("directory entry runs past the end of the data")
        qtype, qvers, qpath, offset, d_type, n = _ENTRY_HEAD.unpack_from(view, pos)
        pos += _ENTRY_FIXED
        if pos + n > end:
            raise RemoteProtocolError("directory entry name runs past the end of the data")
        name = str(view[pos : pos + n], "utf-8", "surrogateescape")
        pos += n
        out.append(Dirent(Qid(qtype, qvers, qpath), offset, d_type, name))
    return out


def pack_attrs(r: Rgetattr) -> bytes:
    """The attribute block of one Rreaddirplus entry: ``r``'s fields but its qid."""
    return _ATTRS.pack(r.valid, *r[2:])


def unpack_dirents_plus(
    data: bytes | bytearray | memoryview,
) -> list[tuple[Dirent, Rgetattr | None]]:
    """Decode Rreaddirplus data: each entry with its attributes, as the Rgetattr a
    Tgetattr of it would have answered (None where the gateway had none: valid 0).

    Raises:
        RemoteProtocolError: the data does not hold whole, valid entries.
    """
    view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
    end = view.nbytes
    pos = 0
    out: list[tuple[Dirent, Rgetattr | None]] = []
    while pos < end:
        if pos + _ENTRY_FIXED > end:
            raise RemoteProtocolError("directory entry runs past the end of the data")
        qtype, qvers, qpath, offset, d_type, n = _ENTRY_HEAD.unpack_from(view, pos)
        pos += _ENTRY_FIXED
        if pos + n + ATTRS_SIZE > end:
            raise RemoteProtocolError("directory entry runs past the end of the data")
        name = str(view[pos : pos + n], "utf-8", "surrogateescape")
        pos += n
        fields = _ATTRS.unpack_from(view, pos)
        pos += ATTRS_SIZE
        qid = Qid(qtype, qvers, qpath)
        attrs = Rgetattr(fields[0], qid, *fields[1:]) if fields[0] else None
        out.append((Dirent(qid, offset, d_type, name), attrs))
    return out
