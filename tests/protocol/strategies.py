"""Hypothesis strategies for every 9P2000.L message, derived from the message table."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from vshare.protocol import MAXWELEM, MESSAGE_TYPES, Message, Qid
from vshare.protocol._codec import wire_fields

# Text that encodes to at most 65535 UTF-8 bytes; surrogates cannot be encoded at all.
_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)

qids = st.builds(
    Qid,
    st.integers(0, 0xFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFFFFFFFFFF),
)

_KIND: dict[str, st.SearchStrategy[Any]] = {
    "B": st.integers(0, 0xFF),
    "H": st.integers(0, 0xFFFF),
    "I": st.integers(0, 0xFFFFFFFF),
    "Q": st.integers(0, 0xFFFFFFFFFFFFFFFF),
    "s": _text,
    "names": st.lists(_text, max_size=MAXWELEM).map(tuple),
    "qids": st.lists(qids, max_size=MAXWELEM).map(tuple),
    "data": st.binary(max_size=300),
    "qid": qids,
}


def message_strategy(cls: type[Message]) -> st.SearchStrategy[Message]:
    return st.builds(cls, *(_KIND[kind] for _name, kind in wire_fields(cls)))


any_message: st.SearchStrategy[Message] = st.one_of(
    *(message_strategy(cls) for cls in MESSAGE_TYPES.values())
)


def normalized(msg: Message) -> tuple[type, tuple[Any, ...]]:
    """Type and fields, with memoryview payloads turned into bytes (comparable)."""
    return type(msg), tuple(bytes(v) if isinstance(v, memoryview) else v for v in msg)
