"""The REST API of the control plane (FastAPI): a thin HTTP skin over
``vshare.control.ControlService``.

Layout: ``_models.py`` (request and response bodies), ``_deps.py`` (bearer token →
``Caller``), ``_routes.py`` (the endpoints under ``/v1``), ``_app.py`` (:func:`create_app`:
the error model, the access log, the OpenAPI document), ``_server.py`` (:func:`serve` with
uvicorn, graceful stop on SIGTERM). The endpoint table is in docs/architecture.md.
"""

from __future__ import annotations

from vshare.api._app import create_app
from vshare.api._server import DEFAULT_LISTEN, bind, parse_listen, serve

__all__ = ["DEFAULT_LISTEN", "bind", "create_app", "parse_listen", "serve"]
