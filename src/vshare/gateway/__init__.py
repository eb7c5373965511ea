"""The gateway: 9P2000.L sessions over a confined backend.

The public face is what this module exports; the composition root (``vshare.node``) and
callers outside the gateway import from here, not from the modules inside:

- ``share``: :class:`Share`, a share as the gateway serves it (validated once);
- ``config``: :class:`GatewayConfig` and :func:`load_config` (flags and gateway.toml);
- ``server``: :class:`Gateway`, listeners, instances, sessions and graceful shutdown;
- ``follow``: :class:`StoreFollower`, the gateway kept in step with the control-plane store.

Inside: ``session`` (one connection), ``ops`` (the request handlers), ``fids``, ``locks``,
``context`` (what the sessions share: budgets, metrics, workers), ``instances`` and
``libvirt`` (who a connection is), ``quota``, ``buffers``, ``workers``, ``metrics``.
"""

from __future__ import annotations

from vshare.gateway.config import (
    DEFAULT_MSIZE,
    MIN_MSIZE,
    MSIZE_CEILING,
    GatewayConfig,
    load_config,
)
from vshare.gateway.follow import StoreFollower, shares_of
from vshare.gateway.instances import InstanceTable
from vshare.gateway.server import Gateway
from vshare.gateway.share import ConfigError, GiB, KiB, MiB, Share

__all__ = [
    "DEFAULT_MSIZE",
    "MIN_MSIZE",
    "MSIZE_CEILING",
    "ConfigError",
    "Gateway",
    "GatewayConfig",
    "GiB",
    "InstanceTable",
    "KiB",
    "MiB",
    "Share",
    "StoreFollower",
    "load_config",
    "shares_of",
]
