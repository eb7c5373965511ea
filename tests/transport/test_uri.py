"""Transport URIs: every scheme, the new forms, and the mistakes, each a one-line error."""

from __future__ import annotations

import pytest

from vshare.transport import Address, parse_uri
from vshare.transport._uri import VMADDR_CID_ANY


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("vsock://any:564", Address("vsock", host="any", port=564)),
        ("vsock://3:1234", Address("vsock", host="3", port=1234)),
        ("vsock://2", Address("vsock", host="2", port=564)),
        ("vsock://3:4294967295", Address("vsock", host="3", port=0xFFFFFFFF)),
        ("hvsock:///run/vshare/vm-1.vsock", Address("hvsock", path="/run/vshare/vm-1.vsock")),
        ("hvsock:///run/vm.vsock?port=1234", Address("hvsock", path="/run/vm.vsock", port=1234)),
        ("tls://127.0.0.1:5640", Address("tls", host="127.0.0.1", port=5640)),
        ("tls://[::1]", Address("tls", host="::1", port=564)),
        ("tcp://localhost:0", Address("tcp", host="localhost", port=0)),
        ("unix:///run/vshare/gateway.sock", Address("unix", path="/run/vshare/gateway.sock")),
    ],
)
def test_parse(uri: str, expected: Address) -> None:
    assert parse_uri(uri) == expected
    assert parse_uri(str(expected)) == expected  # str() round-trips


def test_hvsock_listen_path_and_text() -> None:
    a = parse_uri("hvsock:///run/vshare/vm-1.vsock")
    assert a.listen_path == "/run/vshare/vm-1.vsock_564"
    assert str(a) == "hvsock:///run/vshare/vm-1.vsock"
    b = parse_uri("hvsock:///run/vshare/vm-1.vsock?port=1234")
    assert b.listen_path == "/run/vshare/vm-1.vsock_1234"
    assert str(b) == "hvsock:///run/vshare/vm-1.vsock?port=1234"


def test_vsock_cid() -> None:
    assert parse_uri("vsock://any:564").cid == VMADDR_CID_ANY
    assert parse_uri("vsock://42:564").cid == 42
    with pytest.raises(ValueError):
        _ = parse_uri("tcp://h:1").cid


@pytest.mark.parametrize(
    ("uri", "phrase"),
    [
        ("vsock://host:564", "CID number"),
        ("vsock://4294967295:564", "CID number"),
        ("vsock://3:99999999999", "port"),
        ("vsock://3:x", "port"),
        ("hvsock://", "socket path"),
        ("hvsock:///run/vm.vsock?cid=3", "only hvsock option"),
        ("hvsock:///run/vm.vsock?port=", "port"),
        ("hvsock:///run/vm.vsock?port=-1", "port"),
        ("tls://:564", "needs a host"),
        ("tls://h:70000", "port"),
        ("tcp://h:1?x=1", "no '?' options"),
        ("unix:///a/b?c", "no '?' options"),
        ("unix:///a#b", "'#'"),
        ("http://h:80", "scheme must be one of"),
    ],
)
def test_mistakes_are_one_line(uri: str, phrase: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_uri(uri)
    assert phrase in str(info.value)
    assert "\n" not in str(info.value)
