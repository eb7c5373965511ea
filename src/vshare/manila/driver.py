"""vshare as a Manila share driver (``share_driver = vshare.manila.driver.VshareShareDriver``).

Manila stays the source of truth; vshare's REST API is the driver's only door into vshare,
with an admin token, acting for every Manila project:

- a share *instance* of Manila (``share['id']``) is a vshare share *named* by that id (the
  vshare id is the store's own; guests attach by either), of tenant ``project_id`` and
  ``size`` GiB; a managed share keeps its vshare name, and the driver remembers which
  vshare share an instance is in Manila's private driver storage;
- vshare's transitional statuses (creating, extending, shrinking, deleting: another
  request at work) are waited on, never reported to Manila;
- access rules map as ``_access.py`` says; a rule no gateway could enforce is refused with
  ``InvalidShareAccess`` and shows ``error`` in Manila, alone;
- snapshots are not supported (``snapshot_support`` False), and the driver does not handle
  share servers: every compute host runs a gateway, which Manila does not manage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final

from manila import exception
from manila.share import driver
from oslo_config import cfg

from vshare.manila._access import Plan, Unenforceable, plan_full, plan_incremental
from vshare.manila._api import RULE_PENDING, ApiError, Json, VshareApi
from vshare.manila._opts import vshare_opts

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
CONF.register_opts(vshare_opts)

VERSION: Final = "1.0"
#: The key of Manila's private driver storage that names an instance's vshare share.
_PRIVATE_KEY: Final = "vshare_share"
Share = Mapping[str, Any]


class VshareShareDriver(driver.ShareDriver):  # type: ignore[misc]  # manila has no types
    """Manila share driver for vshare (``driver_handles_share_servers = False``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(False, *args, **kwargs)
        self.configuration.append_config_values(vshare_opts)
        self.backend_name = self.configuration.safe_get("share_backend_name") or "vshare"
        self.private_storage = kwargs.get("private_storage")
        self._api: VshareApi | None = None

    # --- setup -----------------------------------------------------------------------------

    @property
    def api(self) -> VshareApi:
        if self._api is None:
            conf = self.configuration
            if not conf.vshare_api_token:
                raise exception.BadConfigurationException(
                    reason=f"[{conf.config_group}] vshare_api_token is not set"
                )
            self._api = VshareApi(
                conf.vshare_api_endpoint, conf.vshare_api_token, timeout=conf.vshare_api_timeout
            )
        return self._api

    def do_setup(self, context: Any) -> None:
        self.api  # noqa: B018  # a missing token is a configuration error, raised at start

    def check_for_setup_error(self) -> None:
        """The API answers, the token is an admin's, and the volume is one it serves."""
        try:
            me = self.api.whoami()
        except ApiError as exc:
            raise exception.ShareBackendException(msg=str(exc)) from exc
        if not me.get("admin"):
            raise exception.BadConfigurationException(
                reason=f"vshare_api_token is token {me.get('token')!r} of tenant"
                f" {me.get('tenant')!r}; the driver needs an admin token"
            )

    # --- shares ----------------------------------------------------------------------------

    def _ref(self, share: Share) -> str:
        """The vshare share (name or id) that Manila's share instance is."""
        if self.private_storage is not None:
            found = self.private_storage.get(share["id"], _PRIVATE_KEY)
            if found:
                return str(found)
        return str(share["id"])

    def _remember(self, share: Share, vshare_id: str) -> None:
        if self.private_storage is not None:
            self.private_storage.update(share["id"], {_PRIVATE_KEY: vshare_id})

    def _settled(self, ref: str) -> Json | None:
        try:
            return self.api.settled(ref, self.configuration.vshare_wait_timeout)
        except ApiError as exc:
            raise exception.ShareBackendException(msg=str(exc)) from exc

    def _export_locations(self, name: str) -> list[dict[str, Any]]:
        """Where and how a VM mounts the share: one location per gateway URI (the first
        preferred), then the kernel mount command for the first."""
        uris = [u.rstrip("/") for u in self.configuration.vshare_gateway_uris] or ["vsock://2:564"]
        locations: list[dict[str, Any]] = [
            {
                "path": f"{uri}/{name}",
                "is_admin_only": False,
                "preferred": index == 0,
                "metadata": {"protocol": "9P2000.L", "aname": name},
            }
            for index, uri in enumerate(uris)
        ]
        locations.append(
            {
                "path": f"vshare mount --kernel {uris[0]} {name} /mnt/{name}",
                "is_admin_only": False,
                "preferred": False,
                "metadata": {"kind": "mount command (the guest's kernel 9P client)"},
            }
        )
        return locations

    def create_share(self, context: Any, share: Share, share_server: Any = None) -> Any:
        name = str(share["id"])
        try:
            created = self.api.create_share(
                name, int(share["size"]), str(share["project_id"]), self.configuration.vshare_volume
            )
        except ApiError as exc:
            if exc.status != 409:
                raise exception.ShareBackendException(msg=str(exc)) from exc
            # Taken: ours from an attempt that did not return (Manila retries a create
            # after a crash), if the tenant is this project's; else someone else's.
            existing = self._settled(name)
            if existing is None or existing["tenant"] != share["project_id"]:
                raise exception.ShareBackendException(msg=str(exc)) from exc
            created = existing
        if created["status"] != "available":
            created = self._settled(created["id"]) or {"status": "gone"}
        if created["status"] != "available":
            raise exception.ShareBackendException(
                msg=f"vshare share {name} is {created['status']} after create"
            )
        self._remember(share, created["id"])
        return self._export_locations(created["name"])

    def delete_share(self, context: Any, share: Share, share_server: Any = None) -> None:
        ref = self._ref(share)
        for _attempt in range(3):
            if self._settled(ref) is None:
                break  # never made, or gone already: what delete wants
            try:
                self.api.delete_share(ref)
                break
            except ApiError as exc:
                # 409: another request (another manila-share, an operator) got there first.
                if exc.status not in (404, 409):
                    raise exception.ShareBackendException(msg=str(exc)) from exc
        else:
            raise exception.ShareBackendException(msg=f"vshare share {ref} would not go")
        if self.private_storage is not None:
            self.private_storage.delete(share["id"])

    def extend_share(self, share: Share, new_size: int, share_server: Any = None) -> None:
        ref = self._ref(share)
        try:
            self._settled(ref)
            self.api.resize_share(ref, int(new_size), grow=True)
        except (ApiError, exception.ShareBackendException) as exc:
            raise exception.ShareExtendingError(share_id=share["id"], reason=str(exc)) from exc

    def shrink_share(self, share: Share, new_size: int, share_server: Any = None) -> None:
        ref = self._ref(share)
        self._settled(ref)
        try:
            self.api.resize_share(ref, int(new_size), grow=False)
        except ApiError as exc:
            # vshare answers 409 for three reasons; only this message means the files
            # would not fit (control/_shares.py: "... cannot shrink to N GiB").
            if exc.status == 409 and "cannot shrink" in exc.message:
                raise exception.ShareShrinkingPossibleDataLoss(share_id=share["id"]) from exc
            raise exception.ShareBackendException(msg=str(exc)) from exc

    def ensure_share(self, context: Any, share: Share, share_server: Any = None) -> Any:
        found = self._settled(self._ref(share))
        if found is None:
            raise exception.ShareResourceNotFound(share_id=share["id"])
        return self._export_locations(found["name"])

    def ensure_shares(self, context: Any, shares: Iterable[Share]) -> dict[str, dict[str, Any]]:
        """Each share's export locations, or status ``error`` if vshare lost it; access
        rules are re-applied (a full sync: cheap, and it repairs any drift)."""
        updates: dict[str, dict[str, Any]] = {}
        for share in shares:
            found = self._settled(self._ref(share))
            if found is None or found["status"] != "available":
                LOG.error(
                    "vshare share of Manila share instance %s is %s",
                    share["id"],
                    "missing" if found is None else found["status"],
                )
                updates[share["id"]] = {"status": "error"}
                continue
            updates[share["id"]] = {
                "export_locations": self._export_locations(found["name"]),
                "status": "available",
                "reapply_access_rules": True,
            }
        return updates

    def get_backend_info(self, context: Any) -> dict[str, str]:
        """What, changed, makes the share manager call ensure_shares at its start."""
        conf = self.configuration
        return {
            "version": VERSION,
            "endpoint": conf.vshare_api_endpoint,
            "volume": conf.vshare_volume or "",
            "gateway_uris": ",".join(conf.vshare_gateway_uris),
        }

    def manage_existing(self, share: Share, driver_options: Mapping[str, Any]) -> dict[str, Any]:
        """Take over a vshare share named by the export path the admin gave
        (``vsock://2:564/NAME``, or just ``NAME`` or the vshare id)."""
        locations = share["export_locations"] or [{}]
        path = str(locations[0].get("path") or "").rstrip("/")
        ref = path.rsplit("/", 1)[-1]
        if not ref:
            raise exception.ManageInvalidShare(reason="no export path names a vshare share")
        found = self._settled(ref)
        if found is None:
            raise exception.ManageInvalidShare(reason=f"vshare has no share {ref!r}")
        if found["tenant"] != share["project_id"]:
            raise exception.ManageInvalidShare(
                reason=f"vshare share {found['name']} is tenant {found['tenant']}'s, not"
                f" project {share['project_id']}'s (instance rules follow the tenant)"
            )
        if found["status"] != "available":
            raise exception.ManageInvalidShare(
                reason=f"vshare share {found['name']} is {found['status']}"
            )
        self._remember(share, found["id"])
        locations = self._export_locations(found["name"])
        return {"size": found["size_gib"], "export_locations": locations}

    def unmanage(self, share: Share) -> None:
        """Manila forgets the share; vshare keeps it, its files and its rules."""
        if self.private_storage is not None:
            self.private_storage.delete(share["id"])

    def get_network_allocations_number(self) -> int:
        return 0

    # --- access ----------------------------------------------------------------------------

    def update_access(
        self,
        context: Any,
        share: Share,
        access_rules: list[Share],
        add_rules: list[Share],
        delete_rules: list[Share],
        update_rules: list[Share] | None = None,
        share_server: Any = None,
    ) -> dict[str, dict[str, str]]:
        """Full (no add/delete/update rules: make vshare's rules exactly ``access_rules``)
        or incremental; refused rules come back in state ``error``."""
        ref = self._ref(share)
        try:
            current = self.api.list_rules(ref)
            if add_rules or delete_rules or update_rules:
                plan = plan_incremental(add_rules, delete_rules, update_rules or [], current)
            else:
                plan = plan_full(access_rules, current)
            self._apply(ref, plan)
            settled = self.api.rules_settled(ref, self.configuration.vshare_rule_timeout)
        except ApiError as exc:
            raise exception.ShareBackendException(msg=str(exc)) from exc
        pending = [r["id"] for r in settled if r["state"] in RULE_PENDING]
        if pending:
            # No gateway moved them on in time (none running, or all busy): the store holds
            # them and every gateway applies them when it next follows it.
            LOG.warning("share %s: vshare rules %s not yet applied by a gateway", ref, pending)
        failed = {(r["access_type"], r["access_to"]) for r in settled if r["state"] == "error"}
        for rid, want in plan.sources.items():
            if want.key in failed and rid not in plan.errors:
                plan.errors[rid] = "a gateway could not apply it (vshare state error)"
        updates: dict[str, dict[str, str]] = {}
        for rid, reason in plan.errors.items():
            refused = exception.InvalidShareAccess(reason=reason)
            LOG.error("share %s, access rule %s: %s", share["id"], rid, refused)
            updates[rid] = {"state": "error"}
        return updates

    def _apply(self, ref: str, plan: Plan) -> None:
        for vshare_id in plan.deny:
            self.api.deny(ref, vshare_id)
        for vshare_id, level in plan.relevel:
            self.api.set_level(ref, vshare_id, level)
        for want in plan.allow:
            try:
                self.api.allow(ref, want.access_type, want.access_to, want.level)
            except ApiError as exc:
                if exc.status not in (400, 409):
                    raise
                # 400: vshare refused the value; 409: a rule for it exists (one being
                # denied in this same batch): either way this rule cannot apply now.
                plan.errors.update(
                    {rid: exc.message for rid, w in plan.sources.items() if w == want}
                )

    # --- stats -----------------------------------------------------------------------------

    def _update_share_stats(self, data: dict[str, Any] | None = None) -> None:
        """Capabilities, honestly: no snapshots, thin provisioning (a share is a directory
        with a quota), the GiB allocated to this backend's shares, and the size and free
        space of the volume they are made in (``unknown`` when vshare cannot read it)."""
        allocated = 0
        total: float | str = "unknown"
        free: float | str = "unknown"
        try:
            volume = self.configuration.vshare_volume
            for record in self.api.list_shares():
                if volume is None or record.get("volume") == volume:
                    allocated += int(record["size_gib"])
            for v in self.api.list_volumes():
                chosen = v["name"] == volume if volume is not None else v["default"]
                if chosen and v["total_gib"] is not None:
                    total, free = float(v["total_gib"]), float(v["free_gib"])
        except ApiError as exc:
            LOG.warning("vshare share stats: %s", exc)
        stats: dict[str, Any] = {
            "share_backend_name": self.backend_name,
            "vendor_name": "vshare",
            "driver_version": VERSION,
            "storage_protocol": self.configuration.vshare_storage_protocol,
            "total_capacity_gb": total,
            "free_capacity_gb": free,
            "allocated_capacity_gb": allocated,
            "provisioned_capacity_gb": allocated,
            "thin_provisioning": True,
            "snapshot_support": False,
            "create_share_from_snapshot_support": False,
            "revert_to_snapshot_support": False,
            "mount_snapshot_support": False,
        }
        stats.update(data or {})
        super()._update_share_stats(stats)


__all__ = ["Unenforceable", "VshareShareDriver"]
