"""The control-plane store: shares, access rules, instances, API tokens, gateways, and a
revisioned change feed that gateways follow (see docs/architecture.md, "The store").

Layout: ``_records.py`` (the frozen, validated records and enums), ``_codec.py`` (records ↔
JSON, shared by every implementation), ``_errors.py``, ``_base.py`` (the :class:`Store`
interface and its contracts), ``sqlite.py`` (the embedded default). The conformance suite
every implementation runs is ``vshare.testing.store_conformance``.
"""

from __future__ import annotations

from vshare.store._base import Store
from vshare.store._codec import dumps, load_as, loads, record_from_dict, record_to_dict
from vshare.store._errors import Compacted, Conflict, NotFound, StoreError, StoreUnavailable
from vshare.store._records import (
    KINDS,
    Change,
    GatewayRecord,
    GatewayStatus,
    InstanceRecord,
    Kind,
    Op,
    Record,
    RuleRecord,
    RuleState,
    ShareRecord,
    ShareStatus,
    Snapshot,
    TokenRecord,
    hash_token,
)
from vshare.store.sqlite import SqliteStore

__all__ = [
    "KINDS",
    "Change",
    "Compacted",
    "Conflict",
    "GatewayRecord",
    "GatewayStatus",
    "InstanceRecord",
    "Kind",
    "NotFound",
    "Op",
    "Record",
    "RuleRecord",
    "RuleState",
    "ShareRecord",
    "ShareStatus",
    "Snapshot",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TokenRecord",
    "dumps",
    "hash_token",
    "load_as",
    "loads",
    "open_store",
    "record_from_dict",
    "record_to_dict",
]

_USAGE = "use sqlite:///absolute/path.db, sqlite:relative/path.db or memory:"


def open_store(uri: str) -> Store:
    """Open the store a URI names.

    ========================  ====================================================
    ``sqlite:///abs/path.db``  a SQLite file at an absolute path (created if missing)
    ``sqlite:rel/path.db``     a SQLite file relative to the working directory
    ``memory:``                a private in-memory SQLite database (tests)
    ``etcd://host:port``       reserved: the etcd store comes with the fleet issue
    ========================  ====================================================

    Raises:
        ValueError: a URI this function does not understand (one line, for operators).
        StoreUnavailable: the store cannot be opened.
    """
    scheme, sep, rest = uri.partition(":")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"store URI {uri!r} has no scheme; {_USAGE}")
    if scheme == "memory":
        if rest:
            raise ValueError(f"store URI {uri!r}: memory: takes nothing after the colon")
        return SqliteStore(":memory:")
    if scheme == "sqlite":
        if rest.startswith("//"):
            # sqlite:///abs → "/abs"; anything between // and the next / is a host: refuse
            # it rather than silently reading "sqlite://x.db" as a relative path.
            host, slash, path = rest[2:].partition("/")
            if host or not slash or not path:
                raise ValueError(f"store URI {uri!r}: {_USAGE}")
            return SqliteStore("/" + path)
        if not rest or rest == ":memory:":
            raise ValueError(f"store URI {uri!r} names no file; {_USAGE}")
        return SqliteStore(rest)
    if scheme.startswith("etcd"):
        raise ValueError("etcd store: not available yet (fleet issue)")
    raise ValueError(f"store URI {uri!r}: unknown scheme {scheme!r}; {_USAGE}")
