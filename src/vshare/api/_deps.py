"""Request dependencies: the service, and the caller a bearer token stands for."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from vshare.control import Caller, ControlService


class Unauthorized(Exception):
    """No token, a malformed Authorization header, or a token nobody issued (401)."""


def get_service(request: Request) -> ControlService:
    service: ControlService = request.app.state.service
    return service


# auto_error=False: we answer a missing token ourselves, with our error body and a 401
# (FastAPI's own answer is a 403 without WWW-Authenticate, and its own body).
_bearer = HTTPBearer(auto_error=False, description="An API token: `vshare api token create`.")


def get_caller(
    request: Request,
    service: Annotated[ControlService, Depends(get_service)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The caller the request's ``Authorization: Bearer <token>`` stands for.

    A sync dependency on purpose: the token lookup is a store read, which blocks, so it
    runs in the worker threads as the handlers do.

    Raises:
        Unauthorized: no bearer token, or an unknown one.
    """
    if credentials is None:
        raise Unauthorized("this request needs a bearer token (Authorization: Bearer <token>)")
    caller = service.authenticate(credentials.credentials)
    if caller is None:
        raise Unauthorized("unknown or revoked API token")
    request.state.caller = caller  # for the access log
    return caller


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def no_unknown_query(request: Request) -> None:
    """Refuse query parameters the endpoint does not take, as bodies refuse unknown fields:
    a misspelt ``?forse=true`` must not silently mean "no force"; and a parameter given
    twice (``?tenant=a&tenant=b``), which would otherwise silently mean the last one.

    Raises:
        ValueError: an unknown or repeated parameter (400).
    """
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    for name in request.query_params:
        if len(request.query_params.getlist(name)) > 1:
            raise ValueError(f"query parameter {name!r} is given more than once")
    known = _query_names(route.dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = f"it takes {', '.join(sorted(known))}" if known else "it takes none"
        raise ValueError(f"unknown query parameter {unknown[0]!r}; {takes}")


ServiceDep = Annotated[ControlService, Depends(get_service)]
CallerDep = Annotated[Caller, Depends(get_caller)]
