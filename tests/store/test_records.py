"""The store's records and their JSON form: validation, normalization, round trips."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vshare.backend.base import CACHE_MODES
from vshare.policy import Instance, Level, Requester, decide
from vshare.store import (
    KINDS,
    SHARE_CACHE_MODES,
    GatewayRecord,
    InstanceRecord,
    QuotaRecord,
    RuleRecord,
    RuleState,
    ShareRecord,
    ShareStatus,
    TokenRecord,
    dumps,
    hash_token,
    load_as,
    loads,
    record_from_dict,
    record_to_dict,
)
from vshare.store._codec import kind_of

WHEN = datetime(2024, 3, 1, 12, 30, 0, 250000, tzinfo=UTC)


def share(**fields: Any) -> ShareRecord:
    values: dict[str, Any] = {
        "name": "alpha", "tenant": "acme", "backend": "posix:/srv/vol", "path": "shares/alpha",
        "size_gib": 10,
    }  # fmt: skip
    values.update(fields)
    return ShareRecord(**values)


def rule(**fields: Any) -> RuleRecord:
    values: dict[str, Any] = {"share_id": "s1", "access_type": "ip", "access_to": "10.0.0.0/8"}
    values.update(fields)
    return RuleRecord(**values)


def _one_line_value_error(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    text = str(info.value)
    assert text and "\n" not in text
    return text


# --- shares ----------------------------------------------------------------------------------


def test_share_defaults() -> None:
    s = share()
    assert (s.id, s.status, s.uid, s.gid, s.revision) == ("", ShareStatus.CREATING, 0, 0, 0)
    assert s.cache == "meta"
    assert s.created_at.tzinfo is UTC
    assert abs(datetime.now(UTC) - s.created_at) < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("fields", "mentions"),
    [
        ({"name": ""}, "share name"),
        ({"name": "   "}, "share name"),
        ({"name": "a/b"}, "'/'"),
        ({"name": "a;b"}, "';'"),
        ({"name": "a\nb"}, "control"),
        ({"name": "x" * 256}, "255"),
        ({"name": "é" * 128}, "255"),  # 256 bytes in UTF-8
        ({"name": 7}, "string"),
        ({"id": "a/b"}, "share id"),
        ({"tenant": ""}, "tenant"),
        ({"backend": ""}, "backend"),
        ({"path": ""}, "path"),
        ({"path": "/abs"}, "subdirectory"),
        ({"path": "a/"}, "subdirectory"),
        ({"path": "a//b"}, "subdirectory"),
        ({"path": "./a"}, "subdirectory"),
        ({"path": "a/../b"}, "subdirectory"),
        ({"path": ".."}, "subdirectory"),
        ({"path": "a\x00b"}, "control"),
        ({"size_gib": 0}, "size_gib"),
        ({"size_gib": -5}, "size_gib"),
        ({"size_gib": 2**40 + 1}, "size_gib"),
        ({"size_gib": True}, "size_gib"),
        ({"size_gib": 1.5}, "size_gib"),
        ({"status": "running"}, "status"),
        ({"uid": -1}, "uid"),
        ({"gid": 2**32}, "gid"),
        ({"created_at": datetime(2024, 1, 1)}, "timezone"),  # naive: refused
        ({"revision": -1}, "revision"),
        ({"cache": "most"}, "cache 'most' is not one of none, meta, all"),
        ({"cache": ""}, "cache"),
        ({"cache": None}, "cache"),
        ({"cache": ["meta"]}, "cache"),
    ],
)
def test_share_validation(fields: dict[str, Any], mentions: str) -> None:
    assert mentions in _one_line_value_error(share, **fields)


def test_share_accepts_edge_values() -> None:
    assert share(name="é" * 127).name == "é" * 127
    assert share(name="x" * 255, path="a").path == "a"
    assert share(path="deep/er/still", size_gib=1, uid=0xFFFFFFFE).uid == 0xFFFFFFFE
    assert share(status="available").status is ShareStatus.AVAILABLE


def test_share_time_is_kept_in_utc() -> None:
    cest = timezone(timedelta(hours=2))
    s = share(created_at=datetime(2024, 6, 1, 14, 0, tzinfo=cest))
    assert s.created_at == datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    assert s.created_at.tzinfo is UTC


def test_share_cache_modes_are_the_backends() -> None:
    # The store may not import the backend (layering), so it spells the modes itself.
    assert SHARE_CACHE_MODES == CACHE_MODES
    assert [share(cache=mode).cache for mode in SHARE_CACHE_MODES] == ["none", "meta", "all"]


def test_enums_have_manilas_values() -> None:
    assert [s.value for s in ShareStatus] == [
        "creating", "available", "extending", "shrinking", "deleting", "error",
    ]  # fmt: skip
    assert [s.value for s in RuleState] == [
        "queued_to_apply", "applying", "active", "error", "queued_to_deny", "denying", "deleted",
    ]  # fmt: skip


# --- rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("access_type", "given", "stored"),
    [
        ("ip", "10.0.0.7/8", "10.0.0.0/8"),
        ("ip", "10.0.0.7/32", "10.0.0.7"),
        ("ip", " 192.0.2.1 ", "192.0.2.1"),
        ("ip", "2001:DB8::1/64", "2001:db8::/64"),
        ("cert", "AB" * 32, "ab" * 32),
        ("cert", ":".join(["AB"] * 32), "ab" * 32),
        ("cert", "batch-7.acme.example", "batch-7.acme.example"),  # a CN, verbatim
        ("instance", "5f0c6c1e-9f55-4a63", "5f0c6c1e-9f55-4a63"),
        ("user", "1000", "1000"),
    ],
)
def test_rule_access_to_is_normalized(access_type: str, given: str, stored: str) -> None:
    assert rule(access_type=access_type, access_to=given).access_to == stored


@pytest.mark.parametrize(
    ("fields", "mentions"),
    [
        ({"access_type": "host"}, "access type"),
        ({"access_to": ""}, "access_to"),
        ({"access_to": "10.0.0.0/33"}, "ip rule"),
        ({"access_to": "not-an-ip"}, "ip rule"),
        ({"access_type": "user", "access_to": "root"}, "uid"),
        ({"access_to": "x" * 256, "access_type": "cert"}, "255"),
        ({"level": "admin"}, "level"),
        ({"state": "gone"}, "state"),
        ({"share_id": ""}, "share_id"),
        ({"id": "a/b"}, "rule id"),
    ],
)
def test_rule_validation(fields: dict[str, Any], mentions: str) -> None:
    assert mentions in _one_line_value_error(rule, **fields)


def test_rule_to_policy_decides() -> None:
    r = rule(access_to="10.0.0.0/8", level="ro", state="active")
    assert (r.level, r.state) == (Level.RO, RuleState.ACTIVE)
    policy = r.to_policy()
    assert (policy.access_type, policy.access_to, policy.level) == ("ip", "10.0.0.0/8", Level.RO)
    assert decide(Requester(address="10.1.2.3"), [policy]) is Level.RO
    assert decide(Requester(address="192.0.2.1"), [policy]) is None


# --- instances, tokens, gateways -------------------------------------------------------------


def test_instance_record_wraps_a_policy_instance() -> None:
    inst = Instance(uuid="vm-1", tenant="acme", cids=frozenset({3}), ips=frozenset({"::1"}))
    rec = InstanceRecord(instance=inst)
    assert (rec.uuid, rec.tenant, rec.instance) == ("vm-1", "acme", inst)
    assert "instance" in _one_line_value_error(InstanceRecord, instance="vm-1")
    bad = Instance(uuid="a/b", cids=frozenset({3}))
    assert "'/'" in _one_line_value_error(InstanceRecord, instance=bad)


def test_token_record() -> None:
    digest = hash_token("secret")
    assert digest == "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
    admin = TokenRecord(name="admin", hash=digest.upper())
    assert admin.hash == digest and admin.is_admin
    assert not TokenRecord(name="ci", hash=digest, tenant="acme").is_admin
    assert "hash" in _one_line_value_error(TokenRecord, name="x", hash="secret")
    assert "tenant" in _one_line_value_error(TokenRecord, name="x", hash=digest, tenant="")
    assert "token name" in _one_line_value_error(TokenRecord, name="", hash=digest)
    assert "secret" in _one_line_value_error(hash_token, "")


def test_gateway_record() -> None:
    g = GatewayRecord(id="hv-1", addresses=["vsock://any:564"])  # type: ignore[arg-type]
    assert g.addresses == ("vsock://any:564",)
    assert "gateway id" in _one_line_value_error(GatewayRecord, id="")
    assert "addresses" in _one_line_value_error(GatewayRecord, id="g", addresses="tcp://x:1")


# --- JSON ------------------------------------------------------------------------------------

SAMPLES: dict[str, Any] = {
    "share": share(id="s1", created_at=WHEN, revision=4, status="available", uid=1000, cache="all"),
    "rule": rule(id="r1", created_at=WHEN, revision=5, level="ro", state="active"),
    "instance": InstanceRecord(
        instance=Instance(
            uuid="vm-1",
            tenant="acme",
            name="web-1",
            cids=frozenset({3, 9}),
            sockets=frozenset({"/run/vm.vsock"}),
            ips=frozenset({"192.0.2.7"}),
            certs=frozenset({"c" * 64}),
        ),
        created_at=WHEN,
    ),
    "token": TokenRecord(name="ci", hash=hash_token("t"), tenant="acme", created_at=WHEN),
    "gateway": GatewayRecord(id="hv-1", addresses=("vsock://any:564",), version="0.1", host="h"),
    "quota": QuotaRecord(tenant="acme", shares=-1, gigabytes=500),
}


@pytest.mark.parametrize("kind", KINDS)
def test_json_round_trip(kind: Any) -> None:
    record = SAMPLES[kind]
    assert kind_of(record) == kind
    assert loads(kind, dumps(record)) == record
    assert record_from_dict(kind, record_to_dict(record)) == record
    assert load_as(type(record), dumps(record)) == record


def test_json_format_is_stable() -> None:
    # The format every store writes (and an etcd store will share): changing it breaks
    # existing data, so it is pinned here.
    assert json.loads(dumps(SAMPLES["share"])) == {
        "id": "s1", "name": "alpha", "tenant": "acme", "backend": "posix:/srv/vol",
        "path": "shares/alpha", "size_gib": 10, "status": "available", "uid": 1000, "gid": 0,
        "cache": "all", "created_at": "2024-03-01T12:30:00.250000+00:00", "revision": 4,
    }  # fmt: skip
    assert json.loads(dumps(SAMPLES["instance"])) == {
        "uuid": "vm-1", "tenant": "acme", "name": "web-1", "cids": [3, 9],
        "sockets": ["/run/vm.vsock"], "ips": ["192.0.2.7"], "certs": ["c" * 64],
        "created_at": "2024-03-01T12:30:00.250000+00:00",
    }  # fmt: skip


def test_json_decoding_tolerates_new_fields_and_defaults_old_ones() -> None:
    data = record_to_dict(SAMPLES["share"])
    data["added_by_a_newer_version"] = True
    assert record_from_dict("share", data) == SAMPLES["share"]
    minimal = {"name": "a", "tenant": "t", "backend": "b", "path": "p", "size_gib": 1}
    decoded = record_from_dict("share", minimal)
    assert isinstance(decoded, ShareRecord)
    assert (decoded.status, decoded.revision, decoded.cache) == (ShareStatus.CREATING, 0, "meta")


@pytest.mark.parametrize(
    ("kind", "text", "mentions"),
    [
        ("share", "{", "not JSON"),
        ("share", "[]", "JSON object"),
        ("share", '{"name": "a"}', "missing 'tenant'"),
        ("share", '{"name":"a","tenant":"t","backend":"b","path":"p","size_gib":"1"}', "size_gib"),
        ("rule", '{"share_id":"s","access_type":"ip","access_to":"x"}', "ip rule"),
        ("instance", '{"uuid": "vm"}', "needs at least one"),
        ("instance", '{"uuid": "vm", "cids": 3}', "list"),
        ("token", '{"name": "t", "hash": "h"}', "hash"),
        ("token", '{"name": "t", "hash": "%s", "created_at": 5}' % ("0" * 64), "ISO 8601"),
        (
            "share",
            '{"name":"a","tenant":"t","backend":"b","path":"p","size_gib":1,'
            '"created_at":"yesterday"}',
            "share record",
        ),
        ("widget", "{}", "unknown record kind"),
    ],
)
def test_json_decoding_errors(kind: Any, text: str, mentions: str) -> None:
    assert mentions in _one_line_value_error(loads, kind, text)


def test_load_as_checks_the_kind() -> None:
    with pytest.raises(ValueError):
        load_as(ShareRecord, dumps(SAMPLES["rule"]))
    with pytest.raises(TypeError):
        kind_of(object())  # type: ignore[arg-type]


_names = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/;"),
    min_size=1,
    max_size=60,
).filter(str.strip)


@given(name=_names, size=st.integers(1, 2**40), tenant=_names)
def test_json_round_trip_any_valid_share(name: str, size: int, tenant: str) -> None:
    record = replace(SAMPLES["share"], name=name, size_gib=size, tenant=tenant)
    assert loads("share", dumps(record)) == record


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"shares": -2}, "default quota: shares must be between -1 and"),
        ({"tenant": "acme", "gigabytes": True}, "tenant 'acme': gigabytes must be an integer"),
        ({"tenant": "a\n", "shares": 1}, "quota tenant 'a\\n' must not contain control"),
        ({"shares": 2**53}, "shares must be between -1 and 9007199254740991"),
    ],
)
def test_quota_record_validation(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        QuotaRecord(**fields)
    assert QuotaRecord(tenant="acme").is_empty and QuotaRecord(shares=0).is_default
