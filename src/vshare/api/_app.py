"""The FastAPI application: routes, the error model, the access log, the OpenAPI document.

The error model. Every error answer, whoever produced it (the service, FastAPI's request
validation, the router's 404/405, an unexpected exception), has the body
``{"error": {"code": ..., "message": "one line"}}``:

======  ===============  =============================================================
status  code             raised as
======  ===============  =============================================================
400     bad_request      ``ValueError`` from the service; a request that does not match
                         the schema (FastAPI would say 422: one status for "your input
                         is wrong" is simpler for clients, and the service's own checks
                         could not tell 400 from 422 apart anyway)
401     unauthorized     no bearer token, or an unknown one (with ``WWW-Authenticate``)
403     forbidden        ``control.Forbidden``: the token may not do this at all
404     not_found        ``NotFound`` (also: another tenant's object), an unknown path
405     method_not_allowed  a path that exists, with another method
413     over_limit       ``control.OverLimit``: a share size over the operator's limit
413     over_quota       ``OverQuota``: a create or extend over the tenant's quota
413     too_large        a request body over 64 KiB (with a valid token: without one,
                         a 401 comes first; a declared Content-Length over it is answered
                         before the body is read)
409     conflict         ``Conflict``
503     unavailable      ``StoreUnavailable``, ``control.VolumeUnavailable``
500     internal         anything else: a bug. The log gets the traceback; the client a
                         line that says to look there, never the traceback
======  ===============  =============================================================

The access log: one line per request (logger ``vshare.api.access``) with method, path,
status, duration and the token's name, through the process's logging set-up (text or
JSON). Uvicorn's own access log is off, so there is exactly one. The query string is logged
with the values of unknown parameters written as ``***`` (a token sent as ``?token=`` is
refused, and never logged).
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, Final

import anyio.to_thread
import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vshare import __version__
from vshare.api._deps import Unauthorized
from vshare.api._models import ErrorBody
from vshare.api._routes import ROUTERS
from vshare.control import (
    Conflict,
    ControlService,
    Forbidden,
    NotFound,
    OverLimit,
    OverQuota,
    StoreUnavailable,
    VolumeUnavailable,
)
from vshare.store import StoreError

log = logging.getLogger("vshare.api")
access_log = logging.getLogger("vshare.api.access")

#: A message longer than this is cut: messages quote input, and input is the client's.
MAX_MESSAGE: Final = 500
#: The largest request body accepted (413 beyond): every valid body is a few hundred bytes.
MAX_BODY: Final = 64 * 1024

_STATUS: Final[tuple[tuple[type[Exception], int, str], ...]] = (
    (Unauthorized, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (OverLimit, 413, "over_limit"),
    (OverQuota, 413, "over_quota"),
    (StoreUnavailable, 503, "unavailable"),
    (VolumeUnavailable, 503, "unavailable"),
    (ValueError, 400, "bad_request"),
)
_HTTP_CODES: Final = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "too_large", 503: "unavailable",
}  # fmt: skip
_ERRORS_DOCUMENTED: Final = {
    400: "Malformed input.",
    401: "No bearer token, or an unknown one.",
    403: "The token may not do this.",
    404: "No such object (or not this tenant's).",
    409: "Conflicts with the current state.",
    413: "A size over the operator's limit (over_limit) or the tenant's quota (over_quota),"
    " or a body over 64 KiB.",
    503: "The store or a volume cannot serve.",
}
_BEARER_CHALLENGE: Final = {"WWW-Authenticate": "Bearer"}
#: Query parameters whose values the access log shows (those the API takes); the values of
#: any other are written as ``***``: a client that puts its token there must not see it in
#: the log.
LOGGED_QUERY: Final = frozenset({"tenant", "force", "include_deleted"})

DESCRIPTION = """\
The control plane of vshare: shares, access rules and instances in OpenStack Manila's
vocabulary, for the gateways that serve shares to VMs over vsock and 9P2000.L.

Authenticate with `Authorization: Bearer <token>` (`vshare api token create`). A tenant
token sees only its tenant's shares, rules and instances; the admin token sees all.
Every error has the body `{"error": {"code": ..., "message": ...}}`.
"""


def one_line(text: str) -> str:
    """``text`` as one line of bounded length (messages quote the client's input)."""
    line = " ".join(text.split())
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 1] + "…"


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": one_line(message)}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _classify(exc: Exception) -> tuple[int, str] | None:
    if isinstance(exc, pydantic.ValidationError):
        return None  # a ValueError too, but raised by our own models: a bug, not input
    for cls, status, code in _STATUS:
        if isinstance(exc, cls):
            return status, code
    return None


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    found = _classify(exc)
    if found is None:
        raise exc  # the access-log middleware answers 500 and logs it
    status, code = found
    headers = _BEARER_CHALLENGE if status == 401 else None
    return error_response(status, code, str(exc) or code, headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if not errors:
        return error_response(400, "bad_request", "malformed request")
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ())]
    where = ".".join(loc[1:]) or (f"request {loc[0]}" if loc else "request")
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return error_response(400, "bad_request", f"{where}: {first.get('msg', 'invalid')}{more}")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = _HTTP_CODES.get(status, "error")
    if status == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif status == 405:
        message = f"{request.url.path} does not take {request.method}"
    else:
        message = str(exc.detail)
    return error_response(status, code, message, exc.headers)


class _AccessLog:
    """One log line per request; and the last word on exceptions nothing else handled
    (a 500 with our body, the traceback to the log only)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        started = time.perf_counter()
        status = 0

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        received = 0

        async def receive_bounded() -> Message:
            # FastAPI reads the whole body before parsing it: bound what a client can make
            # us hold. An HTTPException is what FastAPI lets through from here.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY:
                    raise await _too_large(scope)
            return message

        path = scope.get("path", "")
        try:
            if _declared_length(scope) > MAX_BODY:  # refused before a byte of it is read
                exc = await _too_large(scope)
                await _http_error_response(exc)(scope, receive, send_and_note)
                return
            await self.app(scope, receive_bounded, send_and_note)
        except Exception:
            log.exception("internal error in %s %s", scope.get("method"), path)
            if status == 0:  # nothing sent yet: we can still answer properly
                response = error_response(500, "internal", "internal error; see the server log")
                await response(scope, receive, send_and_note)
        finally:
            caller = state.get("caller")
            ms = (time.perf_counter() - started) * 1000
            query = _scrubbed(scope.get("query_string", b""))
            target = f"{path}?{query}" if query else path
            client = scope.get("client")
            access_log.info(
                "%s %s",
                scope.get("method"),
                target,
                extra={
                    "fields": {
                        "status": status,
                        "ms": round(ms, 1),
                        "client": f"{client[0]}:{client[1]}" if client else "",
                        "token": getattr(caller, "name", "") or "-",
                    }
                },
            )


def _scrubbed(query: bytes) -> str:
    """The query string for the log: values only of the parameters the API takes; any
    other value (``?token=<secret>``, refused with 400 anyway) is written as ``***``."""
    if not query:
        return ""
    parts = []
    for part in query.decode("latin-1").split("&"):
        name, sep, value = part.partition("=")
        if sep and value and urllib.parse.unquote_plus(name) not in LOGGED_QUERY:
            value = "***"
        parts.append(f"{name}{sep}{value}")
    return "&".join(parts)


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


async def _too_large(scope: Scope) -> StarletteHTTPException:
    """What an oversized body gets: 401 if the request has no valid token (authentication
    comes first, as everywhere), else 413."""
    secret = ""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, secret = value.decode("latin-1").partition(" ")
            secret = secret.strip() if scheme.lower() == "bearer" else ""
    app = scope.get("app")
    service = getattr(getattr(app, "state", None), "service", None)
    if not secret or not isinstance(service, ControlService):
        known = False
    else:
        try:
            caller = await anyio.to_thread.run_sync(service.authenticate, secret)
        except (StoreError, ValueError):
            known = True  # cannot tell now: the size alone decides
        else:
            known = caller is not None
            if caller is not None:
                scope.setdefault("state", {})["caller"] = caller
    if not known:
        return StarletteHTTPException(
            401, "this request needs a valid bearer token", headers=_BEARER_CHALLENGE
        )
    return StarletteHTTPException(413, f"request body over {MAX_BODY} bytes")


def _http_error_response(exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, "error")
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


def create_app(service: ControlService) -> FastAPI:
    """The REST API over ``service`` (which the caller keeps and closes).

    Endpoints are under ``/v1``; the OpenAPI document is at ``/openapi.json`` and the
    interactive documentation at ``/docs``.
    """
    app = FastAPI(
        title="vshare control plane",
        version=__version__,
        description=DESCRIPTION,
        redoc_url=None,
        responses={
            status: {"model": ErrorBody, "description": text}
            for status, text in _ERRORS_DOCUMENTED.items()
        },
    )
    app.state.service = service
    for routes in ROUTERS:
        app.include_router(routes)
    for cls, _, _ in _STATUS:
        app.add_exception_handler(cls, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(_AccessLog)
    app.openapi = _openapi_of(app)  # type: ignore[method-assign]
    return app


def _openapi_of(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document as the API really answers: bad input is 400 with our error
    body (FastAPI documents 422 with its own), and the public health check cannot be 401."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.get("responses", {})
                responses.pop("422", None)
                if path == "/v1/health":
                    for status in ("400", "401", "403", "404", "409"):
                        responses.pop(status, None)
        components = schema.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    return openapi
