"""The control plane's service rules: shares, access rules, instances, tokens, and who may
do what (tenancy), over a ``vshare.store.Store`` and the backend volumes shares live in.

Independent of HTTP: the REST API (``vshare.api``) turns requests into calls of
:class:`ControlService` and its exceptions into statuses (the table is in ``_errors.py``).

Layout: ``_caller.py`` (:class:`Caller`: admin or a tenant), ``_errors.py``,
``_volumes.py`` (volume names → backend URIs, opened lazily), ``_base.py`` (the tenancy
checks every resource shares), one module per resource (``_shares.py``, ``_rules.py``,
``_instances.py``, ``_tokens.py``, ``_gateways.py``, ``_quotas.py``), and ``_service.py``
(:class:`ControlService`, composing them; its module note states the rules).
"""

from __future__ import annotations

from vshare.control._caller import ADMIN, Caller
from vshare.control._errors import Forbidden, OverLimit, VolumeUnavailable
from vshare.control._gateways import VolumeInfo
from vshare.control._service import (
    DEFAULT_MAX_SHARE_GIB,
    DIR_MODE,
    GIB,
    SHARE_NAME,
    SHARES_DIR,
    ControlService,
    instance_uuid,
    issue_token,
)
from vshare.control._volumes import DEFAULT_VOLUMES, Volumes, parse_volume
from vshare.store import Conflict, NotFound, OverQuota, StoreUnavailable

__all__ = [
    "ADMIN",
    "DEFAULT_MAX_SHARE_GIB",
    "DEFAULT_VOLUMES",
    "DIR_MODE",
    "GIB",
    "SHARES_DIR",
    "SHARE_NAME",
    "Caller",
    "Conflict",
    "ControlService",
    "Forbidden",
    "NotFound",
    "OverLimit",
    "OverQuota",
    "StoreUnavailable",
    "VolumeInfo",
    "VolumeUnavailable",
    "Volumes",
    "instance_uuid",
    "issue_token",
    "parse_volume",
]
