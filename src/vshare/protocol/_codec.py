"""Encoders and decoders compiled from the message declarations.

Strategy: each message class in :mod:`._messages` is turned, once at import, into one
encoder and one decoder function by generating Python source from its field list (the way
``collections.namedtuple`` and ``dataclasses`` do). Runs of fixed-size fields collapse into a
single precompiled :class:`struct.Struct` call, so Rgetattr (20 fields, a qid among them)
decodes with one ``unpack_from`` and encodes with one ``pack``. The tables in
``_messages`` stay the single description of the wire format; this module only knows how
to read and write the handful of field kinds.

Invariants the decoders keep, whatever the input:
- they read only between ``pos`` and ``end`` (the frame's own bytes), never past it;
- every length the peer sends is checked against the bytes actually present *before*
  anything is sliced or allocated, so no allocation is driven by an unchecked size;
- a frame must be consumed exactly: trailing bytes are an error;
- they raise :class:`RemoteProtocolError` and nothing else.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final, cast, get_args, get_origin, get_type_hints

from vshare.protocol._constants import MAXWELEM
from vshare.protocol._errors import LocalProtocolError, RemoteProtocolError
from vshare.protocol._messages import MESSAGE_TYPES, Message, Qid, Wire

Buffer = bytes | bytearray | memoryview
Decoder = Callable[[Buffer, int, int], Message]
Encoder = Callable[[int, Any], tuple[bytes, Buffer | None]]

_FIXED: Final = frozenset({Wire.U8, Wire.U16, Wire.U32, Wire.U64})
_QID: Final = "qid"
_QID_STRUCT: Final = struct.Struct("<BIQ")
_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")
_tuple_new = tuple.__new__


# --- field helpers used by the generated code -----------------------------------------


def _short(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"{what}: frame too short")


def _trailing(what: str, extra: int) -> RemoteProtocolError:
    return RemoteProtocolError(f"{what}: {extra} unexpected bytes at the end of the frame")


def _read_str(buf: Buffer, pos: int, end: int) -> tuple[str, int]:
    if pos + 2 > end:
        raise RemoteProtocolError("string length runs past the end of the frame")
    start = pos + 2
    stop = start + (buf[pos] | buf[pos + 1] << 8)
    if stop > end:
        raise RemoteProtocolError("string runs past the end of the frame")
    # Names on Linux are bytes, not text: bytes that are not UTF-8 decode to lone
    # surrogates (PEP 383) and encode back to the same bytes, so a guest's b"caf\xe9"
    # reaches the disk as it was sent. Decoding never fails.
    return str(buf[start:stop], "utf-8", "surrogateescape"), stop


def _read_walk_count(buf: Buffer, pos: int, end: int, field: str, items: str) -> tuple[int, int]:
    """A walk's element count (``field``: nwname, nwqid), refused above MAXWELEM before
    any element is read."""
    if pos + 2 > end:
        raise RemoteProtocolError(f"{field} runs past the end of the frame")
    count = buf[pos] | buf[pos + 1] << 8
    if count > MAXWELEM:
        raise RemoteProtocolError(f"{count} {items} (at most {MAXWELEM})")
    return count, pos + 2


def _read_names(buf: Buffer, pos: int, end: int) -> tuple[tuple[str, ...], int]:
    count, pos = _read_walk_count(buf, pos, end, "nwname", "walk names")
    names = []
    for _ in range(count):
        name, pos = _read_str(buf, pos, end)
        names.append(name)
    return tuple(names), pos


def _read_qids(buf: Buffer, pos: int, end: int) -> tuple[tuple[Qid, ...], int]:
    count, pos = _read_walk_count(buf, pos, end, "nwqid", "qids in a walk reply")
    if pos + 13 * count > end:
        raise RemoteProtocolError("qids run past the end of the frame")
    qids = tuple(_tuple_new(Qid, _QID_STRUCT.unpack_from(buf, pos + 13 * i)) for i in range(count))
    return qids, pos + 13 * count


def _read_data(buf: Buffer, pos: int, end: int) -> tuple[memoryview, int]:
    if pos + 4 > end:
        raise RemoteProtocolError("count runs past the end of the frame")
    count = _U32.unpack_from(buf, pos)[0]
    pos += 4
    if pos + count != end:
        raise RemoteProtocolError(f"count {count} disagrees with the {end - pos} data bytes")
    view = buf if type(buf) is memoryview else memoryview(buf)
    return view[pos:end], end


def _enc_str(value: str) -> bytes:
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except (UnicodeEncodeError, AttributeError) as exc:
        raise LocalProtocolError(f"cannot encode {value!r} as a 9P string: {exc}") from None
    if len(raw) > 0xFFFF:
        raise LocalProtocolError(f"string of {len(raw)} bytes (at most 65535)")
    return _U16.pack(len(raw)) + raw


def _enc_names(names: tuple[str, ...]) -> bytes:
    if len(names) > MAXWELEM:
        raise LocalProtocolError(f"{len(names)} walk names (at most {MAXWELEM})")
    return _U16.pack(len(names)) + b"".join(_enc_str(n) for n in names)


def _enc_qids(qids: tuple[Qid, ...]) -> bytes:
    if len(qids) > MAXWELEM:
        raise LocalProtocolError(f"{len(qids)} qids (at most {MAXWELEM})")
    return _U16.pack(len(qids)) + b"".join(_QID_STRUCT.pack(*q) for q in qids)


def nbytes(data: Buffer) -> int:
    if type(data) is bytes or type(data) is bytearray:
        return len(data)
    if isinstance(data, memoryview):
        return data.nbytes
    raise LocalProtocolError(f"data must be bytes-like, not {type(data).__name__}")


#: The generated decoders' helper for each variable-size field kind.
_READERS: Final = {Wire.STR: "_str", Wire.NAMES: "_names", Wire.QIDS: "_qids", Wire.DATA: "_data"}

_HELPERS: Final[dict[str, object]] = {
    "_short": _short,
    "_trailing": _trailing,
    "_str": _read_str,
    "_names": _read_names,
    "_qids": _read_qids,
    "_data": _read_data,
    "_enc_str": _enc_str,
    "_enc_names": _enc_names,
    "_enc_qids": _enc_qids,
    "_nbytes": nbytes,
    "_tnew": _tuple_new,
    "_Qid": Qid,
    "_U32": _U32,
}


# --- the compiler ---------------------------------------------------------------------


def wire_fields(cls: type[Message]) -> list[tuple[str, str]]:
    """``[(field name, wire kind), ...]`` of a message class, from its annotations."""
    hints = get_type_hints(cls, include_extras=True)
    fields = []
    for name in cls._fields:
        hint = hints[name]
        if hint is Qid:
            kind = _QID
        else:
            args = get_args(hint)
            if not args or get_origin(hint) is None:
                raise TypeError(f"{cls.__name__}.{name}: no wire type")
            kind = args[-1]
        fields.append((name, kind))
    return fields


def _compile_decoder(cls: type[Message], fields: list[tuple[str, str]]) -> Decoder:
    what = cls.__name__
    ns: dict[str, object] = dict(_HELPERS, _cls=cls)
    lines = ["def decode(buf, pos, end):"]
    args: list[str] = []
    pending_fmt = ""
    pending_vars: list[str] = []

    def flush() -> None:
        nonlocal pending_fmt, pending_vars
        if not pending_fmt:
            return
        st = struct.Struct("<" + pending_fmt)
        sname = f"_s{len(ns)}"
        ns[sname] = st
        lines.append(f"    if pos + {st.size} > end: raise _short({what!r})")
        lines.append(f"    {', '.join(pending_vars)}, = {sname}.unpack_from(buf, pos)")
        lines.append(f"    pos += {st.size}")
        pending_fmt, pending_vars = "", []

    for i, (_name, kind) in enumerate(fields):
        var = f"v{i}"
        if kind in _FIXED:
            pending_fmt += kind
            pending_vars.append(var)
            args.append(var)
        elif kind == _QID:
            pending_fmt += "BIQ"
            parts = [f"{var}t", f"{var}v", f"{var}p"]
            pending_vars.extend(parts)
            args.append(f"_tnew(_Qid, ({', '.join(parts)}))")
        else:
            flush()
            helper = _READERS.get(kind)
            if helper is None:
                raise TypeError(f"{what}: unknown wire kind {kind!r}")
            lines.append(f"    {var}, pos = {helper}(buf, pos, end)")
            args.append(var)
    flush()
    lines.append(f"    if pos != end: raise _trailing({what!r}, end - pos)")
    if args:
        lines.append(f"    return _tnew(_cls, ({', '.join(args)},))")
    else:
        ns["_empty"] = cast(Any, cls)()
        lines.append("    return _empty")
    exec("\n".join(lines), ns)
    return ns["decode"]  # type: ignore[return-value]


def _compile_encoder(cls: type[Message], type_num: int, fields: list[tuple[str, str]]) -> Encoder:
    what = cls.__name__
    ns: dict[str, object] = dict(_HELPERS)
    lines = ["def encode(tag, m):"]
    if fields:
        lines.append(f"    {', '.join(f'v{i}' for i in range(len(fields)))}, = m")
    # Segments in wire order: ("fixed", fmt, [exprs]) or ("var", expr of bytes).
    segments: list[tuple[str, str, list[str]]] = [("fixed", "IBH", ["size", str(type_num), "tag"])]
    size_terms = []
    payload = None
    for i, (_name, kind) in enumerate(fields):
        var = f"v{i}"
        if kind in _FIXED or kind == _QID:
            fmt, exprs = (
                (kind, [var])
                if kind in _FIXED
                else ("BIQ", [f"{var}[0]", f"{var}[1]", f"{var}[2]"])
            )
            if segments[-1][0] == "fixed":
                _, prev_fmt, prev_exprs = segments[-1]
                segments[-1] = ("fixed", prev_fmt + fmt, [*prev_exprs, *exprs])
            else:
                segments.append(("fixed", fmt, exprs))
        elif kind == Wire.DATA:
            if i != len(fields) - 1:
                raise TypeError(f"{what}: data must be the last field")
            lines.append(f"    n = _nbytes({var})")
            size_terms.append("4 + n")
            segments.append(("var", "_U32.pack(n)", []))
            payload = var
        else:
            helper = {Wire.STR: "_enc_str", Wire.NAMES: "_enc_names", Wire.QIDS: "_enc_qids"}[kind]
            lines.append(f"    b{i} = {helper}({var})")
            size_terms.append(f"len(b{i})")
            segments.append(("var", f"b{i}", []))
    fixed_size = 0
    parts = []
    for seg_kind, fmt_or_expr, exprs in segments:
        if seg_kind == "fixed":
            st = struct.Struct("<" + fmt_or_expr)
            sname = f"_s{len(ns)}"
            ns[sname] = st
            fixed_size += st.size
            parts.append(f"{sname}.pack({', '.join(exprs)})")
        else:
            parts.append(fmt_or_expr)
    lines.append(f"    size = {' + '.join([str(fixed_size), *size_terms])}")
    head = parts[0] if len(parts) == 1 else f"b''.join(({', '.join(parts)},))"
    lines.append(f"    return {head}, {payload if payload else 'None'}")
    exec("\n".join(lines), ns)
    return ns["encode"]  # type: ignore[return-value]


DECODERS: Final[dict[int, Decoder]] = {}
ENCODERS: Final[dict[type[Message], Encoder]] = {}
for _num, _cls in MESSAGE_TYPES.items():
    _fields = wire_fields(_cls)
    DECODERS[_num] = _compile_decoder(_cls, _fields)
    ENCODERS[_cls] = _compile_encoder(_cls, _num, _fields)
del _num, _cls, _fields
