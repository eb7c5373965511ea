"""The driver's options, in Manila's own oslo.config terms (a backend's section of
manila.conf; docs/manila.md shows a stanza)."""

from __future__ import annotations

from typing import Final

from oslo_config import cfg

vshare_opts: Final = [
    cfg.StrOpt(
        "vshare_api_endpoint",
        default="http://127.0.0.1:8564",
        help="URL of vshare's REST API (`vshare api run`).",
    ),
    cfg.StrOpt(
        "vshare_api_token",
        secret=True,
        help="An admin token of vshare's API (`vshare api token create manila`): the"
        " driver acts for every Manila project.",
    ),
    cfg.StrOpt(
        "vshare_volume",
        help="The vshare volume new shares are made on (a name given to `vshare api run"
        " --volume NAME=URI`); unset: the API's default (its first volume).",
    ),
    cfg.ListOpt(
        "vshare_gateway_uris",
        default=["vsock://2:564"],
        help="Where a VM reaches its gateway, as vshare URIs, written into each share's"
        " export locations (vsock://2:564: the VM's own hypervisor, over virtio-vsock).",
    ),
    cfg.StrOpt(
        "vshare_storage_protocol",
        default="NFS",
        help="The protocol name reported to Manila's scheduler. Manila has no 9P protocol,"
        " so a share type for vshare names one of Manila's (NFS by default: enabled in"
        " manila-api as shipped); guests mount 9P2000.L as the export locations say.",
    ),
    cfg.FloatOpt(
        "vshare_api_timeout",
        default=30.0,
        min=0.1,
        help="Seconds for one request to vshare's API.",
    ),
    cfg.FloatOpt(
        "vshare_wait_timeout",
        default=300.0,
        min=0.0,
        help="Seconds to wait for a vshare share to leave a transitional status (creating,"
        " extending, shrinking, deleting) that another request put it in.",
    ),
    cfg.FloatOpt(
        "vshare_rule_timeout",
        default=10.0,
        min=0.0,
        help="Seconds to wait for gateways to apply (or withdraw) access rules before"
        " update_access returns; the store keeps the rules either way, and gateways that"
        " start later apply them.",
    ),
]
