"""A small, typed, synchronous client for etcd's v3 JSON gateway (``/v3/...``).

Why this and not a client library: the store needs a handful of calls (range, txn,
leases, compaction, one watch), synchronously and from many threads. etcd serves its v3
API as JSON over HTTP (the grpc-gateway, ``/v3/`` since etcd 3.4), so ``httpx`` (already a
dependency, thread-safe, pooled) speaks it with no protobuf or grpc in the process.

Wire conventions of the gateway: keys and values are base64; 64-bit integers are decimal
strings; fields at their zero value are left out of replies (a missing ``TTL`` is 0).

Endpoints: the client keeps a list and uses one at a time. A request that could not be
*sent* (connection refused, no route) moves to the next endpoint and is tried again there;
a request whose outcome is unknown (the connection broke after sending, a timeout) is not
repeated but raised as :class:`EtcdUnavailable`, since a write may have happened.

The watch stream (:class:`WatchStream`) runs over its own ``http.client`` connection so
that :meth:`WatchStream.close` can shut its socket from another thread and unblock a
reader at once.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx

__all__ = [
    "Compare",
    "EtcdClient",
    "EtcdError",
    "EtcdUnavailable",
    "KeyValue",
    "Op",
    "WatchStream",
    "prefix_end",
]

#: etcd's gRPC status code for OutOfRange: a compacted or future revision.
OUT_OF_RANGE: Final = 11
#: NotFound: for leases, an expired or revoked lease.
NOT_FOUND: Final = 5


class EtcdError(Exception):
    """etcd answered with an error (``code`` is its gRPC status code)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def compacted(self) -> bool:
        """A read at a revision that etcd has compacted away."""
        return self.code == OUT_OF_RANGE and "compacted" in self.message


class EtcdUnavailable(Exception):
    """No endpoint answered, or the outcome of a request is unknown."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def prefix_end(prefix: bytes) -> bytes:
    """The range end that selects every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"  # every key


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int


def _kv(data: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=unb64(data.get("key", "")),
        value=unb64(data.get("value", "")),
        mod_revision=int(data.get("mod_revision", 0)),
        create_revision=int(data.get("create_revision", 0)),
        lease=int(data.get("lease", 0)),
    )


class Compare:
    """Transaction guards (etcd's ``Compare``), built by the class methods."""

    @staticmethod
    def mod_revision(key: bytes, revision: int) -> dict[str, Any]:
        """The key was last written at ``revision`` (0: the key does not exist)."""
        return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": revision}

    @staticmethod
    def absent(key: bytes) -> dict[str, Any]:
        """The key does not exist."""
        return {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": 0}


class Op:
    """Transaction operations (etcd's ``RequestOp``), built by the class methods."""

    @staticmethod
    def put(key: bytes, value: bytes, lease: int = 0) -> dict[str, Any]:
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = lease
        return {"request_put": body}

    @staticmethod
    def delete(key: bytes, range_end: bytes | None = None) -> dict[str, Any]:
        body = {"key": b64(key)}
        if range_end is not None:
            body["range_end"] = b64(range_end)
        return {"request_delete_range": body}

    @staticmethod
    def get(key: bytes) -> dict[str, Any]:
        return {"request_range": {"key": b64(key)}}


class EtcdClient:
    """Unary calls to etcd's JSON gateway (see the module note).

    Args:
        endpoints: ``host:port`` of each member (``http://`` is added when missing).
        timeout: seconds for connecting and for each request.
    """

    def __init__(self, endpoints: Sequence[str], *, timeout: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("etcd: no endpoints")
        self.endpoints = [e if "://" in e else f"http://{e}" for e in endpoints]
        self.timeout = timeout
        self._current = 0
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=32))

    def close(self) -> None:
        self._http.close()

    @property
    def endpoint(self) -> str:
        """The endpoint requests go to now."""
        return self.endpoints[self._current]

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``/v3/<path>``; the decoded reply.

        Raises:
            EtcdError: etcd refused the request.
            EtcdUnavailable: no endpoint reachable, or the outcome is unknown.
        """
        with self._lock:
            start = self._current
        last = ""
        for step in range(len(self.endpoints)):
            index = (start + step) % len(self.endpoints)
            url = f"{self.endpoints[index]}/v3/{path}"
            try:
                reply = self._http.post(url, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last = f"{self.endpoints[index]}: {exc or type(exc).__name__}"
                continue  # nothing was sent: try the next member
            except httpx.HTTPError as exc:
                raise EtcdUnavailable(
                    f"etcd {self.endpoints[index]}: {exc or type(exc).__name__}"
                ) from None
            if index != start:
                with self._lock:
                    self._current = index
            try:
                data = reply.json()
            except ValueError:
                raise EtcdUnavailable(
                    f"etcd {self.endpoints[index]}: HTTP {reply.status_code}, not JSON"
                ) from None
            if reply.status_code != 200 or not isinstance(data, dict):
                if isinstance(data, dict) and "code" in data:
                    raise EtcdError(int(data["code"]), str(data.get("message", data)))
                raise EtcdUnavailable(f"etcd {self.endpoints[index]}: HTTP {reply.status_code}")
            if "error" in data and "code" in data:
                raise EtcdError(int(data["code"]), str(data.get("message", data["error"])))
            return data
        raise EtcdUnavailable(f"no etcd endpoint reachable ({last})")

    # --- key-value -----------------------------------------------------------------------

    def range(
        self,
        key: bytes,
        range_end: bytes | None = None,
        *,
        revision: int = 0,
        keys_only: bool = False,
        max_create_revision: int = 0,
    ) -> tuple[int, list[KeyValue]]:
        """The keys in [key, range_end) (just ``key`` without an end), sorted by key, at
        ``revision`` (0: now), created at ``max_create_revision`` or before (if given);
        returns (the store's revision of the read, the keys)."""
        body: dict[str, Any] = {"key": b64(key)}
        if range_end is not None:
            body["range_end"] = b64(range_end)
        if revision:
            body["revision"] = revision
        if keys_only:
            body["keys_only"] = True
        if max_create_revision:
            body["max_create_revision"] = max_create_revision
        data = self.call("kv/range", body)
        return int(data["header"]["revision"]), [_kv(kv) for kv in data.get("kvs", ())]

    def txn(
        self,
        compare: Sequence[dict[str, Any]],
        success: Sequence[dict[str, Any]],
        failure: Sequence[dict[str, Any]] = (),
    ) -> tuple[bool, int, list[dict[str, Any]]]:
        """One transaction; returns (succeeded, revision after it, the responses)."""
        data = self.call(
            "kv/txn", {"compare": list(compare), "success": list(success), "failure": list(failure)}
        )
        return (
            bool(data.get("succeeded", False)),
            int(data["header"]["revision"]),
            list(data.get("responses", ())),
        )

    def compact(self, revision: int, *, physical: bool = False) -> None:
        """Discard etcd's history before ``revision`` (all keys: etcd-wide)."""
        self.call("kv/compaction", {"revision": revision, "physical": physical})

    # --- leases --------------------------------------------------------------------------

    def lease_grant(self, ttl: int) -> tuple[int, int]:
        """A new lease; returns (its id, the TTL etcd granted)."""
        data = self.call("lease/grant", {"TTL": ttl})
        return int(data["ID"]), int(data.get("TTL", 0))

    def lease_keepalive(self, lease: int) -> int:
        """Renew a lease; returns its new TTL, 0 when it has expired or was revoked."""
        data = self.call("lease/keepalive", {"ID": lease})
        result = data.get("result", data)
        return int(result.get("TTL", 0)) if isinstance(result, dict) else 0

    def lease_revoke(self, lease: int) -> None:
        """Revoke a lease (its keys go); an expired lease is fine."""
        try:
            self.call("lease/revoke", {"ID": lease})
        except EtcdError as exc:
            if exc.code != NOT_FOUND:
                raise

    # --- watch ---------------------------------------------------------------------------

    def watch(self, key: bytes, start_revision: int, quiet: float | None = None) -> WatchStream:
        """Watch ``key`` from ``start_revision`` (see :class:`WatchStream`); the stream ends
        after ``quiet`` seconds without a message (None: never).

        Raises:
            EtcdUnavailable: no endpoint accepted the watch.
        """
        with self._lock:
            start = self._current
        last = ""
        for step in range(len(self.endpoints)):
            index = (start + step) % len(self.endpoints)
            try:
                return WatchStream(self.endpoints[index], key, start_revision, self.timeout, quiet)
            except (OSError, http.client.HTTPException) as exc:
                last = f"{self.endpoints[index]}: {exc or type(exc).__name__}"
        raise EtcdUnavailable(f"etcd watch: no endpoint reachable ({last})")


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One event of a watch: a put (with the value) or a delete, at ``revision``."""

    kind: str  # "put" or "delete"
    key: bytes
    value: bytes
    revision: int


@dataclass(frozen=True, slots=True)
class WatchMessage:
    """One message of a watch stream. ``compact_revision`` is set (and the watch is over)
    when the start revision was compacted; ``canceled`` when etcd ended the watch."""

    header_revision: int
    events: tuple[WatchEvent, ...]
    created: bool
    canceled: bool
    compact_revision: int


class WatchStream:
    """A watch on one key over a streaming HTTP response. Iterate for messages; the
    iteration ends when the stream does (etcd stopped, the connection broke, or
    :meth:`close` was called from any thread)."""

    def __init__(
        self,
        endpoint: str,
        key: bytes,
        start_revision: int,
        timeout: float,
        quiet: float | None = None,
    ) -> None:
        url = httpx.URL(endpoint)
        self._conn = http.client.HTTPConnection(url.host, url.port or 2379, timeout=timeout)
        self._closed = False
        body = {"create_request": {"key": b64(key), "start_revision": start_revision}}
        try:
            self._conn.request(
                "POST",
                "/v3/watch",
                body=json.dumps(body),
                headers={"Content-Type": "application/json"},
            )
            self._response = self._conn.getresponse()
            if self._response.status != 200:
                raise http.client.HTTPException(f"watch: HTTP {self._response.status}")
            sock = self._conn.sock
            if sock is not None:
                sock.settimeout(quiet)  # a watch is quiet for as long as nothing changes
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        """End the stream; safe from any thread, idempotent."""
        # Only shut the socket down: the reading thread sees the end of the stream and
        # closes the connection itself (closing it here would race with its reads).
        self._closed = True
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __iter__(self) -> Iterator[WatchMessage]:
        try:
            yield from self._messages()
        finally:
            with contextlib.suppress(Exception):
                self._conn.close()

    def _messages(self) -> Iterator[WatchMessage]:
        decoder = json.JSONDecoder()
        buffer = ""
        while not self._closed:
            try:
                chunk = self._response.read1(65536)
            except (OSError, ValueError, AttributeError, http.client.HTTPException):
                return  # AttributeError: http.client after a shutdown from another thread
            if not chunk:
                return
            buffer += chunk.decode("utf-8")
            while True:
                buffer = buffer.lstrip()
                if not buffer:
                    break
                try:
                    obj, end = decoder.raw_decode(buffer)
                except ValueError:
                    break  # an incomplete object: read more
                buffer = buffer[end:]
                message = _message(obj)
                if message is not None:
                    yield message


def _message(obj: Any) -> WatchMessage | None:
    if not isinstance(obj, dict):
        return None
    result = obj.get("result")
    if not isinstance(result, dict):
        if "error" in obj:
            return WatchMessage(0, (), False, True, 0)
        return None
    events = tuple(
        WatchEvent(
            kind="delete" if e.get("type") == "DELETE" else "put",
            key=unb64(e.get("kv", {}).get("key", "")),
            value=unb64(e.get("kv", {}).get("value", "")),
            revision=int(e.get("kv", {}).get("mod_revision", 0)),
        )
        for e in result.get("events", ())
    )
    return WatchMessage(
        header_revision=int(result.get("header", {}).get("revision", 0)),
        events=events,
        created=bool(result.get("created", False)),
        canceled=bool(result.get("canceled", False)),
        compact_revision=int(result.get("compact_revision", 0)),
    )
