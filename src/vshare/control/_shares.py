"""Shares: create (record, then directory, then available), resize, cache mode, delete
(with force: resumable removal of the directory), and their statuses (see
``_service.py``'s module note)."""

from __future__ import annotations

import dataclasses
import errno
import logging
import threading
import uuid as uuid_mod
from collections.abc import Callable
from typing import Final

from vshare.backend import Backend
from vshare.backend.base import Node
from vshare.backend.tree import apparent_size, remove_tree
from vshare.control._base import ServiceBase
from vshare.control._caller import Caller
from vshare.control._errors import OverLimit, VolumeUnavailable
from vshare.store import Conflict, NotFound, ShareRecord, ShareStatus, StoreError, check_share
from vshare.terms import DEFAULT_CACHE_MODE, CacheMode, share_name_problem

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


def _human(size: int) -> str:
    if size >= GIB:
        return f"{size / GIB:.2f} GiB"
    return f"{size / (1 << 20):.1f} MiB"


class ShareOps(ServiceBase):
    """The share methods of :class:`~vshare.control.ControlService`."""

    max_share_gib: int
    _deletes_running: dict[str, int]
    _deletes_lock: threading.Lock

    def create_share(
        self,
        caller: Caller,
        name: str,
        size_gib: int,
        *,
        tenant: str | None = None,
        volume: str | None = None,
        cache: CacheMode = DEFAULT_CACHE_MODE,
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
        problem = share_name_problem(name)
        if problem is not None:
            raise ValueError(problem)
        volume = self.volumes.default if volume is None else volume
        if volume not in self.volumes:
            known = ", ".join(self.volumes)
            raise ValueError(f"volume {volume!r} is not one of: {known}")
        share_id = str(uuid_mod.uuid4())
        record = ShareRecord(
            id=share_id,
            name=name,
            tenant=owner,
            backend=self.volumes[volume],
            path=f"{SHARES_DIR}/{share_id}",
            size_gib=size_gib,
            status=ShareStatus.CREATING,
            cache=cache,
        )
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
        log.info(
            "share %s (%s) created for tenant %s by %s", share.name, share.id, share.tenant, caller
        )
        return share

    def list_shares(self, caller: Caller, tenant: str | None = None) -> list[ShareRecord]:
        """The shares the caller may see (of ``tenant`` if given), ordered by name.

        Raises:
            Forbidden: a tenant asking for another tenant's shares.
        """
        return self.store.list_shares(self._listed_tenant(caller, tenant, "shares"))

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
        log.info(
            "share %s (%s) deleted by %s%s",
            share.name,
            share.id,
            caller,
            f" with force ({removed} entries removed)" if force else "",
        )

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

    def set_share_cache(self, caller: Caller, name_or_id: str, cache: CacheMode) -> ShareRecord:
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
        cache: CacheMode | None = None,
    ) -> ShareRecord:
        """``update_share`` guarded by the revision we read (a lost race is a Conflict)."""
        try:
            return self.store.update_share(
                share.id,
                expect_revision=share.revision,
                status=status,
                size_gib=size_gib,
                cache=cache,
            )
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
