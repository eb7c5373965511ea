"""The service rules of the control plane: what creating, resizing and deleting a share,
allowing and denying access, and registering instances *mean*, independent of HTTP.

Strategy and invariants:

- **The store decides races.** Names are unique because the store says so (a create is
  one transaction); status changes use ``expect_revision``, so two requests working on one
  share cannot both win (the loser gets ``Conflict``, "changed while ...; try again").
- **Directories through confined handles only.** A share's directory is
  ``shares/<share id>`` in its volume, made with ``open_root("shares")`` + ``mkdir`` and
  removed with ``backend.tree.remove_tree``; no path string is ever joined here. The id, not
  the name, names the directory, so renaming a share never moves data.
- **Statuses, as Manila names them.** creating → available (→ error if the directory could
  not be made); available → extending/shrinking → available; → deleting → (gone). A share
  in a transitional status that persists (a crash mid-request) can still be deleted with
  ``force``.
- **Cache mode** (``store.ShareCache``: none, meta, all) is a setting of the record, changed
  in one revision and refused while the share is in a transitional status (so it cannot
  make an extend or shrink lose its race). Gateways apply it to new attachments only.
- **Rules, as Manila's state machine** (``store.RuleState``): a new rule is
  ``queued_to_apply``; gateways that follow the store take it through ``applying`` to
  ``active``. Deny moves an applied rule to ``queued_to_deny``, and gateways take it
  through ``denying`` to ``deleted``. A rule still ``queued_to_apply`` was never applied
  anywhere, so deny removes its record outright (a gateway that applied it meanwhile sees
  the record's deletion in the change feed and drops it: deleting is always safe). Deny of
  a rule already on its way out succeeds again (idempotent).
- **Tenancy.** A tenant caller sees and manages only its own tenant's shares, their rules,
  and its instances. Anything of another tenant answers exactly like something that does
  not exist (``NotFound``, same message), never ``Forbidden``: a tenant cannot probe which
  names or ids exist. One thing is unavoidably shared: share names are global (a guest
  attaches by name), so a create can tell a tenant that a name is taken, and nothing more.
  ``Forbidden`` is for actions a tenant token may never do: acting for another tenant,
  registering or removing instances (an instance's identities, such as a vsock CID, are
  the hypervisor's facts, which only the operator vouches for: a tenant that could claim a
  CID could claim another tenant's VM), listing gateways, managing tokens.
- **Quotas**, Manila's per tenant (``shares``, ``gigabytes``; -1: none), are enforced by the
  store in the transaction of the write (``OverQuota``); extend checks first as well, so a
  refused extend never passes through ``extending``. Only the admin sets them (defaults,
  or a tenant's override); a tenant sees its own quota and usage, and everyone the defaults.
- **Errors**: ``ValueError`` (bad input), :class:`Forbidden`, ``NotFound``, ``Conflict``,
  ``OverQuota``, ``StoreUnavailable``, :class:`VolumeUnavailable`, each one line (see
  ``_errors.py``).
  Every method blocks (store and backend I/O): call it from a worker thread.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import re
import secrets
import threading
import uuid as uuid_mod
from collections.abc import Callable, Iterable, Mapping
from typing import Final, TypeVar

from vshare.backend import Backend
from vshare.backend.base import Node
from vshare.backend.tree import apparent_size, remove_tree
from vshare.control._caller import Caller
from vshare.control._errors import Forbidden, OverLimit, VolumeUnavailable
from vshare.control._volumes import Volumes
from vshare.policy import ACCESS_TYPES, Instance, Level
from vshare.store import (
    DEFAULT_SHARE_CACHE,
    Conflict,
    GatewayStatus,
    InstanceRecord,
    NotFound,
    QuotaRecord,
    QuotaUsage,
    RuleRecord,
    RuleState,
    ShareCache,
    ShareRecord,
    ShareStatus,
    Store,
    StoreError,
    TokenRecord,
    check_share,
    hash_token,
    tally,
    usage_of,
)

log = logging.getLogger("vshare.control")

GIB: Final = 1 << 30
#: The largest share, in GiB, unless the operator says otherwise (100 TiB).
DEFAULT_MAX_SHARE_GIB: Final = 100 * 1024
#: The directory of a volume that holds the shares' directories.
SHARES_DIR: Final = "shares"
#: Mode of new share directories (and of ``shares``), before the umask. Guests never see it
#: in squash mode; keep the volume root closed to other host users.
DIR_MODE: Final = 0o755
_BUSY: Final = frozenset(
    {ShareStatus.CREATING, ShareStatus.EXTENDING, ShareStatus.SHRINKING, ShareStatus.DELETING}
)
#: Rule states a deny has already dealt with.
_LEAVING: Final = frozenset({RuleState.QUEUED_TO_DENY, RuleState.DENYING, RuleState.DELETED})
#: What a new share may be called. Narrower than the store allows, on purpose: guests name
#: a share in mount options (``aname=NAME``, comma-separated) and in fstab lines, and
#: operators in shell commands, so a name needs no quoting anywhere.
SHARE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_OPAQUE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,254}")
_T = TypeVar("_T")


def instance_uuid(text: str) -> str:
    """An instance id in its one spelling: a UUID in canonical lowercase form (so ``ABC…``
    and ``abc…`` name the same instance), or an opaque id of letters, digits and ``._:-``.

    Raises:
        ValueError: anything else (empty, spaces, ``/``, control characters, too long).
    """
    if not isinstance(text, str):
        raise ValueError(f"instance uuid must be a string, not {type(text).__name__}")
    try:
        return str(uuid_mod.UUID(text))
    except ValueError:
        pass
    if not _OPAQUE_ID.fullmatch(text):
        raise ValueError(
            f"instance uuid {text!r} is neither a UUID nor an id of letters, digits, '.', '_',"
            " ':' and '-'"
        )
    return text


def issue_token(store: Store, name: str, tenant: str | None = None) -> tuple[TokenRecord, str]:
    """Create an API token: a random secret (``secrets.token_urlsafe(32)``: 256 bits) of
    which only the hash is stored. Returns the record and the secret, which exists nowhere
    else: show it once.

    Raises:
        ValueError: a malformed name or tenant.
        Conflict: a token with this name exists.
    """
    secret = secrets.token_urlsafe(32)
    stored = store.add_token(TokenRecord(name=name, hash=hash_token(secret), tenant=tenant))
    return stored, secret


def _human(size: int) -> str:
    if size >= GIB:
        return f"{size / GIB:.2f} GiB"
    return f"{size / (1 << 20):.1f} MiB"


class ControlService:
    """The control plane's service rules over a :class:`~vshare.store.Store` and the
    backend volumes shares are made in. See the module note for the rules.

    Args:
        store: where the state lives (not closed by :meth:`close`: the caller owns it).
        volumes: volume name → backend URI (default: one volume ``default`` at
            ``posix:/var/lib/vshare/volume``); the first is where shares go by default.
        max_share_gib: the largest size a share may be created with or extended to, by
            anyone (:class:`OverLimit` beyond; shares already larger keep their size).

    Raises:
        ValueError: a malformed volume table.
    """

    def __init__(
        self,
        store: Store,
        volumes: Mapping[str, str] | None = None,
        *,
        max_share_gib: int = DEFAULT_MAX_SHARE_GIB,
    ) -> None:
        if isinstance(max_share_gib, bool) or not isinstance(max_share_gib, int):
            raise ValueError("max_share_gib must be a whole number of GiB")
        if max_share_gib < 1:
            raise ValueError(f"the largest share size must be 1 GiB or more, not {max_share_gib}")
        self.max_share_gib = max_share_gib
        self.store = store
        self.volumes = volumes if isinstance(volumes, Volumes) else Volumes(volumes)
        #: Share id → entries removed so far, for each forced delete running here.
        self._deletes_running: dict[str, int] = {}
        self._deletes_lock = threading.Lock()

    def close(self) -> None:
        """Close the volumes' backends. Idempotent."""
        self.volumes.close()

    # --- callers and tokens ---------------------------------------------------------------

    def authenticate(self, secret: str) -> Caller | None:
        """The caller a bearer token's secret stands for, or None (unknown or empty)."""
        if not secret:
            return None
        token = self.store.find_token(hash_token(secret))
        if token is None:
            return None
        return Caller(tenant=token.tenant, admin=token.is_admin, name=token.name)

    def create_token(
        self, caller: Caller, name: str, tenant: str | None = None
    ) -> tuple[TokenRecord, str]:
        """A new token (admin only); ``tenant`` None makes an admin token. Returns the
        record and the secret (shown once; only its hash is stored).

        Raises:
            Forbidden, ValueError, Conflict.
        """
        self._admin_only(caller, "create tokens")
        try:
            return issue_token(self.store, name, tenant)
        except Conflict:
            raise Conflict(f"token {name!r} exists") from None

    def list_tokens(self, caller: Caller) -> list[TokenRecord]:
        """Every token (admin only), ordered by name; secrets are never stored."""
        self._admin_only(caller, "list tokens")
        return self.store.list_tokens()

    def revoke_token(self, caller: Caller, name: str) -> None:
        """Revoke a token (admin only). The token the caller is using cannot be revoked
        through itself (409), so an admin cannot lock everyone out by mistake.

        Raises:
            Forbidden, NotFound, Conflict.
        """
        self._admin_only(caller, "revoke tokens")
        if name == caller.name:
            raise Conflict(f"token {name!r} is the one this request uses; revoke it with another")
        self.store.remove_token(name)

    # --- shares ---------------------------------------------------------------------------

    def create_share(
        self,
        caller: Caller,
        name: str,
        size_gib: int,
        *,
        tenant: str | None = None,
        volume: str | None = None,
        cache: ShareCache = DEFAULT_SHARE_CACHE,
    ) -> ShareRecord:
        """Create a share: its record (status creating), then its directory
        ``shares/<id>`` in the volume, then status available.

        A tenant creates shares for itself (``tenant`` None or its own); the admin names
        the tenant. ``volume`` None means the default volume. ``cache`` is the share's
        cache mode (see :meth:`set_share_cache`).

        Raises:
            ValueError: a malformed name, size or cache mode, a missing tenant, an unknown
                volume.
            OverLimit: a size over :attr:`max_share_gib`.
            OverQuota: the tenant's quota (shares or gigabytes) would be exceeded.
            Forbidden: a tenant creating for another tenant.
            Conflict: the name is taken, or the directory already exists (nothing is
                reused: the record is removed again).
            VolumeUnavailable: the directory cannot be made (the share stays, in status
                error, so that its failure can be seen; delete it).
        """
        owner = self._tenant_for(caller, tenant, "create shares")
        if not isinstance(name, str) or not SHARE_NAME.fullmatch(name):
            raise ValueError(
                f"share name {name!r}: 1 to 255 letters, digits, '.', '_' or '-', starting"
                " with a letter or digit"
            )
        volume = self.volumes.default if volume is None else volume
        if volume not in self.volumes:
            known = ", ".join(self.volumes)
            raise ValueError(f"volume {volume!r} is not one of: {known}")
        share_id = str(uuid_mod.uuid4())
        record = ShareRecord(
            id=share_id, name=name, tenant=owner, backend=self.volumes[volume],
            path=f"{SHARES_DIR}/{share_id}", size_gib=size_gib, status=ShareStatus.CREATING,
            cache=cache,
        )  # fmt: skip
        self._check_limit(name, size_gib)  # after the record's own checks of the size
        try:
            share = self.store.create_share(record)
        except Conflict:
            # The store's message names the other share's id: not for another tenant's eyes.
            raise Conflict(f"share name {name!r} is taken") from None
        try:
            self._make_directory(share, volume)
        except FileExistsError:
            self.store.delete_share(share.id)
            raise Conflict(
                f"volume {volume}: {share.path} already exists; refusing to reuse it"
            ) from None
        except (OSError, VolumeUnavailable) as exc:
            self._set_status_quietly(share, ShareStatus.ERROR)
            if isinstance(exc, VolumeUnavailable):
                raise
            raise VolumeUnavailable(
                f"volume {volume}: cannot create {share.path}: {exc.strerror or exc}"
            ) from None
        try:
            share = self.store.update_share(share.id, status=ShareStatus.AVAILABLE)
        except BaseException:
            self._remove_directory_quietly(share)
            self._set_status_quietly(share, ShareStatus.ERROR)
            raise
        log.info("share %s (%s) created for tenant %s by %s", share.name, share.id,
                 share.tenant, caller)  # fmt: skip
        return share

    def get_share(self, caller: Caller, name_or_id: str) -> ShareRecord:
        """The share named ``name_or_id`` (its name or id), if the caller may see it.

        Raises:
            NotFound: no such share, or one of another tenant (the same answer).
        """
        share = self.store.find_share(name_or_id) if isinstance(name_or_id, str) else None
        if share is None or not caller.owns(share.tenant):
            raise NotFound(f"no share {name_or_id!r}")
        return share

    def list_shares(self, caller: Caller, tenant: str | None = None) -> list[ShareRecord]:
        """The shares the caller may see (of ``tenant`` if given), ordered by name.

        Raises:
            Forbidden: a tenant asking for another tenant's shares.
        """
        if not caller.admin:
            if tenant is not None and tenant != caller.tenant:
                raise Forbidden(f"a token of tenant {caller.tenant} lists only its own shares")
            tenant = caller.tenant
        return self.store.list_shares(tenant)

    def volume_of(self, share: ShareRecord) -> str | None:
        """The name of the volume the share lives on (None: not one of ours)."""
        return self.volumes.name_of(share.backend)

    def delete_share(self, caller: Caller, name_or_id: str, *, force: bool = False) -> None:
        """Delete a share and its rules, with its directory.

        Without ``force`` the directory must be empty; the check is the ``rmdir`` itself,
        so a file written at the last moment is never lost. With ``force`` the share goes
        to status deleting and its directory is removed with everything in it (and nothing
        outside it), from any status: a share left creating, extending, shrinking, deleting
        or error (a crash, an interrupted delete, a failed create) is driven to its end.
        The removal is iterative and resumable (``backend.tree.remove_tree``): a delete
        stopped anywhere, the API killed included, is finished by the next forced delete.

        Raises:
            NotFound: no such share for this caller.
            Conflict: not empty (without force); busy (creating, extending, ...) without
                force; or a forced delete of this share is running in this process (the
                message says how far it got).
            VolumeUnavailable: the volume cannot be opened (the share stays as it is, and
                the message names the volume it waits for), or the directory could not
                be removed (status: error; delete it again with force).
        """
        share = self.get_share(caller, name_or_id)
        running = self._deletes_running.get(share.id)
        if running is not None:
            raise Conflict(
                f"share {share.name} is being deleted by another request ({running} entries"
                " removed so far); wait for it"
            )
        if share.status in _BUSY and not force:
            raise Conflict(f"share {share.name} is {share.status.value}: {self.waiting_for(share)}")
        try:
            backend = self.volumes.backend(share.backend)
        except VolumeUnavailable as exc:
            raise VolumeUnavailable(
                f"share {share.name} ({share.status.value}) waits for its volume: {exc}; delete"
                " it again when the volume is back"
            ) from None
        parent_path, _, leaf = share.path.rpartition("/")
        with self._deletes_lock:
            if share.id in self._deletes_running:
                raise Conflict(f"share {share.name} is being deleted by another request")
            self._deletes_running[share.id] = 0
        try:
            if force and share.status is not ShareStatus.DELETING:
                share = self._update(share, status=ShareStatus.DELETING)

            def progress(removed: int) -> None:
                self._deletes_running[share.id] = removed

            self._remove_share_directory(share, backend, parent_path, leaf, force, progress)
            self.store.delete_share(share.id)
        finally:
            with self._deletes_lock:
                removed = self._deletes_running.pop(share.id, 0)
        log.info("share %s (%s) deleted by %s%s", share.name, share.id, caller,
                 f" with force ({removed} entries removed)" if force else "")  # fmt: skip

    def _remove_share_directory(
        self,
        share: ShareRecord,
        backend: Backend,
        parent_path: str,
        leaf: str,
        force: bool,
        progress: Callable[[int], None],
    ) -> None:
        try:
            parent = backend.open_root(parent_path)
            try:
                if force:
                    remove_tree(backend, parent, leaf, progress=progress)
                else:
                    backend.unlink(parent, leaf, rmdir=True)
            finally:
                parent.close()
        except FileNotFoundError:
            pass  # already gone (a failed create, an operator): nothing to remove
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and not force:
                raise Conflict(
                    f"share {share.name} is not empty; delete it with force to remove its files too"
                ) from None
            self._set_status_quietly(share, ShareStatus.ERROR)
            raise VolumeUnavailable(
                f"share {share.name}: cannot remove {share.path}: {exc.strerror or exc}; it is"
                " in status error: delete it again with force"
            ) from None

    def waiting_for(self, share: ShareRecord) -> str | None:
        """What a share in a transitional or error status waits for, in one line (None
        when it is available): what the API shows next to the status."""
        running = self._deletes_running.get(share.id)
        if running is not None:
            return f"a delete is removing its files ({running} entries removed so far)"
        if share.status is ShareStatus.DELETING:
            return (
                "a delete with force to finish removing its files (none is running here:"
                " delete it again with force)"
            )
        if share.status is ShareStatus.ERROR:
            return "a delete with force: its directory could not be made or removed"
        if share.status in _BUSY:
            return (
                f"the request that made it {share.status.value} to finish; if none is running"
                " (the API restarted), delete it with force"
            )
        return None

    def extend_share(self, caller: Caller, name_or_id: str, size_gib: int) -> ShareRecord:
        """Grow the share to ``size_gib`` (status extending meanwhile). The size is a quota
        the gateways enforce; nothing on the volume changes.

        Raises:
            NotFound, ValueError (not larger than now), OverLimit (over
            :attr:`max_share_gib`), OverQuota (over the tenant's gigabytes), Conflict
            (busy, or raced).
        """
        share = self._resizable(caller, name_or_id)
        self._check_size(share, size_gib)
        self._check_limit(share.name, size_gib)
        if size_gib <= share.size_gib:
            raise ValueError(
                f"share {share.name} has {share.size_gib} GiB; extend needs a larger size,"
                f" not {size_gib} (shrink makes it smaller)"
            )
        # Early, so a refusal leaves no trace; the store checks again in the write itself.
        grown = dataclasses.replace(share, size_gib=size_gib)
        check_share(self.store.quota_usage(share.tenant), share, grown)
        return self._resize(share, ShareStatus.EXTENDING, size_gib, check=None)

    def shrink_share(self, caller: Caller, name_or_id: str, size_gib: int) -> ShareRecord:
        """Shrink the share to ``size_gib`` (status shrinking meanwhile), unless it holds
        more than that: usage is the sum of the apparent sizes of its regular files
        (``backend.tree.apparent_size``, what the gateways' quota counts).

        Raises:
            NotFound, ValueError (not smaller than now), Conflict (usage above the new size,
            busy, or raced), VolumeUnavailable (its directory cannot be read).
        """
        share = self._resizable(caller, name_or_id)
        self._check_size(share, size_gib)
        if size_gib >= share.size_gib:
            raise ValueError(
                f"share {share.name} has {share.size_gib} GiB; shrink needs a smaller size,"
                f" not {size_gib} (extend makes it larger)"
            )

        def fits(current: ShareRecord) -> None:
            used = self.usage(current)
            if used > size_gib * GIB:
                raise Conflict(
                    f"share {current.name} holds {_human(used)}; it cannot shrink to {size_gib} GiB"
                )

        return self._resize(share, ShareStatus.SHRINKING, size_gib, check=fits)

    def set_share_cache(self, caller: Caller, name_or_id: str, cache: ShareCache) -> ShareRecord:
        """Set the share's cache mode: ``none`` (every request asks the storage: strict
        coherence across hosts), ``meta`` (attributes and name lookups cached), ``all``
        (file data too). Gateways apply it to new attachments; mounts made before keep
        the mode they attached with. Setting the mode it has changes nothing.

        Raises:
            NotFound: no such share for this caller.
            ValueError: not none, meta or all.
            Conflict: the share is in a transitional status, or changed meanwhile.
        """
        share = self.get_share(caller, name_or_id)
        dataclasses.replace(share, cache=cache)  # validate as the record would
        if share.cache == cache:
            return share
        if share.status in _BUSY:
            raise Conflict(f"share {share.name} is {share.status.value}; wait until that is done")
        updated = self._update(share, cache=cache)
        log.info("share %s: cache %s -> %s (by %s)", share.name, share.cache, cache, caller)
        return updated

    def usage(self, share: ShareRecord) -> int:
        """The bytes the share's regular files hold (blocking; walks the whole share).

        Raises:
            VolumeUnavailable: the directory cannot be opened.
        """
        backend = self.volumes.backend(share.backend)
        try:
            root = backend.open_root(share.path)
        except OSError as exc:
            raise VolumeUnavailable(
                f"share {share.name}: cannot open {share.path}: {exc.strerror or exc}"
            ) from None
        try:
            return apparent_size(backend, root)
        finally:
            root.close()

    # --- access rules ---------------------------------------------------------------------

    def allow(
        self,
        caller: Caller,
        name_or_id: str,
        access_type: str,
        access_to: str,
        level: Level | str = Level.RW,
    ) -> RuleRecord:
        """Add an access rule, in state ``queued_to_apply``.

        ``access_type``: ``instance`` (an instance uuid, see :func:`instance_uuid`), ``ip``
        (an address or CIDR), ``cert`` (a SHA-256 fingerprint or a certificate CN), ``user``
        (a numeric uid, for host-local tools). ``level``: ``ro`` or ``rw``.

        The target need not be the caller's own (as in Manila, a tenant may grant its share
        to an address or anyone): a rule only ever gives away access to the share of the
        tenant who made it. An ``instance`` rule follows tenancy: it grants only while the
        instance belongs to the share's tenant, so a VM re-registered into another tenant
        loses it at once (and a tenant naming another tenant's VM grants nothing, without
        learning that the VM exists). Only the admin grants across tenants, on purpose: an
        admin's instance rule for an instance registered in another tenant is recorded as
        ``cross_tenant`` and grants whatever tenant the instance is in.

        Raises:
            NotFound: no such share for this caller.
            ValueError: a malformed type, value or level.
            Conflict: the share already has a live rule for the same type and value, or
                it is being deleted.
        """
        share = self.get_share(caller, name_or_id)
        if share.status is ShareStatus.DELETING:
            raise Conflict(f"share {share.name} is being deleted")
        if access_type not in ACCESS_TYPES:
            raise ValueError(
                f"access type {access_type!r} is not one of {', '.join(sorted(ACCESS_TYPES))}"
            )
        if access_type == "instance":
            access_to = instance_uuid(access_to)
        try:
            level = Level(level)
        except ValueError:
            raise ValueError(f"access level {level!r} is not ro or rw") from None
        cross_tenant = False
        if access_type == "instance" and caller.admin:
            try:
                target = self.store.get_instance(access_to)
            except NotFound:
                pass  # not registered (yet): the rule follows the share's tenant
            else:
                cross_tenant = target.instance.tenant != share.tenant
        rule = RuleRecord(
            share_id=share.id, access_type=access_type, access_to=access_to, level=level,
            state=RuleState.QUEUED_TO_APPLY, cross_tenant=cross_tenant,
        )  # fmt: skip
        try:
            stored = self.store.add_rule(rule)
        except Conflict:
            existing = self._live_rule(share, rule)
            held_by = f" (rule {existing.id}, {existing.state.value})" if existing else ""
            raise Conflict(
                f"share {share.name} already has an {rule.access_type} rule for"
                f" {rule.access_to}{held_by}"
            ) from None
        except NotFound:
            raise NotFound(f"no share {name_or_id!r}") from None  # deleted meanwhile
        log.info("share %s: rule %s allows %s %s %s%s (by %s)", share.name, stored.id,
                 stored.access_type, stored.access_to, stored.level.value,
                 " across tenants" if stored.cross_tenant else "", caller)  # fmt: skip
        return stored

    def deny(self, caller: Caller, name_or_id: str, rule_id: str) -> RuleRecord:
        """Withdraw a rule. Returns it as it now is: ``deleted`` if it had never been
        applied (its record is gone), else ``queued_to_deny`` (gateways finish the job).
        Denying a rule already on its way out changes nothing and succeeds.

        Raises:
            NotFound: no such share for this caller, or no such rule on that share.
        """
        share = self.get_share(caller, name_or_id)
        rule = self._rule_of(share, rule_id)
        for _ in range(5):  # a gateway may move the rule on meanwhile: retry on a new read
            if rule.state in _LEAVING:
                return rule
            try:
                if rule.state is RuleState.QUEUED_TO_APPLY:
                    self.store.delete_rule(rule.id)
                    gone = self._deleted(rule)
                    self._log_deny(share, gone, caller)
                    return gone
                denied = self.store.update_rule(
                    rule.id, expect_revision=rule.revision, state=RuleState.QUEUED_TO_DENY
                )
                self._log_deny(share, denied, caller)
                return denied
            except NotFound:
                return self._deleted(rule)  # a gateway (or another deny) finished it
            except Conflict:
                rule = self._rule_of(share, rule_id)
        raise Conflict(f"access rule {rule_id} keeps changing; try again")

    def update_level(
        self, caller: Caller, name_or_id: str, rule_id: str, level: Level | str
    ) -> RuleRecord:
        """Change a rule's access level (Manila's ``access-update``). Gateways apply it to
        live sessions: after rw→ro the next write fails with EROFS.

        Raises:
            NotFound: no such share for this caller, or no such rule on that share.
            Conflict: the rule is being withdrawn.
            ValueError: ``level`` is not ro or rw.
        """
        try:
            wanted = Level(level)
        except ValueError:
            raise ValueError(f"access level {level!r} must be ro or rw") from None
        share = self.get_share(caller, name_or_id)
        rule = self._rule_of(share, rule_id)
        for _ in range(5):  # a gateway may move the rule's state meanwhile
            if rule.state in _LEAVING:
                raise Conflict(f"access rule {rule_id} is being withdrawn")
            if rule.level is wanted:
                return rule
            try:
                updated = self.store.update_rule(rule.id, expect_revision=rule.revision,
                                                 level=wanted)  # fmt: skip
            except Conflict:
                rule = self._rule_of(share, rule_id)
                continue
            log.info("share %s: rule %s is now %s (by %s)", share.name, rule.id, wanted.value,
                     caller)  # fmt: skip
            return updated
        raise Conflict(f"access rule {rule_id} keeps changing; try again")

    def list_rules(
        self, caller: Caller, name_or_id: str, *, include_deleted: bool = False
    ) -> list[RuleRecord]:
        """The share's rules, oldest first; tombstones (state ``deleted``) only if asked.

        Raises:
            NotFound: no such share for this caller.
        """
        share = self.get_share(caller, name_or_id)
        try:
            rules = self.store.list_rules(share.id)
        except NotFound:
            raise NotFound(f"no share {name_or_id!r}") from None
        return [r for r in rules if include_deleted or r.state is not RuleState.DELETED]

    # --- instances ------------------------------------------------------------------------

    def register_instance(
        self,
        caller: Caller,
        uuid: str,
        *,
        tenant: str,
        name: str = "",
        cids: Iterable[int] = (),
        sockets: Iterable[str] = (),
        ips: Iterable[str] = (),
        certs: Iterable[str] = (),
        replace: bool = False,
    ) -> InstanceRecord:
        """Register an instance (admin only): its tenant and the identities it connects
        with (at least one of a vsock CID, a hybrid-vsock socket, an IP, a certificate
        fingerprint). Without ``replace`` an existing uuid is a Conflict; with it, its
        identities are replaced.

        Raises:
            Forbidden: not the admin.
            ValueError: a malformed uuid, tenant or identity, or none at all.
            Conflict: the uuid exists (without replace), or an identity is another
                instance's.
        """
        self._admin_only(caller, "register instances")
        uuid = instance_uuid(uuid)
        if not isinstance(tenant, str) or not tenant.strip():
            raise ValueError(f"instance {uuid}: give the tenant it belongs to")
        record = InstanceRecord(
            instance=Instance(
                uuid=uuid, tenant=tenant, name=name, cids=frozenset(cids),
                sockets=frozenset(sockets), ips=frozenset(ips), certs=frozenset(certs),
            )
        )  # fmt: skip
        if not replace:
            # Not atomic with the put below: two registrations of one new uuid racing may
            # both pass, and the later one wins. Instances are registered by the operator,
            # one at a time; the identities themselves stay unique (the store checks them).
            try:
                self.store.get_instance(uuid)
            except NotFound:
                pass
            else:
                raise Conflict(f"instance {uuid} is registered; remove it first, or replace it")
        stored = self.store.put_instance(record)
        log.info("instance %s registered (tenant %s) by %s", stored.uuid, stored.tenant, caller)
        return stored

    def get_instance(self, caller: Caller, uuid: str) -> InstanceRecord:
        """The instance, if the caller may see it (admin, or its tenant).

        Raises:
            NotFound: no such instance, or another tenant's (the same answer).
        """
        try:
            record = self.store.get_instance(instance_uuid(uuid))
        except (NotFound, ValueError):
            record = None
        if record is None or not caller.owns(record.tenant):
            raise NotFound(f"no instance {uuid!r}")
        return record

    def remove_instance(self, caller: Caller, uuid: str) -> None:
        """Forget an instance (admin only); rules that name it stay.

        Raises:
            Forbidden, NotFound.
        """
        self._admin_only(caller, "remove instances")
        record = self.get_instance(caller, uuid)
        try:
            self.store.remove_instance(record.uuid)
        except NotFound:
            raise NotFound(f"no instance {uuid!r}") from None
        log.info("instance %s removed by %s", record.uuid, caller)

    def list_instances(self, caller: Caller, tenant: str | None = None) -> list[InstanceRecord]:
        """The instances the caller may see (of ``tenant`` if given), ordered by uuid.

        Raises:
            Forbidden: a tenant asking for another tenant's instances.
        """
        if not caller.admin:
            if tenant is not None and tenant != caller.tenant:
                raise Forbidden(f"a token of tenant {caller.tenant} lists only its own instances")
            tenant = caller.tenant
        return self.store.list_instances(tenant)

    # --- gateways -------------------------------------------------------------------------

    def list_gateways(self, caller: Caller) -> list[GatewayStatus]:
        """Every registered gateway with its health (admin only: infrastructure)."""
        self._admin_only(caller, "list gateways")
        return self.store.list_gateways()

    # --- quotas ---------------------------------------------------------------------------

    def get_quota(self, caller: Caller, tenant: str | None = None) -> QuotaUsage:
        """The tenant's limits and usage: a tenant its own (``tenant`` None or its own),
        the admin any tenant's.

        Raises:
            Forbidden: a tenant asking for another tenant's.
            ValueError: the admin naming no tenant.
        """
        return self.store.quota_usage(self._tenant_for(caller, tenant, "see quotas"))

    def default_quota(self, caller: Caller) -> QuotaUsage:
        """The limits of a tenant without an override (anyone may see them), with
        ``tenant`` empty and no usage."""
        del caller  # every token may know the defaults, as in Manila
        stored = {q.tenant: q for q in self.store.list_quotas()}
        return tally("", stored.get(""), None, 0, 0)

    def list_quotas(self, caller: Caller) -> tuple[QuotaUsage, list[QuotaUsage]]:
        """The defaults, and each tenant that has an override or a share (admin only),
        ordered by tenant. For people: read in a few transactions, not one."""
        self._admin_only(caller, "list quotas")
        stored = {q.tenant: q for q in self.store.list_quotas()}
        shares = self.store.list_shares()
        tenants = sorted({s.tenant for s in shares} | (stored.keys() - {""}))
        defaults = stored.get("")
        return tally("", defaults, None, 0, 0), [
            tally(t, defaults, stored.get(t), *usage_of(shares, t)) for t in tenants
        ]

    def set_quota(
        self, caller: Caller, tenant: str | None, changes: Mapping[str, int | None]
    ) -> QuotaUsage:
        """Set limits (admin only) of ``tenant``, or of the defaults (``tenant`` None):
        ``changes`` maps ``shares``/``gigabytes`` to a limit (-1: none) or None (unset:
        the defaults' limit applies again); limits not named are kept. Returns what
        :meth:`get_quota` (or :meth:`default_quota`) then says.

        Raises:
            Forbidden: not the admin.
            ValueError: nothing to set, an unknown name, a limit below -1.
        """
        self._admin_only(caller, "set quotas")
        unknown = sorted(set(changes) - {"shares", "gigabytes"})
        if unknown or not changes:
            raise ValueError("give the limits to set: shares, gigabytes (or both)")
        key = tenant or ""
        stored = {q.tenant: q for q in self.store.list_quotas()}
        old = stored.get(key, QuotaRecord(tenant=key))
        quota = QuotaRecord(
            tenant=key,
            shares=changes.get("shares", old.shares),
            gigabytes=changes.get("gigabytes", old.gigabytes),
        )
        self.store.put_quota(quota)
        log.info("quota of %s set to shares=%s gigabytes=%s by %s",
                 f"tenant {tenant}" if tenant else "every tenant (defaults)",
                 quota.shares, quota.gigabytes, caller)  # fmt: skip
        return self.get_quota(caller, tenant) if tenant else self.default_quota(caller)

    # --- helpers --------------------------------------------------------------------------

    @staticmethod
    def _admin_only(caller: Caller, what: str) -> None:
        if not caller.admin:
            raise Forbidden(f"only the admin may {what}")

    @staticmethod
    def _tenant_for(caller: Caller, tenant: str | None, what: str) -> str:
        if caller.admin:
            if tenant is None:
                raise ValueError(f"an admin must say which tenant to {what} for (tenant)")
            return tenant
        assert caller.tenant is not None  # Caller's invariant
        if tenant is not None and tenant != caller.tenant:
            raise Forbidden(f"a token of tenant {caller.tenant} cannot {what} for {tenant}")
        return caller.tenant

    def _check_limit(self, name: str, size_gib: int) -> None:
        if isinstance(size_gib, int) and size_gib > self.max_share_gib:
            raise OverLimit(
                f"share {name}: {size_gib} GiB is over the largest share size, "
                f"{self.max_share_gib} GiB (the operator's limit: vshare api run"
                " --max-share-size)"
            )

    @staticmethod
    def _check_size(share: ShareRecord, size_gib: int) -> None:
        """Validate a new size as the record would, before any status changes."""
        dataclasses.replace(share, size_gib=size_gib)

    def _make_directory(self, share: ShareRecord, volume: str) -> None:
        backend = self.volumes.backend(share.backend)
        parent_path, _, leaf = share.path.rpartition("/")
        parent = self._open_or_make(backend, parent_path)
        try:
            backend.mkdir(parent, leaf, DIR_MODE).close()
        finally:
            parent.close()

    @staticmethod
    def _open_or_make(backend: Backend, path: str) -> Node:
        """The directory ``path`` (one component: ``shares``) of the volume, made if missing."""
        try:
            return backend.open_root(path)
        except FileNotFoundError:
            pass
        root = backend.open_root("")
        try:
            backend.mkdir(root, path, DIR_MODE).close()
        except FileExistsError:
            pass  # another request made it meanwhile
        finally:
            root.close()
        return backend.open_root(path)

    def _remove_directory_quietly(self, share: ShareRecord) -> None:
        try:
            backend = self.volumes.backend(share.backend)
            parent_path, _, leaf = share.path.rpartition("/")
            parent = backend.open_root(parent_path)
            try:
                backend.unlink(parent, leaf, rmdir=True)
            finally:
                parent.close()
        except (OSError, VolumeUnavailable) as exc:
            log.warning("share %s: could not remove %s again: %s", share.name, share.path, exc)

    def _set_status_quietly(self, share: ShareRecord, status: ShareStatus) -> None:
        """Best effort, after a failure: the original error is what the caller needs."""
        try:
            self.store.update_share(share.id, status=status)
        except (StoreError, ValueError) as exc:
            log.warning("share %s: could not set status %s: %s", share.name, status.value, exc)

    def _update(
        self,
        share: ShareRecord,
        *,
        status: ShareStatus | None = None,
        size_gib: int | None = None,
        cache: ShareCache | None = None,
    ) -> ShareRecord:
        """``update_share`` guarded by the revision we read (a lost race is a Conflict)."""
        try:
            return self.store.update_share(
                share.id, expect_revision=share.revision, status=status, size_gib=size_gib,
                cache=cache,
            )  # fmt: skip
        except NotFound:
            raise NotFound(f"no share {share.name!r}") from None
        except Conflict:
            raise Conflict(
                f"share {share.name} changed while this request ran; try again"
            ) from None

    def _resizable(self, caller: Caller, name_or_id: str) -> ShareRecord:
        share = self.get_share(caller, name_or_id)
        if share.status is not ShareStatus.AVAILABLE:
            raise Conflict(f"share {share.name} is {share.status.value}, not available")
        return share

    def _resize(
        self,
        share: ShareRecord,
        busy: ShareStatus,
        size_gib: int,
        check: Callable[[ShareRecord], None] | None,
    ) -> ShareRecord:
        working = self._update(share, status=busy)
        try:
            if check is not None:
                check(working)
            resized = self._update(working, size_gib=size_gib, status=ShareStatus.AVAILABLE)
        except BaseException:
            self._set_status_quietly(working, ShareStatus.AVAILABLE)
            raise
        log.info("share %s: %d GiB -> %d GiB", share.name, share.size_gib, size_gib)
        return resized

    def _rule_of(self, share: ShareRecord, rule_id: str) -> RuleRecord:
        try:
            rule = self.store.get_rule(rule_id)
        except (NotFound, ValueError):
            rule = None
        if rule is None or rule.share_id != share.id:
            raise NotFound(f"share {share.name} has no access rule {rule_id!r}")
        return rule

    def _live_rule(self, share: ShareRecord, rule: RuleRecord) -> RuleRecord | None:
        return _first(
            r
            for r in self.store.list_rules(share.id)
            if r.state is not RuleState.DELETED
            and (r.access_type, r.access_to) == (rule.access_type, rule.access_to)
        )

    @staticmethod
    def _deleted(rule: RuleRecord) -> RuleRecord:
        return RuleRecord(
            id=rule.id, share_id=rule.share_id, access_type=rule.access_type,
            access_to=rule.access_to, level=rule.level, state=RuleState.DELETED,
            created_at=rule.created_at, revision=rule.revision,
        )  # fmt: skip

    @staticmethod
    def _log_deny(share: ShareRecord, rule: RuleRecord, caller: Caller) -> None:
        log.info("share %s: rule %s denied, now %s (by %s)", share.name, rule.id,
                 rule.state.value, caller)  # fmt: skip


def _first(items: Iterable[_T]) -> _T | None:
    return next(iter(items), None)
