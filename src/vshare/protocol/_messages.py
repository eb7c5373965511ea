"""Every 9P2000.L message, declared once.

Each message is a :class:`~typing.NamedTuple` whose annotations carry the wire type of each
field (``U32`` is ``int`` to mypy and "four bytes, little-endian" to the codec). The codec
(:mod:`._codec`) compiles an encoder and a decoder from these declarations; nothing else
describes the wire format. :data:`MESSAGE_TYPES` maps type numbers to classes.

Note: NamedTuples compare as tuples, so ``Tclunk(1) == Tremove(1)``. Compare types too.
"""

from __future__ import annotations

from typing import Annotated, Final, NamedTuple, TypeAlias


class Wire:
    """Markers for the wire type of a field (used in ``Annotated``)."""

    U8: Final = "B"
    U16: Final = "H"
    U32: Final = "I"
    U64: Final = "Q"
    STR: Final = "s"  # size[2] + UTF-8
    NAMES: Final = "names"  # nwname[2] + nwname * s
    QIDS: Final = "qids"  # nwqid[2] + nwqid * qid[13]
    DATA: Final = "data"  # count[4] + count bytes (decoded as a memoryview into the frame)


U8: TypeAlias = Annotated[int, Wire.U8]
U16: TypeAlias = Annotated[int, Wire.U16]
U32: TypeAlias = Annotated[int, Wire.U32]
U64: TypeAlias = Annotated[int, Wire.U64]
Str: TypeAlias = Annotated[str, Wire.STR]
Names: TypeAlias = Annotated[tuple[str, ...], Wire.NAMES]
#: bytes-like: bytes, bytearray or a byte memoryview. Decoded as a memoryview (no copy).
Data: TypeAlias = Annotated["bytes | bytearray | memoryview", Wire.DATA]


class Qid(NamedTuple):
    """The server's unique identity of a file: type[1] version[4] path[8]."""

    type: U8
    version: U32
    path: U64


Qids: TypeAlias = Annotated[tuple[Qid, ...], Wire.QIDS]

# --- session -------------------------------------------------------------------------


class Tversion(NamedTuple):
    msize: U32
    version: Str


class Rversion(NamedTuple):
    msize: U32
    version: Str


class Tauth(NamedTuple):
    afid: U32
    uname: Str
    aname: Str
    n_uname: U32


class Rauth(NamedTuple):
    aqid: Qid


class Tattach(NamedTuple):
    fid: U32
    afid: U32
    uname: Str
    aname: Str
    n_uname: U32


class Rattach(NamedTuple):
    qid: Qid


class Rlerror(NamedTuple):
    ecode: U32


class Tflush(NamedTuple):
    oldtag: U16


class Rflush(NamedTuple):
    pass


# --- fids and I/O --------------------------------------------------------------------


class Twalk(NamedTuple):
    fid: U32
    newfid: U32
    wnames: Names


class Rwalk(NamedTuple):
    qids: Qids


class Tread(NamedTuple):
    fid: U32
    offset: U64
    count: U32  # type: ignore[assignment]  # the wire's name; shadows tuple.count


class Rread(NamedTuple):
    data: Data


class Twrite(NamedTuple):
    fid: U32
    offset: U64
    data: Data


class Rwrite(NamedTuple):
    count: U32  # type: ignore[assignment]  # the wire's name; shadows tuple.count


class Tclunk(NamedTuple):
    fid: U32


class Rclunk(NamedTuple):
    pass


class Tremove(NamedTuple):
    fid: U32


class Rremove(NamedTuple):
    pass


# --- 9P2000.L ------------------------------------------------------------------------


class Tstatfs(NamedTuple):
    fid: U32


class Rstatfs(NamedTuple):
    type: U32
    bsize: U32
    blocks: U64
    bfree: U64
    bavail: U64
    files: U64
    ffree: U64
    fsid: U64
    namelen: U32


class Tlopen(NamedTuple):
    fid: U32
    flags: U32


class Rlopen(NamedTuple):
    qid: Qid
    iounit: U32


class Tlcreate(NamedTuple):
    fid: U32
    name: Str
    flags: U32
    mode: U32
    gid: U32


class Rlcreate(NamedTuple):
    qid: Qid
    iounit: U32


class Tsymlink(NamedTuple):
    fid: U32
    name: Str
    symtgt: Str
    gid: U32


class Rsymlink(NamedTuple):
    qid: Qid


class Tmknod(NamedTuple):
    dfid: U32
    name: Str
    mode: U32
    major: U32
    minor: U32
    gid: U32


class Rmknod(NamedTuple):
    qid: Qid


class Trename(NamedTuple):
    fid: U32
    dfid: U32
    name: Str


class Rrename(NamedTuple):
    pass


class Treadlink(NamedTuple):
    fid: U32


class Rreadlink(NamedTuple):
    target: Str


class Tgetattr(NamedTuple):
    fid: U32
    request_mask: U64


class Rgetattr(NamedTuple):
    valid: U64
    qid: Qid
    mode: U32
    uid: U32
    gid: U32
    nlink: U64
    rdev: U64
    size: U64
    blksize: U64
    blocks: U64
    atime_sec: U64
    atime_nsec: U64
    mtime_sec: U64
    mtime_nsec: U64
    ctime_sec: U64
    ctime_nsec: U64
    btime_sec: U64
    btime_nsec: U64
    gen: U64
    data_version: U64


class Tsetattr(NamedTuple):
    fid: U32
    valid: U32
    mode: U32
    uid: U32
    gid: U32
    size: U64
    atime_sec: U64
    atime_nsec: U64
    mtime_sec: U64
    mtime_nsec: U64


class Rsetattr(NamedTuple):
    pass


class Txattrwalk(NamedTuple):
    fid: U32
    newfid: U32
    name: Str


class Rxattrwalk(NamedTuple):
    size: U64


class Txattrcreate(NamedTuple):
    fid: U32
    name: Str
    attr_size: U64
    flags: U32


class Rxattrcreate(NamedTuple):
    pass


class Treaddir(NamedTuple):
    fid: U32
    offset: U64
    count: U32  # type: ignore[assignment]  # the wire's name; shadows tuple.count


class Rreaddir(NamedTuple):
    """``data`` holds packed directory entries: see :mod:`._dirent`."""

    data: Data


class Treaddirplus(NamedTuple):
    """vshare's extension (``VERSION_VSHARE_2``): Treaddir whose entries carry attributes."""

    fid: U32
    offset: U64
    count: U32  # type: ignore[assignment]  # as Treaddir's


class Rreaddirplus(NamedTuple):
    """``data`` holds entries with attributes: see :func:`._dirent.unpack_dirents_plus`.
    ``end`` is 1 when the listing ends with them: no Treaddirplus is needed to learn it."""

    end: U8
    data: Data


class Twatch(NamedTuple):
    """vshare's change feed (``VERSION_VSHARE_3``): wait for changes to the files of the
    attachment ``fid`` belongs to. ``seq`` is the ``seq`` of the last Rwatch the client
    got on this session (0 to begin); ``count`` bounds the reply's data, as Tread's."""

    fid: U32
    seq: U64
    count: U32  # type: ignore[assignment]  # as Treaddir's


class Rwatch(NamedTuple):
    """``data`` holds change records (:func:`._changes.unpack_changes`); ``seq`` is the
    number the client sends in its next Twatch."""

    seq: U64
    data: Data


class Tgetattrat(NamedTuple):
    """vshare's extension (``VERSION_VSHARE_2``): the attributes of ``name`` in the
    directory ``dfid``, as a Twalk to it and a Tgetattr would give them, without a fid:
    a client holds no fid for a file it only looks at."""

    dfid: U32
    name: Str
    request_mask: U64


class Rgetattrat(Rgetattr):
    """Rgetattr's fields, under its own type number (a client may read it as one)."""

    __slots__ = ()


class Tlcreateat(NamedTuple):
    """vshare's extension (``VERSION_VSHARE_4``): Tlcreate of ``name`` in the directory
    ``dfid`` that leaves ``dfid`` as it is and makes ``newfid`` the created, opened file,
    as a Twalk of ``dfid`` to ``newfid`` and a Tlcreate on ``newfid`` would: one request a
    created file instead of two."""

    dfid: U32
    newfid: U32
    name: Str
    flags: U32
    mode: U32
    gid: U32


class Rlcreateat(Rlcreate):
    """Rlcreate's fields, under its own type number."""

    __slots__ = ()


class Twalkopen(NamedTuple):
    """vshare's extension (``VERSION_VSHARE_4``): a Twalk of ``fid`` to the new fid
    ``newfid`` by at most one name, and a Tlopen of ``newfid`` with ``flags``, in one
    request: an open of a file known by its directory's fid or by its own."""

    fid: U32
    newfid: U32
    flags: U32
    wnames: Names


class Rwalkopen(Rlopen):
    """Rlopen's fields, under its own type number."""

    __slots__ = ()


class Tfallocate(NamedTuple):
    """vshare's extension (``VERSION_VSHARE_5``): fallocate(2) of the open fid ``fid``,
    ``length`` bytes from ``offset``, with ``mode`` (``FALLOC_*``)."""

    fid: U32
    mode: U32
    offset: U64
    length: U64


class Rfallocate(NamedTuple):
    pass


class Tfsync(NamedTuple):
    fid: U32
    datasync: U32


class Rfsync(NamedTuple):
    pass


class Tlock(NamedTuple):
    fid: U32
    type: U8
    flags: U32
    start: U64
    length: U64
    proc_id: U32
    client_id: Str


class Rlock(NamedTuple):
    status: U8


class Tgetlock(NamedTuple):
    fid: U32
    type: U8
    start: U64
    length: U64
    proc_id: U32
    client_id: Str


class Rgetlock(NamedTuple):
    type: U8
    start: U64
    length: U64
    proc_id: U32
    client_id: Str


class Tlink(NamedTuple):
    dfid: U32
    fid: U32
    name: Str


class Rlink(NamedTuple):
    pass


class Tmkdir(NamedTuple):
    dfid: U32
    name: Str
    mode: U32
    gid: U32


class Rmkdir(NamedTuple):
    qid: Qid


class Trenameat(NamedTuple):
    olddirfid: U32
    oldname: Str
    newdirfid: U32
    newname: Str


class Rrenameat(NamedTuple):
    pass


class Tunlinkat(NamedTuple):
    dirfid: U32
    name: Str
    flags: U32


class Runlinkat(NamedTuple):
    pass


#: Any message, T or R.
Message: TypeAlias = (
    Tversion | Rversion | Tauth | Rauth | Tattach | Rattach | Rlerror | Tflush | Rflush
    | Twalk | Rwalk | Tread | Rread | Twrite | Rwrite | Tclunk | Rclunk | Tremove | Rremove
    | Tstatfs | Rstatfs | Tlopen | Rlopen | Tlcreate | Rlcreate | Tsymlink | Rsymlink
    | Tmknod | Rmknod | Trename | Rrename | Treadlink | Rreadlink | Tgetattr | Rgetattr
    | Tsetattr | Rsetattr | Txattrwalk | Rxattrwalk | Txattrcreate | Rxattrcreate
    | Treaddir | Rreaddir | Tfsync | Rfsync | Tlock | Rlock | Tgetlock | Rgetlock
    | Tlink | Rlink | Tmkdir | Rmkdir | Trenameat | Rrenameat | Tunlinkat | Runlinkat
    | Treaddirplus | Rreaddirplus | Twatch | Rwatch | Tgetattrat | Rgetattrat
    | Tlcreateat | Rlcreateat | Twalkopen | Rwalkopen | Tfallocate | Rfallocate
)  # fmt: skip

#: The type number of every message. T-messages are even, R-messages odd; Rerror (107)
#: of 9P2000 is deliberately absent: 9P2000.L answers errors with Rlerror only.
MESSAGE_TYPES: Final[dict[int, type[Message]]] = {
    7: Rlerror,
    8: Tstatfs, 9: Rstatfs,
    12: Tlopen, 13: Rlopen,
    14: Tlcreate, 15: Rlcreate,
    16: Tsymlink, 17: Rsymlink,
    18: Tmknod, 19: Rmknod,
    20: Trename, 21: Rrename,
    22: Treadlink, 23: Rreadlink,
    24: Tgetattr, 25: Rgetattr,
    26: Tsetattr, 27: Rsetattr,
    30: Txattrwalk, 31: Rxattrwalk,
    32: Txattrcreate, 33: Rxattrcreate,
    40: Treaddir, 41: Rreaddir,
    50: Tfsync, 51: Rfsync,
    52: Tlock, 53: Rlock,
    54: Tgetlock, 55: Rgetlock,
    70: Tlink, 71: Rlink,
    72: Tmkdir, 73: Rmkdir,
    74: Trenameat, 75: Rrenameat,
    76: Tunlinkat, 77: Runlinkat,
    100: Tversion, 101: Rversion,
    102: Tauth, 103: Rauth,
    104: Tattach, 105: Rattach,
    108: Tflush, 109: Rflush,
    110: Twalk, 111: Rwalk,
    116: Tread, 117: Rread,
    118: Twrite, 119: Rwrite,
    120: Tclunk, 121: Rclunk,
    122: Tremove, 123: Rremove,
    # vshare's extension, only sent on a session that agreed to VERSION_VSHARE_2:
    # numbers that neither 9P2000, 9P2000.u nor 9P2000.L use.
    150: Treaddirplus, 151: Rreaddirplus,
    154: Tgetattrat, 155: Rgetattrat,
    # only on a session that agreed to VERSION_VSHARE_3:
    152: Twatch, 153: Rwatch,
    # only on a session that agreed to VERSION_VSHARE_4:
    156: Tlcreateat, 157: Rlcreateat,
    158: Twalkopen, 159: Rwalkopen,
    # only on a session that agreed to VERSION_VSHARE_5:
    160: Tfallocate, 161: Rfallocate,
}  # fmt: skip

TYPE_NUMBERS: Final[dict[type[Message], int]] = {cls: n for n, cls in MESSAGE_TYPES.items()}


def is_request(msg_type: int) -> bool:
    """T-messages have even type numbers, R-messages odd ones."""
    return msg_type % 2 == 0
