"""The control-plane store: shares, access rules, instances, API tokens, gateways, quotas,
and a revisioned change feed that gateways follow (see docs/architecture.md, "The store").

Layout: ``_records.py`` (the frozen, validated records and enums), ``_codec.py`` (records ↔
JSON, shared by every implementation), ``_errors.py``, ``_quota.py`` (per-tenant quotas:
the limits and the check), ``_base.py`` (the :class:`Store` interface and its contracts),
``_ledger.py`` (the integrity rules and every record-level method, written once over a
small transaction view each engine implements), ``sqlite.py`` (the embedded default, its
schema in ``_sqlite_schema.py``), ``etcd.py`` (a fleet's store: its keys and views in
``_etcd_view.py``, over ``_etcd_client.py``). The engines only store. The conformance
suite every implementation runs is ``vshare.testing.store_conformance``.
"""

from __future__ import annotations

import math
import urllib.parse

from vshare.store._base import Store
from vshare.store._codec import dumps, load_as, loads, record_from_dict, record_to_dict
from vshare.store._errors import (
    Compacted,
    Conflict,
    NotFound,
    OverQuota,
    StoreError,
    StoreUnavailable,
)
from vshare.store._quota import DEFAULT_QUOTA, QuotaUsage, check_share, tally, usage_of
from vshare.store._records import (
    DEFAULT_SHARE_CACHE,
    KINDS,
    MAX_QUOTA,
    SHARE_CACHE_MODES,
    UNLIMITED,
    Change,
    GatewayRecord,
    GatewayStatus,
    InstanceRecord,
    Kind,
    Op,
    QuotaRecord,
    Record,
    RuleRecord,
    RuleState,
    ShareCache,
    ShareRecord,
    ShareStatus,
    Snapshot,
    TokenRecord,
    apply_changes,
    hash_token,
)
from vshare.store.etcd import EtcdStore
from vshare.store.sqlite import SqliteStore

__all__ = [
    "DEFAULT_QUOTA",
    "DEFAULT_SHARE_CACHE",
    "KINDS",
    "MAX_QUOTA",
    "SHARE_CACHE_MODES",
    "UNLIMITED",
    "Change",
    "Compacted",
    "Conflict",
    "EtcdStore",
    "GatewayRecord",
    "GatewayStatus",
    "InstanceRecord",
    "Kind",
    "NotFound",
    "Op",
    "OverQuota",
    "QuotaRecord",
    "QuotaUsage",
    "Record",
    "RuleRecord",
    "RuleState",
    "ShareCache",
    "ShareRecord",
    "ShareStatus",
    "Snapshot",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TokenRecord",
    "apply_changes",
    "check_share",
    "dumps",
    "hash_token",
    "load_as",
    "loads",
    "open_store",
    "record_from_dict",
    "record_to_dict",
    "tally",
    "usage_of",
]

_USAGE = (
    "use sqlite:///absolute/path.db, sqlite:relative/path.db, memory: or"
    " etcd://host:port[,host:port...][/prefix]"
)
#: Seconds ``open_store`` keeps retrying an unreachable etcd (``?wait=`` overrides it).
ETCD_OPEN_WAIT = 10.0


def open_store(uri: str) -> Store:
    """Open the store a URI names.

    ========================  ====================================================
    ``sqlite:///abs/path.db``  a SQLite file at an absolute path (created if missing)
    ``sqlite:rel/path.db``     a SQLite file relative to the working directory
    ``memory:``                a private in-memory SQLite database (tests)
    ``etcd://h:p[,h:p]/pfx``   etcd members (3.4+) and a key prefix (default /vshare)
    ========================  ====================================================

    An etcd URI may end with ``?wait=S`` (seconds to keep retrying, with backoff, while
    etcd is unreachable on open; default :data:`ETCD_OPEN_WAIT`) and ``&timeout=S`` (per
    request, default 5).

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
    if scheme == "etcd":
        return _open_etcd(uri, rest)
    raise ValueError(f"store URI {uri!r}: unknown scheme {scheme!r}; {_USAGE}")


def _open_etcd(uri: str, rest: str) -> EtcdStore:
    if not rest.startswith("//"):
        raise ValueError(f"store URI {uri!r}: {_USAGE}")
    parts = urllib.parse.urlsplit("etcd:" + rest)
    hosts = parts.netloc.split(",") if parts.netloc else []
    endpoints = []
    for host in hosts:
        name, colon, port = host.rpartition(":")
        if not colon or not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"store URI {uri!r}: {host!r} is not host:port; {_USAGE}")
        endpoints.append(host)
    if not endpoints:
        raise ValueError(f"store URI {uri!r} names no etcd member; {_USAGE}")
    path = parts.path.strip("/")
    prefix = f"/{path}/" if path else "/vshare/"
    options = {"wait": ETCD_OPEN_WAIT, "timeout": 5.0}
    for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if name not in options:
            raise ValueError(f"store URI {uri!r}: unknown option {name!r} (wait, timeout)")
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds < 0 or (name == "timeout" and seconds == 0):
            raise ValueError(f"store URI {uri!r}: {name} must be a number of seconds")
        options[name] = seconds
    return EtcdStore(endpoints, prefix=prefix, wait=options["wait"], timeout=options["timeout"])
