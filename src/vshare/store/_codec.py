"""Records ↔ JSON, one format for every store implementation (SQLite rows, etcd values).

The format is flat JSON objects: times as ISO 8601 strings with an offset, enums as their
values, sets as sorted lists. Decoding ignores keys it does not know (a newer writer may
add fields; every field added later must have a default) and runs the records' own
validation, so a decoded record is as trustworthy as a constructed one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final, TypeVar

from vshare.policy import Instance
from vshare.store._records import (
    GatewayRecord,
    InstanceRecord,
    Kind,
    QuotaRecord,
    Record,
    RuleRecord,
    ShareRecord,
    TokenRecord,
)

__all__ = ["dumps", "kind_of", "load_as", "loads", "record_from_dict", "record_to_dict"]

_R = TypeVar("_R", ShareRecord, RuleRecord, InstanceRecord, TokenRecord, GatewayRecord, QuotaRecord)


def _time(value: datetime) -> str:
    return value.isoformat()


def _share_to(r: ShareRecord) -> dict[str, Any]:
    return {
        "id": r.id, "name": r.name, "tenant": r.tenant, "backend": r.backend, "path": r.path,
        "size_gib": r.size_gib, "status": r.status.value, "uid": r.uid, "gid": r.gid,
        "cache": r.cache, "created_at": _time(r.created_at), "revision": r.revision,
    }  # fmt: skip


def _rule_to(r: RuleRecord) -> dict[str, Any]:
    out = {
        "id": r.id, "share_id": r.share_id, "access_type": r.access_type,
        "access_to": r.access_to, "level": r.level.value, "state": r.state.value,
        "created_at": _time(r.created_at), "revision": r.revision,
    }  # fmt: skip
    if r.cross_tenant:  # only then: ordinary rules keep the format older readers know
        out["cross_tenant"] = True
    return out


def _instance_to(r: InstanceRecord) -> dict[str, Any]:
    i = r.instance
    return {
        "uuid": i.uuid, "tenant": i.tenant, "name": i.name, "cids": sorted(i.cids),
        "sockets": sorted(i.sockets), "ips": sorted(i.ips), "certs": sorted(i.certs),
        "created_at": _time(r.created_at),
    }  # fmt: skip


def _token_to(r: TokenRecord) -> dict[str, Any]:
    return {"name": r.name, "hash": r.hash, "tenant": r.tenant, "created_at": _time(r.created_at)}


def _gateway_to(r: GatewayRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": r.id,
        "addresses": list(r.addresses),
        "version": r.version,
        "host": r.host,
    }
    if r.sessions or r.requests_in_flight:
        out["sessions"], out["requests_in_flight"] = r.sessions, r.requests_in_flight
    return out


def _quota_to(r: QuotaRecord) -> dict[str, Any]:
    return {"tenant": r.tenant, "shares": r.shares, "gigabytes": r.gigabytes}


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("created_at must be an ISO 8601 string")
    return datetime.fromisoformat(value)


def _pick(
    data: Mapping[str, Any], required: tuple[str, ...], optional: tuple[str, ...]
) -> dict[str, Any]:
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"missing {', '.join(repr(k) for k in missing)}")
    return {k: data[k] for k in (*required, *optional) if k in data}


def _share_from(data: Mapping[str, Any]) -> ShareRecord:
    fields = _pick(
        data,
        ("name", "tenant", "backend", "path", "size_gib"),
        ("id", "status", "uid", "gid", "cache", "created_at", "revision"),
    )
    if "created_at" in fields:
        fields["created_at"] = _parse_time(fields["created_at"])
    return ShareRecord(**fields)


def _rule_from(data: Mapping[str, Any]) -> RuleRecord:
    fields = _pick(
        data,
        ("share_id", "access_type", "access_to"),
        ("id", "level", "state", "created_at", "revision", "cross_tenant"),
    )
    if "created_at" in fields:
        fields["created_at"] = _parse_time(fields["created_at"])
    return RuleRecord(**fields)


def _instance_from(data: Mapping[str, Any]) -> InstanceRecord:
    fields = _pick(data, ("uuid",), ("tenant", "name", "cids", "sockets", "ips", "certs"))
    for name in ("cids", "sockets", "ips", "certs"):
        value = fields.get(name, [])
        if not isinstance(value, list):
            raise ValueError(f"{name} must be a list")
        fields[name] = frozenset(value)
    extra = {"created_at": _parse_time(data["created_at"])} if "created_at" in data else {}
    return InstanceRecord(instance=Instance(**fields), **extra)


def _token_from(data: Mapping[str, Any]) -> TokenRecord:
    fields = _pick(data, ("name", "hash"), ("tenant", "created_at"))
    if "created_at" in fields:
        fields["created_at"] = _parse_time(fields["created_at"])
    return TokenRecord(**fields)


def _gateway_from(data: Mapping[str, Any]) -> GatewayRecord:
    fields = _pick(
        data, ("id",), ("addresses", "version", "host", "sessions", "requests_in_flight")
    )
    if "addresses" in fields:
        if not isinstance(fields["addresses"], list):
            raise ValueError("addresses must be a list")
        fields["addresses"] = tuple(fields["addresses"])
    return GatewayRecord(**fields)


def _quota_from(data: Mapping[str, Any]) -> QuotaRecord:
    return QuotaRecord(**_pick(data, (), ("tenant", "shares", "gigabytes")))


_Encoder = Callable[[Any], dict[str, Any]]
_Decoder = Callable[[Mapping[str, Any]], Record]

#: kind → (record class, encoder, decoder): one row per kind, nothing falls through.
_TABLE: Final[dict[Kind, tuple[type, _Encoder, _Decoder]]] = {
    "share": (ShareRecord, _share_to, _share_from),
    "rule": (RuleRecord, _rule_to, _rule_from),
    "instance": (InstanceRecord, _instance_to, _instance_from),
    "token": (TokenRecord, _token_to, _token_from),
    "gateway": (GatewayRecord, _gateway_to, _gateway_from),
    "quota": (QuotaRecord, _quota_to, _quota_from),
}


def kind_of(record: Record) -> Kind:
    """The feed kind of a record (``"share"``, ``"rule"``, ...)."""
    for kind, (cls, _, _) in _TABLE.items():
        if type(record) is cls:
            return kind
    raise TypeError(f"not a store record: {type(record).__name__}")


def record_to_dict(record: Record) -> dict[str, Any]:
    """The record as a JSON-ready dict."""
    return _TABLE[kind_of(record)][1](record)


def record_from_dict(kind: Kind, data: Mapping[str, Any]) -> Record:
    """A record of ``kind`` from its dict form.

    Raises:
        ValueError: an unknown kind, a missing required key, or an invalid value.
    """
    if kind not in _TABLE:
        raise ValueError(f"unknown record kind {kind!r}")
    if not isinstance(data, Mapping):
        raise ValueError(f"{kind} record: expected a JSON object")
    try:
        return _TABLE[kind][2](data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{kind} record: {exc}") from None


def dumps(record: Record) -> str:
    """The record as compact JSON text (keys in a fixed order)."""
    return json.dumps(record_to_dict(record), separators=(",", ":"), ensure_ascii=False)


def loads(kind: Kind, text: str | bytes) -> Record:
    """A record of ``kind`` from JSON text.

    Raises:
        ValueError: malformed JSON, or as :func:`record_from_dict`.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{kind} record: not JSON ({exc.msg})") from None
    return record_from_dict(kind, data)


def load_as(cls: type[_R], text: str | bytes) -> _R:
    """Like :func:`loads`, typed by the record class wanted.

    Raises:
        ValueError: as :func:`loads`.
    """
    for kind, (known, _, _) in _TABLE.items():
        if known is cls:
            record = loads(kind, text)
            assert isinstance(record, cls)  # the table maps each kind to its class
            return record
    raise TypeError(f"not a store record class: {cls.__name__}")
